"""A checked DICOM series as a volume: voxels (highdicom) and the RAS affine (computed here, once).

Voxel axes are (column, row, slice), slices ascending along the plane normal (row x column
direction), the order dicom2nifti and SimpleITK use. The affine is built from the checked headers
by :func:`series_affine`; :func:`lps_to_ras` is the one place where DICOM's LPS patient coordinates
become NIfTI's RAS. The voxels come from highdicom's volume API (modality LUT / rescale applied), and
its own geometry is compared with ours before anything is returned, so a disagreement between the two
readers is an error, not a silently flipped volume.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medseg.errors import InputError
from medseg.io.dicom_checks import SLICE_GAP_ATOL_MM, SLICE_GAP_RTOL, slice_normal
from medseg.io.dicom_libs import quiet_dicom_libraries, require_highdicom, require_pydicom
from medseg.io.dicom_series import DicomSeries

__all__ = ["LPS_TO_RAS", "lps_to_ras", "plane_affine", "series_affine", "read_series_volume", "write_series_nifti"]

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_GEOMETRY_ATOL_MM = 1e-3


def lps_to_ras(affine: np.ndarray) -> np.ndarray:
    """A voxel-to-LPS affine as voxel-to-RAS (x and y change sign); the same map takes RAS back to LPS."""
    return LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)


def plane_affine(orientation: Sequence[float], pixel_spacing: Sequence[float], first_position: Sequence[float],
                 step: Sequence[float]) -> np.ndarray:
    """``(4, 4)`` voxel-to-RAS affine of a stack of planes, voxel axes (column, row, slice).

    Columns of the linear part: row direction x column spacing, column direction x row spacing, and
    ``step`` (LPS mm from one slice to the next); translation: the first slice's ImagePositionPatient.
    ``pixel_spacing`` is DICOM's (between rows, between columns).
    """
    o = np.asarray(orientation, dtype=np.float64)
    lps = np.eye(4)
    lps[:3, 0] = o[:3] * float(pixel_spacing[1])
    lps[:3, 1] = o[3:6] * float(pixel_spacing[0])
    lps[:3, 2] = step
    lps[:3, 3] = first_position
    return lps_to_ras(lps)


def series_affine(series: DicomSeries) -> np.ndarray:
    """``(4, 4)`` voxel-to-RAS affine of a qualifying series (:func:`plane_affine`), the step being the mean
    one from the first to the last slice (as dicom2nifti)."""
    if not series.qualifies:
        raise InputError(f"series {series.uid}: {series.reason}")
    first, last = series.slices[0], series.slices[-1]
    step = (np.asarray(last.position) - np.asarray(first.position)) / (len(series.slices) - 1)
    return plane_affine(first.orientation, first.pixel_spacing, first.position, step)


def _highdicom_volume(series: DicomSeries) -> object:
    """highdicom's :class:`~highdicom.Volume` of the series (voxels after the modality transform, float32)."""
    hd = require_highdicom()
    pydicom = require_pydicom()
    atol = SLICE_GAP_ATOL_MM + SLICE_GAP_RTOL * float(series.slice_spacing or 0.0)
    if series.multiframe:
        return hd.imread(str(series.files[0])).get_volume(dtype=np.float32, atol=atol)
    datasets = [pydicom.dcmread(p) for p in series.files]
    return hd.get_volume_from_series(datasets, dtype=np.float32, atol=atol, orientation_tol=1e-4)


def read_series_volume(series: DicomSeries) -> tuple[np.ndarray, np.ndarray]:
    """``(voxels, affine)`` of a qualifying series.

    Returns:
        ``voxels``: float32 array of shape (columns, rows, slices), modality LUT / rescale applied;
        ``affine``: its ``(4, 4)`` voxel-to-RAS matrix (:func:`series_affine`).

    Raises:
        InputError: the series does not qualify, or its pixel data cannot be decoded.
        RuntimeError: highdicom's geometry of the voxels disagrees with the headers' (a reader bug).
    """
    affine = series_affine(series)
    try:
        with quiet_dicom_libraries():
            volume = _highdicom_volume(series)
            array = np.asarray(volume.array)  # (slice, row, column) in highdicom's order
    except (ValueError, RuntimeError, NotImplementedError, AttributeError) as exc:
        raise InputError(f"series {series.uid} ({series.files[0].parent}): pixel data cannot be read "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})") from None
    hd_lps = np.asarray(volume.affine, dtype=np.float64)
    if hd_lps[:3, 0] @ slice_normal(series.slices[0].orientation) < 0:  # highdicom stacks along -normal
        array = array[::-1]
        hd_lps[:3, 3] += hd_lps[:3, 0] * (array.shape[0] - 1)
        hd_lps[:3, 0] *= -1
    voxels = np.ascontiguousarray(array.transpose(2, 1, 0), dtype=np.float32)
    theirs = lps_to_ras(hd_lps[:, [2, 1, 0, 3]])
    if voxels.shape != series.shape or not np.allclose(theirs, affine, atol=_GEOMETRY_ATOL_MM):
        raise RuntimeError(f"series {series.uid}: highdicom's volume geometry {theirs.round(4).tolist()} "
                           f"{voxels.shape} differs from the headers' {affine.round(4).tolist()} {series.shape}")
    return voxels, affine


def write_series_nifti(series: DicomSeries, out_path: str | Path) -> Path:
    """Write a qualifying series as a NIfTI volume (float32, qform and sform = the RAS affine)."""
    import nibabel as nib

    voxels, affine = read_series_volume(series)
    img = nib.Nifti1Image(voxels, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(out_path))
    return Path(out_path)
