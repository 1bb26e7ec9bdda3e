"""Spacing-aware signed distance maps of label maps, for the boundary loss.

Pure functions (:func:`signed_distance_map`, :func:`mask_signed_distance`), the array transform
:class:`SignedDistanceMap` and the dictionary wrapper :class:`SignedDistanceMapd`.

Convention (one map per class ``c``, in millimetres when a spacing is known):

=====================  ==========================================================================
voxel inside class c   ``-`` Euclidean distance from its centre to the nearest voxel centre
                       *outside* c (so ``-spacing`` on the inner boundary layer)
voxel outside class c  ``+`` distance to the nearest voxel centre *inside* c (``+spacing`` on the
                       outer boundary layer)
class empty or full    all zeros: there is no interface, so no boundary signal
=====================  ==========================================================================

No voxel is 0 where an interface exists: the zero level set (the boundary) lies between the
inner and the outer boundary layers, so a perfect prediction is the unique minimiser of the
boundary loss. The image border is not an interface. This differs from Kervadec et al.'s code and
``monai.losses.BoundaryLoss``, which use ``-(d - 1)`` inside (0 on the inner layer, in voxels
even with a spacing) and compute distances in voxel units.

Inside a MONAI pipeline, place :class:`SignedDistanceMapd` after loading/resampling and before
random crops and flips, and list its output key (``"dist"`` by default) in their ``keys``: the
map is then computed once per case, cached by ``CacheDataset``, and cropped/flipped with the
image and label. Distances are taken over the whole volume, so a patch keeps the distances to
boundaries outside it.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from medseg.utils.edt import distance_mm

__all__ = [
    "DISTANCE_KEY",
    "SignedDistanceMap",
    "SignedDistanceMapd",
    "mask_signed_distance",
    "signed_distance_map",
    "spacing_of",
]

DISTANCE_KEY = "dist"


def _check_spacing(spacing: Sequence[float] | float | None, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    sp = (float(spacing),) * ndim if np.isscalar(spacing) else tuple(float(s) for s in spacing)  # type: ignore[arg-type]
    if len(sp) != ndim or any(not (s > 0 and np.isfinite(s)) for s in sp):
        raise ValueError(f"spacing must be {ndim} positive numbers (one per spatial axis), got {spacing!r}")
    return sp


def mask_signed_distance(mask: np.ndarray, spacing: Sequence[float] | float | None = None) -> np.ndarray:
    """Signed distance map of one binary mask ``(*spatial)``: negative inside, positive outside.

    ``sdm = edt(outside) - edt(inside)``; all zeros when the mask is empty or full (see the
    module docstring for the full convention). Returns float32 of the mask's shape.
    """
    m = np.asarray(mask).astype(bool)
    sp = _check_spacing(spacing, m.ndim)
    if not m.any() or m.all():
        return np.zeros(m.shape, dtype=np.float32)
    return (distance_mm(~m, sp) - distance_mm(m, sp)).astype(np.float32, copy=False)


def signed_distance_map(
    label: np.ndarray | torch.Tensor, num_classes: int, spacing: Sequence[float] | float | None = None
) -> np.ndarray:
    """Per-class signed distance maps ``(C, *spatial)`` of a label-index map.

    Args:
        label: ``(1, *spatial)`` (channel-first) integer class indices in ``[0, num_classes)``;
            float arrays holding integers are accepted.
        num_classes: ``C``, number of classes including the background (channel order = class index).
        spacing: voxel size per spatial axis (mm), or a scalar, or None for 1.

    Returns:
        float32 array ``(C, *spatial)``; channel ``c`` is :func:`mask_signed_distance` of ``label == c``.
    """
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes!r}")
    arr = label.detach().cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
    if arr.ndim < 2 or arr.shape[0] != 1:
        raise ValueError(f"label must be channel-first (1, *spatial), got shape {arr.shape}")
    arr = arr[0]
    lab = np.rint(arr).astype(np.int64) if np.issubdtype(arr.dtype, np.floating) else arr.astype(np.int64)
    if lab.size and (lab.min() < 0 or lab.max() >= num_classes):
        raise ValueError(
            f"label values must be in [0, {num_classes - 1}] for num_classes={num_classes}, "
            f"found [{lab.min()}, {lab.max()}]"
        )
    sp = _check_spacing(spacing, lab.ndim)
    return np.stack([mask_signed_distance(lab == c, sp) for c in range(int(num_classes))])


def spacing_of(img: object, ndim: int) -> tuple[float, ...] | None:
    """Voxel spacing of a MONAI ``MetaTensor`` (from its affine), or None for plain arrays."""
    if isinstance(img, MetaTensor):
        pix = img.pixdim
        sp = pix.tolist() if isinstance(pix, torch.Tensor) else list(np.asarray(pix).tolist())
        return tuple(float(s) for s in sp[:ndim])
    return None


class SignedDistanceMap(Transform):
    """Array transform: ``(1, *spatial)`` label map -> ``(C, *spatial)`` float32 signed distance maps.

    The spacing comes from the label's ``MetaTensor`` affine (``pixdim``) when present, else from
    ``spacing``, else 1. A ``MetaTensor`` input gives a ``MetaTensor`` output with the same
    meta-data (affine), so downstream spatial transforms treat it like the label.

    Args:
        num_classes: number of classes including the background.
        spacing: fallback voxel spacing (mm) for inputs without meta-data.

    Example:
        >>> SignedDistanceMap(num_classes=3)(torch.zeros(1, 8, 8, 8)).shape
        torch.Size([3, 8, 8, 8])
    """

    def __init__(self, num_classes: int, spacing: Sequence[float] | float | None = None) -> None:
        if isinstance(num_classes, bool) or int(num_classes) != num_classes or int(num_classes) < 1:
            raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
        self.num_classes = int(num_classes)
        self.spacing = spacing

    def __call__(self, label: np.ndarray | torch.Tensor) -> torch.Tensor | np.ndarray:
        """Compute the maps; returns the input's container type (MetaTensor, Tensor or ndarray)."""
        ndim = np.ndim(label) - 1
        spacing = spacing_of(label, ndim) or self.spacing
        out = signed_distance_map(label, self.num_classes, spacing)
        if isinstance(label, MetaTensor):
            ops = list(label.applied_operations)
            return MetaTensor(torch.from_numpy(out), meta=dict(label.meta), applied_operations=ops)
        if isinstance(label, torch.Tensor):
            return torch.from_numpy(out).to(label.device)
        return out


class SignedDistanceMapd(MapTransform):
    """Dictionary wrapper of :class:`SignedDistanceMap`: writes the map of ``keys`` to ``output_keys``.

    Args:
        keys: label key(s) (``(1, *spatial)`` label maps).
        num_classes: number of classes including the background.
        output_keys: where to write each map; defaults to ``"dist"`` for a single key.
        spacing: fallback spacing for labels without meta-data.
        allow_missing_keys: skip absent keys instead of raising.
    """

    def __init__(
        self,
        keys: KeysCollection,
        num_classes: int,
        output_keys: KeysCollection | None = None,
        spacing: Sequence[float] | float | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if output_keys is None:
            if len(self.keys) != 1:
                raise ValueError(f"output_keys is required for several keys, got keys={self.keys!r}")
            output_keys = (DISTANCE_KEY,)
        outs = (output_keys,) if isinstance(output_keys, str) else tuple(output_keys)
        if len(outs) != len(self.keys):
            raise ValueError(f"output_keys must have one entry per key: keys={self.keys!r}, output_keys={outs!r}")
        self.output_keys = outs
        self.transform = SignedDistanceMap(num_classes, spacing)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key, out in self.key_iterator(d, self.output_keys):
            d[out] = self.transform(d[key])
        return d
