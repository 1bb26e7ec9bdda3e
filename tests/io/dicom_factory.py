"""Test helper: DICOM CT/MR series written from a voxel array and its RAS affine (as a NIfTI phantom holds them).

Slice ``k`` of the array (voxel axes x, y, z) becomes one single-frame image: rows run along voxel
axis y, columns along x, ImagePositionPatient is voxel (0, 0, k) in LPS. The datasets are returned
before saving so that a test can break one thing (a position, an orientation, the image type) and
see the series refused for exactly that reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

SOP_CLASS = {"CT": "1.2.840.10008.5.1.4.1.1.2", "MR": "1.2.840.10008.5.1.4.1.1.4"}
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _ds(value: float) -> str:
    return f"{value:.10g}"


def _dataset(modality: str, study: dict[str, str], series_uid: str, k: int) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SOP_CLASS[modality]
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Phantom^Test", "PH001", "19700101", "O"
    ds.StudyInstanceUID, ds.StudyID, ds.AccessionNumber = study["uid"], "1", "A1"
    ds.StudyDate, ds.StudyTime, ds.ReferringPhysicianName = "20240101", "120000", ""
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.Modality = series_uid, 3, modality
    ds.SeriesDescription = f"phantom {modality}"
    ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = study["for"], ""
    ds.Manufacturer, ds.InstanceNumber = "medseg tests", k + 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "HU"
    ds.KVP, ds.AcquisitionNumber = "120", 1
    if modality == "MR":
        del ds.RescaleType
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "SE", "NONE", "", "3D"
        ds.EchoTime, ds.RepetitionTime, ds.EchoTrainLength = "10", "500", "1"
    return ds


def series_datasets(voxels: np.ndarray, affine: np.ndarray, modality: str = "CT", series_uid: str | None = None,
                    study: dict[str, str] | None = None) -> list[Dataset]:
    """One dataset per slice of ``voxels`` (x, y, z; integer values) placed by the RAS ``affine``."""
    study = study or {"uid": generate_uid(), "for": generate_uid()}
    series_uid = series_uid or generate_uid()
    lps = LPS @ np.asarray(affine, dtype=np.float64)
    col_spacing, row_spacing, thickness = np.linalg.norm(lps[:3, :3], axis=0)
    row_dir, col_dir = lps[:3, 0] / col_spacing, lps[:3, 1] / row_spacing
    out = []
    for k in range(voxels.shape[2]):
        ds = _dataset(modality, study, series_uid, k)
        ds.ImagePositionPatient = [_ds(v) for v in (lps @ [0, 0, k, 1])[:3]]
        ds.ImageOrientationPatient = [_ds(v) for v in (*row_dir, *col_dir)]
        ds.PixelSpacing = [_ds(row_spacing), _ds(col_spacing)]
        ds.SliceThickness = _ds(thickness)
        plane = np.ascontiguousarray(voxels[:, :, k].T.astype(np.int16))
        ds.Rows, ds.Columns = plane.shape
        ds.PixelData = plane.tobytes()
        out.append(ds)
    return out


def save(datasets: list[Dataset], folder: Path, shuffle_seed: int | None = 0) -> list[Path]:
    """Write ``datasets`` into ``folder`` as ``IM<n>`` files (in a shuffled order, as PACS exports name them)."""
    folder.mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng(shuffle_seed).permutation(len(datasets)) if shuffle_seed is not None \
        else np.arange(len(datasets))
    paths = []
    for n, i in enumerate(order):
        path = folder / f"IM{n:04d}"
        datasets[i].save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_series(folder: Path, voxels: np.ndarray, affine: np.ndarray, **kwargs) -> list[Dataset]:
    """:func:`series_datasets` then :func:`save`; returns the datasets (slice order)."""
    datasets = series_datasets(voxels, affine, **kwargs)
    save(datasets, folder)
    return datasets


def multiframe(datasets: list[Dataset], path: Path) -> Path:
    """The single-frame ``datasets`` converted by highdicom to one Legacy Converted Enhanced CT/MR file."""
    import highdicom as hd

    cls = hd.legacy.LegacyConvertedEnhancedCTImage if datasets[0].Modality == "CT" \
        else hd.legacy.LegacyConvertedEnhancedMRImage
    image = cls(legacy_datasets=datasets, series_instance_uid=generate_uid(), series_number=9,
                sop_instance_uid=generate_uid(), instance_number=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save_as(path)
    return path


def read(path: Path) -> Dataset:
    return pydicom.dcmread(path)


def rotation(axis: int, cos: float, sin: float) -> np.ndarray:
    """3x3 rotation by the angle with cosine ``cos`` and sine ``sin`` about patient ``axis`` (exact decimals)."""
    r = np.eye(3)
    i, j = [a for a in range(3) if a != axis]
    r[i, i], r[i, j], r[j, i], r[j, j] = cos, -sin, sin, cos
    return r


def affine_of(rot: np.ndarray, spacing: tuple[float, float, float], origin: tuple[float, float, float]) -> np.ndarray:
    """RAS affine with direction matrix ``rot`` (columns: voxel axes), ``spacing`` (mm) and ``origin``."""
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag(spacing)
    a[:3, 3] = origin
    return a


def assert_same_in_patient_space(a: np.ndarray, affine_a: np.ndarray, b: np.ndarray, affine_b: np.ndarray,
                                 atol: float = 1e-4) -> None:
    """``a`` and ``b`` hold the same voxels at the same patient positions, whatever their axis order and flips.

    ``a`` is permuted/flipped onto ``b``'s voxel axes (nibabel's orientation tools); then the affines must
    agree within ``atol`` mm and the arrays exactly.
    """
    import nibabel as nib

    transform = nib.orientations.ornt_transform(nib.orientations.io_orientation(affine_a),
                                                nib.orientations.io_orientation(affine_b))
    moved = nib.orientations.apply_orientation(a, transform)
    moved_affine = np.asarray(affine_a) @ nib.orientations.inv_ornt_aff(transform, a.shape)
    np.testing.assert_allclose(moved_affine, affine_b, atol=atol)
    np.testing.assert_array_equal(moved, b)
