"""Data augmentation of a sampled training patch, planned from the run's :class:`~medseg.plan.Plan`.

The sampler reads a box of :func:`read_size` voxels around its chosen centre (from the whole
volume or from the preprocessed store); :func:`augmentation` turns it into a patch of the plan's
``patch_size``. Both run in the data-loader workers.
"""

from __future__ import annotations

from collections.abc import Sequence

from monai import transforms as mt

from medseg.plan.planner import Plan

__all__ = ["read_size", "augmentation"]


def read_size(plan: Plan) -> tuple[int, int, int]:
    """Spatial size of the box the sampler reads for one patch (x, y, z)."""
    return tuple(plan.patch_size)  # type: ignore[return-value]


def augmentation(plan: Plan, keys: Sequence[str], modes: Sequence[str]) -> list[mt.Transform]:
    """Random spatial transforms on ``keys`` (interpolated with ``modes``) and intensity transforms on ``image``.

    Input: a dict whose ``keys`` are ``(C, *read_size(plan))`` arrays; output: the same keys at ``plan.patch_size``.
    """
    keys, modes = list(keys), list(modes)
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
