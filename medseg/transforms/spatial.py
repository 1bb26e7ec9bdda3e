"""Spatial augmentation of a sampled patch: rotate and scale about the centre of a larger box, then crop.

Where MONAI falls short for nnU-Net-style patch augmentation:

- ``RandAffined`` draws one scale per axis and one probability for rotation and scaling together;
  nnU-Net rotates with one probability, scales with another and scales every axis by the same factor.
- When it draws no transform but the output size differs, ``RandAffined`` still resamples; a box whose
  sides differ from the patch by an odd count would be shifted by half a voxel and blurred.
- ``RandSimulateLowResolutiond`` zooms every spatial axis; dummy-2D augmentation must leave the
  out-of-plane axis alone.

So: :func:`patch_affine` (deterministic: MONAI ``Affine`` about the box centre, or an exact centre crop
when there is nothing to rotate or scale) and :class:`RandPatchAffined` (samples the angles and the
scale, then calls it); :func:`simulate_low_resolution` (nearest down, trilinear up, on chosen axes)
and :class:`RandSimulateLowResolutiond`.

Conventions: arrays are ``(C, X, Y, Z)``; angles in radians about the x, y, z axes (MONAI's
``rotate_params``); ``scale`` is MONAI's sampling-grid scale (``> 1`` reads a larger region, so
structures look smaller).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import Affine, MapTransform, Randomizable

__all__ = ["centre_crop", "patch_affine", "RandPatchAffined", "simulate_low_resolution",
           "RandSimulateLowResolutiond"]


def centre_crop(img: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """The central ``size`` voxels of ``img`` ``(C, *spatial)``; each side must be at least ``size``."""
    starts = []
    for have, want in zip(img.shape[1:], size, strict=True):
        if have < want:
            raise ValueError(f"cannot crop {list(img.shape[1:])} to {list(size)}: the input is smaller")
        starts.append((have - want) // 2)
    return img[(slice(None), *(slice(s, s + w) for s, w in zip(starts, size, strict=True)))]


def patch_affine(img: torch.Tensor, size: Sequence[int], rotation: Sequence[float] = (0.0, 0.0, 0.0),
                 scale: Sequence[float] = (1.0, 1.0, 1.0), mode: str = "bilinear",
                 padding_mode: str = "border") -> torch.Tensor:
    """Resample the central ``size`` patch of ``img`` ``(C, X, Y, Z)`` rotated by ``rotation`` and scaled by ``scale``.

    The output's centre is the input's centre. With no rotation and unit scale it is an exact crop
    (:func:`centre_crop`, no interpolation). ``mode``: ``bilinear`` (images) or ``nearest`` (labels);
    ``padding_mode``: what is read outside the box (``border``, ``zeros``, ``reflection``).
    """
    if not any(rotation) and all(s == 1.0 for s in scale):
        return centre_crop(img, size)
    affine = Affine(rotate_params=list(rotation), scale_params=list(scale), spatial_size=list(size), mode=mode,
                    padding_mode=padding_mode, image_only=True)
    return affine(img)  # type: ignore[return-value]


class RandPatchAffined(Randomizable, MapTransform):
    """Random rotation (probability ``prob_rotation``, angles uniform in ``rotation_range`` per axis) and
    isotropic scaling (``prob_scale``, one factor uniform in ``scale_range`` for ``scale_axes``) of a box into
    a centred patch of ``patch_size``; the same draw for every key. Calls :func:`patch_affine`.

    Args:
        keys: the keys to transform (``(C, X, Y, Z)`` arrays of one box size).
        patch_size: output size (x, y, z).
        rotation_range: ``[[lo, hi]] * 3`` radians about x, y, z.
        scale_range: ``[lo, hi]``, MONAI's grid scale.
        scale_axes: axes the scale applies to (dummy 2D: the in-plane axes).
        modes / padding_modes: per key, e.g. ``("bilinear", "nearest")`` and ``"border"`` for both, so that
            what is read past the box (a scale above the box's) repeats the edge in image and label alike.
    """

    def __init__(self, keys: KeysCollection, patch_size: Sequence[int], rotation_range: Sequence[Sequence[float]],
                 scale_range: Sequence[float], prob_rotation: float = 0.2, prob_scale: float = 0.2,
                 scale_axes: Sequence[int] = (0, 1, 2), modes: Sequence[str] | str = "bilinear",
                 padding_modes: Sequence[str] | str = "border", allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        for name, p in (("prob_rotation", prob_rotation), ("prob_scale", prob_scale)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p!r}")
        if len(rotation_range) != 3 or any(len(r) != 2 or r[0] > r[1] for r in rotation_range):
            raise ValueError(f"rotation_range must be three [lo, hi] pairs, got {rotation_range!r}")
        if len(scale_range) != 2 or not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"scale_range must be [lo, hi] with 0 < lo <= hi, got {scale_range!r}")
        self.patch_size = tuple(int(p) for p in patch_size)
        self.rotation_range = [tuple(float(v) for v in r) for r in rotation_range]
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.prob_rotation, self.prob_scale = float(prob_rotation), float(prob_scale)
        self.scale_axes = tuple(scale_axes)
        n = len(self.keys)
        self.modes = [modes] * n if isinstance(modes, str) else list(modes)
        self.padding_modes = [padding_modes] * n if isinstance(padding_modes, str) else list(padding_modes)
        self.rotation: tuple[float, ...] = (0.0, 0.0, 0.0)
        self.scale: tuple[float, ...] = (1.0, 1.0, 1.0)

    def randomize(self, data: Any = None) -> None:
        self.rotation, self.scale = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        if self.R.rand() < self.prob_rotation:
            self.rotation = tuple(float(self.R.uniform(lo, hi)) if hi > lo else lo for lo, hi in self.rotation_range)
        if self.R.rand() < self.prob_scale:
            factor = float(self.R.uniform(*self.scale_range))
            self.scale = tuple(factor if a in self.scale_axes else 1.0 for a in range(3))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        for key, mode, pad in self.key_iterator(d, self.modes, self.padding_modes):
            d[key] = patch_affine(d[key], self.patch_size, self.rotation, self.scale, mode, pad)
        return d


def simulate_low_resolution(img: torch.Tensor, zoom: float, axes: Sequence[int] = (0, 1, 2)) -> torch.Tensor:
    """``img`` ``(C, X, Y, Z)`` seen at ``zoom`` times its resolution along ``axes``: nearest-neighbour
    down-sampling to ``round(n * zoom)`` voxels, then trilinear up-sampling back to ``n`` (nnU-Net's
    ``SimulateLowResolutionTransform``; MONAI's ``SimulateLowResolution`` on every axis)."""
    if not 0 < zoom <= 1:
        raise ValueError(f"zoom must be in (0, 1], got {zoom!r}")
    shape = list(img.shape[1:])
    small = [max(1, int(round(n * zoom))) if a in axes else n for a, n in enumerate(shape)]
    if small == shape:
        return img
    x = torch.as_tensor(img).float()[None]
    down = torch.nn.functional.interpolate(x, size=small, mode="nearest")
    up = torch.nn.functional.interpolate(down, size=shape, mode="trilinear", align_corners=False)[0]
    if isinstance(img, torch.Tensor) and type(img) is not torch.Tensor:  # keep a MetaTensor's type and meta
        out = img.clone()
        out.copy_(up.to(img.dtype))
        return out
    return up.to(torch.as_tensor(img).dtype)


class RandSimulateLowResolutiond(Randomizable, MapTransform):
    """With probability ``prob``, :func:`simulate_low_resolution` at a zoom uniform in ``zoom_range`` on ``axes``."""

    def __init__(self, keys: KeysCollection, prob: float = 0.25, zoom_range: Sequence[float] = (0.5, 1.0),
                 axes: Sequence[int] = (0, 1, 2), allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob!r}")
        if len(zoom_range) != 2 or not 0 < zoom_range[0] <= zoom_range[1] <= 1:
            raise ValueError(f"zoom_range must be [lo, hi] with 0 < lo <= hi <= 1, got {zoom_range!r}")
        self.prob, self.zoom_range, self.axes = float(prob), tuple(zoom_range), tuple(axes)
        self.zoom: float | None = None

    def randomize(self, data: Any = None) -> None:
        self.zoom = float(self.R.uniform(*self.zoom_range)) if self.R.rand() < self.prob else None

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        if self.zoom is not None:
            for key in self.key_iterator(d):
                d[key] = simulate_low_resolution(d[key], self.zoom, self.axes)
        return d
