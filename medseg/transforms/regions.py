"""Region labels (nnU-Net ``regions_class_order``): label map <-> overlapping binary region channels.

A region is a set of label values (BraTS: whole tumour = {1, 2, 3}, tumour core = {2, 3},
enhancing = {3}). The network predicts one sigmoid channel per region; a label map is painted
back region by region in order, each region above ``threshold`` overwriting the earlier ones with
its ``regions_class_order`` value (nnU-Net's convention).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

__all__ = ["labels_to_regions", "regions_to_labels", "LabelToRegionsd"]


def labels_to_regions(label: torch.Tensor | np.ndarray, regions: Sequence[Sequence[int]]) -> torch.Tensor:
    """``(1, *spatial)`` label map -> ``(K, *spatial)`` float32 region masks (``label in region_k``)."""
    lab = torch.as_tensor(label)
    if lab.ndim < 2 or lab.shape[0] != 1:
        raise ValueError(f"label must be (1, *spatial), got shape {tuple(lab.shape)}")
    lab = lab[0].round().long()
    out = torch.stack([torch.isin(lab, torch.as_tensor(list(r), device=lab.device)) for r in regions]).float()
    if isinstance(label, MetaTensor):
        return MetaTensor(out, meta=dict(label.meta), applied_operations=list(label.applied_operations))
    return out


def regions_to_labels(probabilities: torch.Tensor | np.ndarray, regions_class_order: Sequence[int],
                      threshold: float = 0.5) -> np.ndarray:
    """``(K, *spatial)`` region probabilities -> ``(*spatial)`` uint8 label map, painted in region order."""
    p = np.asarray(probabilities.detach().cpu() if isinstance(probabilities, torch.Tensor) else probabilities)
    if p.shape[0] != len(regions_class_order):
        raise ValueError(f"{p.shape[0]} region channel(s) but regions_class_order has {len(regions_class_order)} "
                         "entries")
    out = np.zeros(p.shape[1:], dtype=np.uint8)
    for k, value in enumerate(regions_class_order):
        out[p[k] > threshold] = value
    return out


class LabelToRegionsd(MapTransform):
    """Dictionary transform: replace ``(1, *spatial)`` label maps with their ``(K, *spatial)`` region masks."""

    def __init__(self, keys: KeysCollection, regions: Sequence[Sequence[int]], allow_missing_keys: bool = False,
                 ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.regions = [tuple(int(v) for v in r) for r in regions]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = labels_to_regions(d[key], self.regions)
        return d
