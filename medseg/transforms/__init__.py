"""Array and dictionary transforms (pure computation on numpy/torch/MONAI)."""

from __future__ import annotations

from medseg.transforms.distance import (
    DISTANCE_KEY,
    SignedDistanceMap,
    SignedDistanceMapd,
    mask_signed_distance,
    signed_distance_map,
    spacing_of,
)

__all__ = [
    "DISTANCE_KEY",
    "SignedDistanceMap",
    "SignedDistanceMapd",
    "mask_signed_distance",
    "signed_distance_map",
    "spacing_of",
]
