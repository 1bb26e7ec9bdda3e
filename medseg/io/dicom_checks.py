"""Whether a DICOM series is a volume: the checks, their order, and their stated tolerances.

A series qualifies when it is CT or MR, carries patient geometry, is not a localizer, and its
planes share rows, columns, pixel spacing, orientation and frame of reference; the row and column
directions are orthogonal; there are at least :data:`MIN_SLICES` planes; no two share a position;
the planes are stacked along their normal (no gantry tilt); and consecutive gaps are even. The
first failing check is the series' reason, worded for the user; geometry is never guessed.

Tolerances (each stated once, here):

* gaps: every gap along the normal within ``SLICE_GAP_ATOL_MM + SLICE_GAP_RTOL * median gap``
  of the median gap; a gap near a whole multiple (>= 2) of it is reported as missing slices;
* duplicates: two planes closer than ``DUPLICATE_ATOL_MM`` along the normal;
* tilt: the in-plane drift of the plane positions over the whole stack at most
  ``TILT_TOLERANCE_PIXELS`` of the smaller pixel spacing;
* orientation: direction cosines equal within ``ORIENTATION_ATOL``; row and column directions
  unit and orthogonal within the same tolerance.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["check_series", "slice_normal", "orientation_name", "VOLUME_MODALITIES", "MIN_SLICES",
           "SLICE_GAP_RTOL", "SLICE_GAP_ATOL_MM", "DUPLICATE_ATOL_MM", "TILT_TOLERANCE_PIXELS", "ORIENTATION_ATOL"]

VOLUME_MODALITIES = ("CT", "MR")
MIN_SLICES = 3
SLICE_GAP_RTOL = 0.01
SLICE_GAP_ATOL_MM = 0.01
DUPLICATE_ATOL_MM = 0.01
TILT_TOLERANCE_PIXELS = 0.1
ORIENTATION_ATOL = 1e-4
_LOCALIZER_TYPES = {"LOCALIZER", "SCOUT"}


def slice_normal(orientation: Sequence[float]) -> np.ndarray:
    """Unit normal of a plane with ImageOrientationPatient ``orientation``: row x column direction (LPS)."""
    o = np.asarray(orientation, dtype=np.float64)
    n = np.cross(o[:3], o[3:6])
    return n / np.linalg.norm(n)


def orientation_name(orientation: Sequence[float]) -> str:
    """``axial``, ``coronal`` or ``sagittal`` when the normal is a patient axis, else ``oblique``."""
    n = np.abs(slice_normal(orientation))
    axis = int(np.argmax(n))
    if n[axis] < 1 - ORIENTATION_ATOL:
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


def _header_reason(modality: str, slices: Sequence[Any]) -> str | None:
    """Reason from what the planes declare (modality, geometry present, type, shared attributes)."""
    if modality not in VOLUME_MODALITIES:
        return f"modality {modality or 'unknown'} is not {' or '.join(VOLUME_MODALITIES)}"
    if any(s.position is None or s.orientation is None or s.pixel_spacing is None for s in slices):
        return "no patient geometry (ImagePositionPatient, ImageOrientationPatient or PixelSpacing missing)"
    if any(_LOCALIZER_TYPES & set(s.image_type) for s in slices):
        return "localizer/scout images (ImageType LOCALIZER), not a volume"
    if len({s.path for s in slices if s.frame is not None}) > 1 or \
            (any(s.frame is None for s in slices) and any(s.frame is not None for s in slices)):
        return "mixes several multi-frame files or multi-frame and single-frame files"
    for what, key in (("rows/columns", lambda s: (s.rows, s.columns)), ("pixel spacing", lambda s: s.pixel_spacing),
                      ("frame of reference", lambda s: s.frame_of_reference_uid)):
        values = sorted({key(s) for s in slices}, key=str)
        if len(values) > 1:
            return f"mixed {what} within the series ({', '.join(map(str, values[:3]))})"
    orientations = np.array([s.orientation for s in slices])
    if np.abs(orientations - orientations[0]).max() > ORIENTATION_ATOL:
        return f"mixed orientation within the series ({len(np.unique(orientations.round(3), axis=0))} orientations)"
    row, col = orientations[0, :3], orientations[0, 3:]
    if abs(row @ col) > ORIENTATION_ATOL or max(abs(np.linalg.norm(row) - 1), abs(np.linalg.norm(col) - 1)) > \
            ORIENTATION_ATOL:
        return "non-orthogonal or non-unit row/column directions (ImageOrientationPatient)"
    if len(slices) < MIN_SLICES:
        return f"fewer than {MIN_SLICES} slices ({len(slices)})"
    return None


def _stack_reason(slices: Sequence[Any], along: np.ndarray) -> tuple[str | None, float | None]:
    """Reason from the plane positions (sorted by ``along``, their distance on the normal); else the gap."""
    first = slices[0]
    gaps = np.diff(along)
    if (gaps < DUPLICATE_ATOL_MM).any():
        n = int((gaps < DUPLICATE_ATOL_MM).sum())
        return (f"duplicate slice positions ({n} slice(s) share a position with another, "
                f"e.g. at {along[1:][gaps < DUPLICATE_ATOL_MM][0]:.2f} mm along the normal)"), None
    o = np.asarray(first.orientation, dtype=np.float64)
    positions = np.array([s.position for s in slices], dtype=np.float64)
    in_plane = (positions - positions[0]) @ np.stack([o[:3], o[3:]], axis=1)
    drift = float(np.linalg.norm(in_plane, axis=1).max())
    if drift > TILT_TOLERANCE_PIXELS * min(first.pixel_spacing):
        end = float(np.linalg.norm(in_plane[-1]))
        angle = float(np.degrees(np.arctan2(end, along[-1] - along[0])))
        return (f"gantry tilt or non-orthogonal slices: positions drift {drift:.2f} mm in-plane over the stack "
                f"({angle:.1f} degrees off the slice normal)"), None
    median = float(np.median(gaps))
    tol = SLICE_GAP_ATOL_MM + SLICE_GAP_RTOL * median
    bad = np.flatnonzero(np.abs(gaps - median) > tol)
    if bad.size:
        i = int(bad[0])
        multiple = gaps[i] / median
        if round(multiple) >= 2 and abs(gaps[i] - round(multiple) * median) <= tol * round(multiple):
            return (f"missing slices: a gap of {gaps[i]:.2f} mm after slice {i + 1} of {len(slices)} where the "
                    f"spacing is {median:.2f} mm ({int(round(multiple)) - 1} slice(s) missing)"), None
        return (f"uneven slice spacing: gaps from {gaps.min():.2f} to {gaps.max():.2f} mm (median {median:.2f} mm, "
                f"tolerance {tol:.3f} mm)"), None
    return None, median


def check_series(modality: str, slices: Sequence[Any]) -> tuple[str | None, list[Any], float | None]:
    """``(reason, slices, gap)``: why the planes are not one volume (``None`` if they are), and their order.

    Args:
        modality: the series' Modality.
        slices: its planes (:class:`medseg.io.dicom_series.SliceHeader`), in any order.

    Returns:
        ``reason``: the first failing check, a sentence for the user, or ``None``; ``slices``: sorted by
        position along the normal (ascending) when the geometry allows, else as given; ``gap``: the
        median slice spacing in mm when the series qualifies, else ``None``.
    """
    reason = _header_reason(modality, slices)
    if reason is not None:
        return reason, list(slices), None
    normal = slice_normal(slices[0].orientation)
    along = np.array([np.dot(s.position, normal) for s in slices])
    order = np.argsort(along, kind="stable")
    ordered = [slices[i] for i in order]
    reason, gap = _stack_reason(ordered, along[order])
    return reason, ordered, gap
