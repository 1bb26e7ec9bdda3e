"""Data augmentation of a sampled training patch, planned from the run's :class:`~medseg.plan.Plan`.

The sampler reads a box of :func:`read_size` voxels around its chosen centre (from the whole volume or
from the preprocessed store); :func:`augmentation` turns it into a patch of the plan's ``patch_size``:
rotation and scaling about the box centre with a crop to the patch (an exact crop when neither is
drawn; past the box, image and label both repeat their edge voxels), then intensity transforms on
``image``, then mirroring. Both run in the data-loader workers.
Which transforms, their probabilities and ranges come from the plan's ``augmentation`` section
(:mod:`medseg.plan.augmentation`, where the rules and their nnU-Net origin are stated).

Transforms, in order (MONAI unless marked medseg):

==================  ============================================================  ==========
planned key         transform                                                     keys
==================  ============================================================  ==========
rotation, scale     medseg ``RandPatchAffined`` (one draw each, isotropic scale)  all
bias_field          medseg ``RandBiasFieldd`` (MRI)                               image
noise               ``RandGaussianNoised`` (sd uniform in [0, std_max])           image
blur                ``RandGaussianSmoothd`` (sigma per axis, voxels)              image
brightness          ``RandScaleIntensityd`` (x * f)                               image
offset              ``RandShiftIntensityd`` (x + d; CT)                           image
contrast            ``RandScaleIntensityFixedMeand`` (mean kept, range kept)      image
low_resolution      medseg ``RandSimulateLowResolutiond`` (in-plane in dummy 2D)  image
gamma_inverted      ``RandAdjustContrastd(invert_image=True, retain_stats=True)``  image
gamma               ``RandAdjustContrastd(retain_stats=True)``                    image
clip                medseg ``ClipChannelsd`` (CT: the normalisation's window)     image
mirror              ``RandFlipd`` per axis                                        all
==================  ============================================================  ==========

MONAI's intensity transforms draw one value for all channels (nnU-Net draws per channel).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from monai import transforms as mt

from medseg.plan.augmentation import augmentation_of, read_box
from medseg.plan.planner import Plan
from medseg.transforms.acquisition import RandBiasFieldd
from medseg.transforms.intensity import ClipChannelsd
from medseg.transforms.spatial import RandPatchAffined, RandSimulateLowResolutiond

__all__ = ["read_size", "read_padding", "augmentation"]


def read_size(plan: Plan) -> tuple[int, int, int]:
    """Spatial size of the box the sampler reads for one patch (x, y, z): ``patch_size`` plus an even margin
    that holds the patch at the planned rotations and scales (:func:`medseg.plan.augmentation.read_box`)."""
    return read_box(augmentation_of(plan), plan.patch_size)


def read_padding(plan: Plan, keys: Sequence[str] = ("image", "label")) -> list[mt.Transform]:
    """Padding of a whole volume by ``(read_size - patch_size) / 2`` per side (image: edge values, others: 0).

    A crop that must lie inside the volume moves its centre inwards near a border; with this margin a
    centre drawn on any voxel of the unpadded volume keeps that voxel inside the final, central patch.
    """
    margin = [(r - p) // 2 for r, p in zip(read_size(plan), plan.patch_size, strict=True)]
    if not any(margin):
        return []
    keys = list(keys)
    return [mt.BorderPadd(keys=keys, spatial_border=margin, mode=["edge" if k == "image" else "constant" for k in keys])]


def augmentation(plan: Plan, keys: Sequence[str], modes: Sequence[str]) -> list[mt.Transform]:
    """Random spatial transforms on ``keys`` (interpolated with ``modes``) and intensity transforms on ``image``.

    Input: a dict whose ``keys`` are ``(C, *read_size(plan))`` arrays; output: the same keys at ``plan.patch_size``.
    """
    aug = augmentation_of(plan)
    keys, modes = list(keys), list(modes)
    if aug.get("recipe") == "light":
        return _light(plan, keys, modes)
    rot, scale, mirror = aug["rotation"], aug["scale"], aug["mirror"]
    out: list[mt.Transform] = [RandPatchAffined(keys, plan.patch_size, rot["range_rad"], scale["range"],
                                                prob_rotation=rot["prob"], prob_scale=scale["prob"],
                                                scale_axes=scale["axes"], modes=modes, padding_modes="border")]
    out += _intensity(aug)
    out += [mt.RandFlipd(keys=keys, prob=mirror["prob"], spatial_axis=a) for a in mirror["axes"]]
    return out


def _intensity(aug: dict[str, Any]) -> list[mt.Transform]:
    """The planned intensity transforms on ``image`` (those with a probability above zero)."""
    img = "image"
    build = {
        "bias_field": lambda s: RandBiasFieldd(img, prob=s["prob"], degree=s["degree"],
                                                  amplitude_max=s["amplitude_max"]),
        "noise": lambda s: mt.RandGaussianNoised(img, prob=s["prob"], mean=0.0, std=s["std_max"], sample_std=True),
        "blur": lambda s: mt.RandGaussianSmoothd(img, sigma_x=s["sigma"], sigma_y=s["sigma"], sigma_z=s["sigma"],
                                                 prob=s["prob"]),
        "brightness": lambda s: mt.RandScaleIntensityd(img, factors=(s["range"][0] - 1, s["range"][1] - 1),
                                                       prob=s["prob"]),
        "offset": lambda s: mt.RandShiftIntensityd(img, offsets=tuple(s["range"]), prob=s["prob"]),
        "contrast": lambda s: mt.RandScaleIntensityFixedMeand(img, factors=(s["range"][0] - 1, s["range"][1] - 1),
                                                              fixed_mean=True, preserve_range=True, prob=s["prob"]),
        "low_resolution": lambda s: RandSimulateLowResolutiond(img, prob=s["prob"], zoom_range=s["zoom"],
                                                               axes=s["axes"]),
        "gamma_inverted": lambda s: mt.RandAdjustContrastd(img, prob=s["prob"], gamma=tuple(s["range"]),
                                                           invert_image=True, retain_stats=True),
        "gamma": lambda s: mt.RandAdjustContrastd(img, prob=s["prob"], gamma=tuple(s["range"]), retain_stats=True),
        "clip": lambda s: ClipChannelsd(img, s["windows"]),
    }
    return [make(aug[name]) for name, make in build.items() if name in aug and aug[name]["prob"] > 0]


def _light(plan: Plan, keys: list[str], modes: list[str]) -> list[mt.Transform]:
    """The earlier fixed recipe (``recipe: light``): flips, in-plane quarter turns, a small z rotation and
    scaling, light intensity scale, shift and noise; kept as the baseline of the benchmarks."""
    patch = plan.patch_size
    return [
        mt.RandFlipd(keys=keys, prob=0.5, spatial_axis=0),
        mt.RandFlipd(keys=keys, prob=0.5, spatial_axis=1),
        # quarter turns in-plane only for a square in-plane patch (they would swap its sides otherwise)
        *([mt.RandRotate90d(keys=keys, prob=0.25, spatial_axes=(0, 1))] if patch[0] == patch[1] else []),
        mt.RandAffined(keys=keys, prob=0.2, rotate_range=(0.0, 0.0, 0.26), scale_range=(0.1, 0.1, 0.1),
                       mode=modes, padding_mode="border"),
        mt.RandScaleIntensityd(keys="image", factors=0.1, prob=0.3),
        mt.RandShiftIntensityd(keys="image", offsets=0.1, prob=0.3),
        mt.RandGaussianNoised(keys="image", std=0.05, prob=0.2),
    ]
