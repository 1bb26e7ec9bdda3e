"""Voxel spacing from an affine: the one definition used by metrics, distance maps, checks and inference."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["spacing_from_affine"]


def spacing_from_affine(affine: Any, ndim: int = 3) -> tuple[float, ...]:
    """Spacing in mm of the first ``ndim`` voxel axes: the column norms of the affine's linear part.

    Args:
        affine: ``(4, 4)`` (or ``(ndim + 1, ndim + 1)``) voxel-to-world matrix, numpy or torch, or an
            object carrying one as ``.affine`` (a MONAI ``MetaTensor``, a nibabel image); a batched
            ``(B, 4, 4)`` affine uses its first entry. ``None`` or no matrix means 1 mm.
        ndim: number of spatial axes.

    Returns:
        ``ndim`` positive floats; an axis with a zero column (a degenerate affine) counts as 1 mm.
    """
    affine = getattr(affine, "affine", affine)
    if affine is None:
        return (1.0,) * ndim
    a = np.asarray(affine.detach().cpu() if hasattr(affine, "detach") else affine, dtype=np.float64)
    if a.ndim == 3:  # batched affine: (B, 4, 4)
        a = a[0]
    if a.ndim != 2 or a.shape[0] < ndim or a.shape[1] < ndim:
        return (1.0,) * ndim
    norms = np.linalg.norm(a[:ndim, :ndim], axis=0)
    return tuple(float(s) if s > 0 else 1.0 for s in norms)
