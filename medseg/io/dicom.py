"""DICOM series input: a folder holding one CT/MR series, read with SimpleITK (GDCM).

The series is converted once to a NIfTI file (SimpleITK maps DICOM's LPS patient coordinates to
the NIfTI RAS affine), so the rest of the pipeline, and the written mask, work on NIfTI.
"""

from __future__ import annotations

from pathlib import Path

from medseg.errors import InputError

__all__ = ["dicom_series_ids", "dicom_series_to_nifti"]


def dicom_series_ids(folder: str | Path) -> list[str]:
    """Series instance UIDs found directly in ``folder`` (empty when it holds no DICOM series)."""
    import SimpleITK as sitk

    return list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))


def dicom_series_to_nifti(folder: str | Path, out_path: str | Path) -> Path:
    """Write the single DICOM series of ``folder`` as a NIfTI volume at ``out_path``.

    Raises:
        InputError: no series, several series (the folder is ambiguous), or unreadable slices.
    """
    import SimpleITK as sitk

    ids = dicom_series_ids(folder)
    if not ids:
        raise InputError(f"{folder}: no DICOM series found")
    if len(ids) > 1:
        raise InputError(f"{folder}: holds {len(ids)} DICOM series ({', '.join(ids)}); point at a folder with one")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), ids[0]))
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"{folder}: DICOM series cannot be read ({str(exc).strip().splitlines()[-1][:200]})") from None
    if image.GetDimension() != 3:
        raise InputError(f"{folder}: expected a 3D series, got {image.GetDimension()}D")
    sitk.WriteImage(image, str(out_path))
    return Path(out_path)
