"""DICOM SEG as input: segments placed on a voxel grid they already lie on, never resampled.

A SEG's frames carry their own geometry (per-frame ImagePositionPatient, shared orientation and pixel
spacing). :func:`seg_on_grid` puts each frame onto a given voxel grid (a NIfTI's affine and shape) when
its rows and columns run along grid axes with the grid's spacing and its position falls on a voxel;
otherwise the SEG does not share that geometry and is refused, naming both sides. :func:`seg_grid` is
the grid that one or two SEGs share by themselves (their frames' span, at their slice spacing), for a
SEG compared with another SEG. Omitted (empty) frames are simply absent: their voxels stay 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import InputError
from medseg.io.dicom_libs import quiet_dicom_libraries, require_pydicom
from medseg.io.dicom_series import SliceHeader, slice_headers
from medseg.io.dicom_volume import lps_to_ras, plane_affine

__all__ = ["SegFile", "SEG_SOP_CLASS", "is_dicom_seg", "read_seg", "seg_grid", "seg_on_grid", "paint_segments"]

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
_VOXEL_ATOL = 1e-3  # how far (in voxels) a frame may sit from the grid: DS and float32 rounding only
_MM_ATOL = 1e-3


@dataclass
class SegFile:
    """A DICOM SEG read for evaluation: segment labels (numbered 1..S), per-frame geometry and pixels."""

    path: Path
    frame_of_reference_uid: str
    labels: list[str]
    frames: list[SliceHeader]
    segment_of_frame: list[int]
    pixels: np.ndarray  # (frames, rows, columns) bool
    declared_spacing: float | None


def is_dicom_seg(path: str | Path) -> bool:
    """Whether ``path`` is a DICOM Segmentation file (read header-only)."""
    pydicom = require_pydicom("DICOM SEG input")
    try:
        with quiet_dicom_libraries():
            ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (pydicom.errors.InvalidDicomError, OSError, ValueError, EOFError):
        return False
    return str(ds.get("SOPClassUID", "")) == SEG_SOP_CLASS


def _binary_pixels(ds: Any, path: Path) -> np.ndarray:
    kind = str(ds.get("SegmentationType", ""))
    if kind not in ("BINARY", "FRACTIONAL"):
        raise InputError(f"{path}: SegmentationType {kind or 'missing'} is not supported (BINARY or FRACTIONAL)")
    pixels = np.asarray(ds.pixel_array)
    pixels = pixels.reshape(int(ds.get("NumberOfFrames", 1) or 1), int(ds.Rows), int(ds.Columns))
    if kind == "FRACTIONAL":  # probability or occupancy: at least one half
        return pixels * 2 >= int(ds.get("MaximumFractionalValue", 255))
    return pixels > 0


def read_seg(path: str | Path) -> SegFile:
    """Read a DICOM SEG (pydicom): segments, frames with their geometry, and binary pixels.

    Raises:
        InputError: not a SEG, a LABELMAP SEG, or frames without patient geometry.
    """
    pydicom = require_pydicom("DICOM SEG input")
    p = Path(path)
    try:
        with quiet_dicom_libraries():
            ds = pydicom.dcmread(p)
            pixels = _binary_pixels(ds, p) if str(ds.get("SOPClassUID", "")) == SEG_SOP_CLASS else None
    except (pydicom.errors.InvalidDicomError, OSError, EOFError) as exc:
        raise InputError(f"{p}: cannot be read as DICOM ({exc})") from None
    if pixels is None:
        raise InputError(f"{p}: not a DICOM SEG (SOP class {ds.get('SOPClassUID', 'missing')})")
    frames = slice_headers(ds, p)
    if any(f.position is None or f.orientation is None or f.pixel_spacing is None for f in frames):
        raise InputError(f"{p}: SEG frames without patient geometry (plane position, orientation, pixel spacing)")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    numbers = [int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber) for item in per_frame] or [1]
    measures = (ds.get("SharedFunctionalGroupsSequence") or [{}])[0].get("PixelMeasuresSequence") or [{}]
    spacing = measures[0].get("SpacingBetweenSlices")
    return SegFile(p, str(ds.get("FrameOfReferenceUID", "")), [str(s.SegmentLabel) for s in ds.SegmentSequence],
                   frames, numbers, pixels, float(spacing) if spacing else None)


def _check_shared_plane(segs: Sequence[SegFile]) -> SliceHeader:
    ref = segs[0].frames[0]
    uids = {s.frame_of_reference_uid for s in segs if s.frame_of_reference_uid}
    if len(uids) > 1:
        raise InputError(f"{' and '.join(str(s.path) for s in segs)}: different frames of reference")
    for seg in segs:
        for f in seg.frames:
            same = (f.rows, f.columns) == (ref.rows, ref.columns) and \
                np.allclose(f.orientation, ref.orientation, atol=1e-4) and \
                np.allclose(f.pixel_spacing, ref.pixel_spacing, atol=1e-6)
            if not same:
                raise InputError(f"{' and '.join(str(s.path) for s in segs)}: frames differ in rows, columns, "
                                 "orientation or pixel spacing: not one voxel grid")
    return ref


def seg_grid(segs: Sequence[SegFile]) -> tuple[np.ndarray, tuple[int, int, int]]:
    """``(affine, shape)`` of the grid the frames of ``segs`` share: the span of their positions.

    The slice spacing is the SEGs' SpacingBetweenSlices, else the smallest gap between frames.

    Raises:
        InputError: the frames do not share orientation, pixel spacing and size, are not stacked along
            their normal, or do not fall on whole multiples of one slice spacing.
    """
    ref = _check_shared_plane(segs)
    o = np.asarray(ref.orientation, dtype=np.float64)
    normal = np.cross(o[:3], o[3:])
    positions = np.array([f.position for s in segs for f in s.frames], dtype=np.float64)
    along = positions @ normal
    in_plane = (positions - positions[0]) @ np.stack([o[:3], o[3:]], axis=1)
    names = " and ".join(str(s.path) for s in segs)
    if np.abs(in_plane).max() > _MM_ATOL * 10:
        raise InputError(f"{names}: frames are not stacked along their normal: not one voxel grid")
    levels = np.unique(np.round(along / _MM_ATOL) * _MM_ATOL)
    declared = [s.declared_spacing for s in segs if s.declared_spacing]
    spacing = declared[0] if declared else (float(np.diff(levels).min()) if len(levels) > 1 else 1.0)
    steps = (levels - levels[0]) / spacing
    if np.abs(steps - np.round(steps)).max() > _VOXEL_ATOL * 10:
        raise InputError(f"{names}: frame positions are not whole multiples of the {spacing:.4g} mm slice spacing")
    first = positions[int(np.argmin(along))]
    affine = plane_affine(o, ref.pixel_spacing, first, normal * spacing)
    return affine, (ref.columns, ref.rows, int(round(steps.max())) + 1)


def _frame_indices(frame: SliceHeader, inverse: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Voxel index of the frame's first pixel and the voxel steps of its columns and rows; ``None`` if off-grid."""
    o = np.asarray(frame.orientation, dtype=np.float64)
    origin = inverse[:3, :3] @ np.asarray(frame.position) + inverse[:3, 3]
    col_step = inverse[:3, :3] @ (o[:3] * frame.pixel_spacing[1])
    row_step = inverse[:3, :3] @ (o[3:] * frame.pixel_spacing[0])
    for v in (origin, col_step, row_step):
        if np.abs(v - np.round(v)).max() > _VOXEL_ATOL:
            return None
    if np.abs(col_step).sum().round() != 1 or np.abs(row_step).sum().round() != 1:
        return None
    return np.round(origin).astype(int), np.round(col_step).astype(int), np.round(row_step).astype(int)


def seg_on_grid(seg: SegFile, affine: np.ndarray, shape: Sequence[int], other: str) -> np.ndarray:
    """``(S, *shape)`` bool: segment ``s + 1`` of ``seg`` on the grid of ``affine`` (voxel-to-RAS) and ``shape``.

    Raises:
        InputError: a frame does not lie on the grid (other orientation, spacing or an off-voxel
            position) or falls outside it: the SEG does not share ``other``'s geometry.
    """
    out = np.zeros((len(seg.labels), *shape), dtype=bool)
    inverse = np.linalg.inv(lps_to_ras(affine))  # RAS affine -> LPS affine -> its inverse: LPS mm to voxels
    for k, frame in enumerate(seg.frames):
        found = _frame_indices(frame, inverse)
        if found is not None:
            origin, col_step, row_step = found
            corners = np.array([origin + col_step * a * (frame.columns - 1) + row_step * b * (frame.rows - 1)
                                for a in (0, 1) for b in (0, 1)])
            if (corners >= 0).all() and (corners < np.asarray(shape)).all():
                j, i = np.nonzero(seg.pixels[k])
                voxel = origin[:, None] + col_step[:, None] * i + row_step[:, None] * j
                out[seg.segment_of_frame[k] - 1, voxel[0], voxel[1], voxel[2]] = True
                continue
        raise InputError(f"{seg.path} does not lie on the voxel grid of {other} (frame {k + 1} at "
                         f"{np.round(frame.position, 3).tolist()} mm is off its voxels or outside it); "
                         "nothing is resampled: the SEG must reference the same source geometry")
    return out


def paint_segments(stack: np.ndarray, values: Sequence[int]) -> np.ndarray:
    """Label map (uint8) painting segment ``s`` with ``values[s]`` in order (later segments overwrite)."""
    out = np.zeros(stack.shape[1:], dtype=np.uint8)
    for mask, value in zip(stack, values, strict=True):
        out[mask] = value
    return out
