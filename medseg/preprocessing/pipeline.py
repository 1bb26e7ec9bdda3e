"""MONAI transform pipelines for training, validation and inference, built from a :class:`~medseg.plan.Plan`.

The deterministic pre-processing is shared by all three:

1. load (one file per case, 4D with channels last, or one file per channel), channel first;
2. RAS orientation;
3. crop to the nonzero region of the *raw* image (any channel), before any normalisation, so a
   labelled region darker than the mean is never cropped away;
4. resampling to the plan's spacing;
5. per-channel normalisation from the plan (:mod:`medseg.transforms.intensity`).

Inference inverts the spatial steps with :class:`monai.transforms.Invertd` so predicted masks land
on the input's voxel grid. With region labels the label map is turned into region channels last,
after patch sampling, so sampling still balances the label values.
"""

from __future__ import annotations

import copy
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai import transforms as mt

from medseg.plan.planner import Plan
from medseg.preprocessing.augment import augmentation, read_padding, read_size
from medseg.transforms.intensity import NormalizeChannelsd
from medseg.utils.quiet import silence_third_party_notices

__all__ = ["preprocessing", "train_transforms", "patch_transforms", "val_transforms", "stored_val_transforms", "inference_transforms", "nonzero"]


silence_third_party_notices()  # worker processes import this module to unpickle the transforms


def nonzero(image: torch.Tensor) -> torch.Tensor:
    """Foreground of the raw image for cropping: voxels that are nonzero (per channel)."""
    return image != 0


class LoadImaged(mt.LoadImaged):
    """``monai.transforms.LoadImaged`` (``image_only``) that threads can share: its readers are copied per call.

    CacheDataset fills its cache from a thread pool; MONAI's ``NibabelReader`` keeps the file list
    of its last ``read`` on the instance until ``get_data``, so two threads sharing one reader can
    pair a case's channel files with another case's file list and drop channels.
    """

    def __call__(self, data: Mapping[Hashable, Any], reader: Any = None) -> dict[Hashable, Any]:
        loader = copy.copy(self._loader)
        loader.readers = [copy.copy(r) for r in self._loader.readers]
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = loader(d[key], reader)
        return d


def preprocessing(plan: Plan, keys: Sequence[str] = ("image", "label")) -> list[mt.Transform]:
    """Deterministic steps shared by training, validation and inference (invertible)."""
    keys = list(keys)
    modes = ["bilinear" if k == "image" else "nearest" for k in keys]
    return [
        LoadImaged(keys=keys, image_only=True),
        mt.EnsureChannelFirstd(keys=keys),
        mt.EnsureTyped(keys=keys, dtype=None, track_meta=True),
        mt.Orientationd(keys=keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
        mt.CropForegroundd(keys=keys, source_key="image", select_fn=nonzero, allow_smaller=True),
        mt.Spacingd(keys=keys, pixdim=plan.spacing, mode=modes),
        NormalizeChannelsd(keys="image", norms=plan.normalization),
    ]


def _regions(plan: Plan) -> list[mt.Transform]:
    spec = plan.label_spec
    if spec.regions is None:
        return []
    from medseg.transforms.regions import LabelToRegionsd

    return [LabelToRegionsd(keys="label", regions=list(spec.regions.values()))]


def _distance_map(plan: Plan, key: str | None) -> list[mt.Transform]:
    if key is None:
        return []
    from medseg.transforms import SignedDistanceMapd

    return [SignedDistanceMapd(keys="label", num_classes=plan.out_channels, output_keys=key)]


def train_transforms(plan: Plan, distance_map_key: str | None = None) -> mt.Compose:
    """Pre-processing, then class-balanced patch sampling and augmentation.

    Everything up to the first random transform is cached by CacheDataset (including the signed
    distance map when ``distance_map_key`` is set), so each epoch only pays for cropping and
    augmentation.
    """
    spatial = ["image", "label"] + ([distance_map_key] if distance_map_key else [])
    return mt.Compose([
        *preprocessing(plan),
        *read_padding(plan),  # a centre on any voxel keeps that voxel in the augmented patch
        mt.SpatialPadd(keys=["image", "label"], spatial_size=read_size(plan)),
        *_distance_map(plan, distance_map_key),
        # voxel indices per class, computed once and cached: the random crop then only draws from them
        mt.ClassesToIndicesd(keys="label", num_classes=len(plan.class_ratios), indices_postfix="_cls_indices"),
        mt.RandCropByLabelClassesd(keys=spatial, label_key="label", spatial_size=read_size(plan),
                                   ratios=list(plan.class_ratios), num_classes=len(plan.class_ratios),
                                   indices_key="label_cls_indices", num_samples=plan.samples_per_case, warn=False),
        *patch_transforms(plan, distance_map_key).transforms,
    ])


def patch_transforms(plan: Plan, distance_map_key: str | None = None) -> mt.Compose:
    """What follows patch sampling, from the in-memory volume or the store: augmentation, regions, plain tensors.

    Input: ``{"image": (C, *read_size), "label": (1, *read_size)}`` (+ the distance map); output at ``patch_size``.
    """
    spatial = ["image", "label"] + ([distance_map_key] if distance_map_key else [])
    interp = ["bilinear", "nearest"] + (["bilinear"] if distance_map_key else [])
    return mt.Compose([
        *augmentation(plan, spatial, interp),
        *_regions(plan),
        mt.EnsureTyped(keys=spatial, track_meta=False),
    ])


def stored_val_transforms(plan: Plan) -> mt.Compose:
    """What validation applies to a volume read from the store (already pre-processed): region channels."""
    return mt.Compose(_regions(plan))


def val_transforms(plan: Plan) -> mt.Compose:
    """Deterministic pre-processing of image and label; whole volumes for sliding-window validation."""
    return mt.Compose([*preprocessing(plan), *_regions(plan)])


def inference_transforms(plan: Plan) -> mt.Compose:
    """Pre-processing of the image alone; its spatial steps are inverted on the prediction."""
    return mt.Compose(preprocessing(plan, keys=("image",)))
