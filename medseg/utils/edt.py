"""Exact Euclidean distance transform in millimetres (the ``edt`` package, scipy beyond 3D)."""

from __future__ import annotations

from collections.abc import Sequence

import edt
import numpy as np
from scipy.ndimage import distance_transform_edt

__all__ = ["distance_mm"]


def distance_mm(mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Distance in mm of every nonzero voxel of ``mask`` to the nearest zero voxel (0 on zeros).

    ``edt`` (multi-threaded, anisotropic, float32) for 1-3 spatial dims, ``scipy`` beyond. The
    image border is not background (``black_border=False``), as in ``distance_transform_edt``.
    """
    if mask.ndim > 3:
        return distance_transform_edt(mask, sampling=spacing)
    anisotropy = float(spacing[0]) if mask.ndim == 1 else tuple(float(s) for s in spacing)
    labels = np.ascontiguousarray(mask if mask.dtype == np.bool_ else mask != 0)
    return edt.edt(labels, anisotropy=anisotropy, black_border=False)
