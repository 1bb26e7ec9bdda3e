"""A checked series as a volume: voxels and RAS affine against dicom2nifti, SimpleITK and highdicom, in every
orientation; a multi-frame file equals its single-frame series; pydicom's bundled CT."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pydicom.data
import pytest

from medseg.errors import InputError
from medseg.io.dicom_series import discover_series
from medseg.io.dicom_volume import lps_to_ras, read_series_volume, series_affine, write_series_nifti
from tests.io.dicom_factory import (
    affine_of,
    assert_same_in_patient_space,
    multiframe,
    rotation,
    series_datasets,
    write_series,
)

SPACING = (0.8, 0.6, 2.5)
ORIGIN = (10.0, -20.0, 30.0)
# direction matrices (columns: voxel axes x, y, z in RAS); cosines from 3-4-5 triangles are exact decimals
ORIENTATIONS = {
    "axial-ras": np.eye(3),
    "axial-lps": np.diag([-1.0, -1.0, 1.0]),  # as a NIfTI stored LPS (the synthetic data has some)
    "axial-feet-first": np.diag([1.0, 1.0, -1.0]),  # slices listed head to feet
    "sagittal": np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]),
    "coronal": np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]]),
    "oblique": rotation(0, 0.8, 0.6) @ rotation(2, 0.6, 0.8),
    "oblique-lps": np.diag([-1.0, -1.0, 1.0]) @ rotation(1, 0.96, 0.28),
}


def _voxels() -> np.ndarray:
    return np.random.default_rng(0).integers(-1000, 1000, (10, 8, 6)).astype(np.int16)


@pytest.fixture(params=sorted(ORIENTATIONS))
def phantom_series(request, tmp_path):
    """A NIfTI phantom (voxels, affine) written as a DICOM series in ``tmp_path/series``."""
    vox, aff = _voxels(), affine_of(ORIENTATIONS[request.param], SPACING, ORIGIN)
    write_series(tmp_path / "series", vox, aff)
    [series] = discover_series(tmp_path / "series")
    return vox, aff, series, tmp_path


def test_volume_equals_the_nifti_phantom_in_patient_space(phantom_series):
    vox, aff, series, _ = phantom_series
    voxels, affine = read_series_volume(series)
    assert voxels.shape == series.shape == (10, 8, 6)
    assert_same_in_patient_space(voxels, affine, vox.astype(np.float32), aff, atol=1e-6)


def test_affine_equals_dicom2nifti(phantom_series):
    dicom2nifti = pytest.importorskip("dicom2nifti")
    _, _, series, tmp = phantom_series
    dicom2nifti.dicom_series_to_nifti(str(tmp / "series"), str(tmp / "d2n.nii.gz"), reorient_nifti=False)
    ref = nib.load(tmp / "d2n.nii.gz")
    voxels, affine = read_series_volume(series)
    assert_same_in_patient_space(voxels, affine, np.asarray(ref.dataobj).astype(np.float32), ref.affine)
    if not np.allclose(ref.affine[:3, 2] @ affine[:3, 2], -2.5 ** 2):  # same slice order: the very same matrix
        np.testing.assert_allclose(affine, ref.affine, atol=1e-4)


def test_affine_equals_simpleitk(phantom_series):
    import SimpleITK as sitk

    _, _, series, tmp = phantom_series
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp / "series")))
    image = reader.Execute()
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    voxels, affine = read_series_volume(series)
    assert_same_in_patient_space(voxels, affine, sitk.GetArrayFromImage(image).transpose(2, 1, 0).astype(np.float32),
                                 lps_to_ras(lps))


def test_affine_equals_highdicom(phantom_series):
    import highdicom as hd

    _, _, series, _ = phantom_series
    ref = hd.get_volume_from_series([pydicom.dcmread(p) for p in series.files], dtype=np.float32).to_nibabel()
    voxels, affine = read_series_volume(series)
    assert_same_in_patient_space(voxels, affine, np.asarray(ref.dataobj), ref.affine)


def test_multiframe_file_reads_as_its_single_frame_series(tmp_path):
    vox, aff = _voxels(), affine_of(ORIENTATIONS["oblique"], SPACING, ORIGIN)
    datasets = series_datasets(vox, aff)
    write_series(tmp_path / "single", vox, aff)
    [single] = discover_series(tmp_path / "single")
    [enhanced] = discover_series(multiframe(datasets, tmp_path / "enhanced.dcm"))
    v1, a1 = read_series_volume(single)
    v2, a2 = read_series_volume(enhanced)
    np.testing.assert_array_equal(v1, v2)
    np.testing.assert_allclose(a1, a2, atol=1e-9)


def test_pydicom_bundled_ct_series_against_dicom2nifti(tmp_path):
    dicom2nifti = pytest.importorskip("dicom2nifti")
    folder = Path(pydicom.data.__file__).parent / "test_files" / "dicomdirtests" / "98892001" / "CT5N"
    [series] = discover_series(folder)
    out = write_series_nifti(series, tmp_path / "ct.nii.gz")
    dicom2nifti.dicom_series_to_nifti(str(folder), str(tmp_path / "d2n.nii.gz"), reorient_nifti=False)
    mine, ref = nib.load(out), nib.load(tmp_path / "d2n.nii.gz")
    assert mine.shape == (16, 16, 5)
    # HU: stored values x RescaleSlope + RescaleIntercept, slices ascending in z (feet to head)
    np.testing.assert_allclose(mine.affine, ref.affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(mine.dataobj), np.asarray(ref.dataobj))
    np.testing.assert_allclose(mine.affine[:3, 3], [72.199997, 143.0, -1.2375], atol=1e-5)  # LPS origin, x/y negated
    assert mine.get_qform(coded=True)[1] == 1 and mine.get_sform(coded=True)[1] == 1


def test_a_refused_series_has_no_affine(tmp_path):
    datasets = series_datasets(_voxels(), affine_of(np.eye(3), SPACING, ORIGIN))
    del datasets[2]
    for k, d in enumerate(datasets):
        d.save_as(tmp_path / f"{k}.dcm", enforce_file_format=True)
    [series] = discover_series(tmp_path)
    with pytest.raises(InputError, match=r"series .*: missing slices"):
        series_affine(series)
