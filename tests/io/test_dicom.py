"""DICOM series input: a series written slice by slice with SimpleITK, read back and predicted."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medseg.errors import InputError
from medseg.inference.predict import find_inputs, predict
from medseg.io.dicom import dicom_series_to_nifti

SPACING = (0.8, 0.8, 2.5)


def _write_series(folder, volume_zyx: np.ndarray, series_uid: str = "1.2.826.0.1.3680043.2.1125.1") -> None:
    """Write ``volume_zyx`` (int16) as an axial CT series, one file per slice, LPS patient coordinates."""
    folder.mkdir(parents=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(volume_zyx.shape[0]):
        img = sitk.GetImageFromArray(volume_zyx[k : k + 1])
        img.SetSpacing(SPACING)
        img.SetOrigin((-12.0, -10.0, k * SPACING[2]))
        for tag, value in {"0008|0060": "CT", "0020|000e": series_uid, "0020|000d": "1.2.3", "0020|0013": str(k + 1),
                           "0020|0032": f"-12.0\\-10.0\\{k * SPACING[2]}", "0020|0037": "1\\0\\0\\0\\1\\0",
                           "0028|0030": f"{SPACING[1]}\\{SPACING[0]}", "0018|0050": str(SPACING[2]),
                           "0008|0018": f"{series_uid}.{k + 1}"}.items():
            img.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice_{k:03d}.dcm"))
        writer.Execute(img)


def test_series_converts_with_lps_to_ras_geometry(tmp_path):
    volume = np.arange(6 * 8 * 10, dtype=np.int16).reshape(6, 8, 10)  # (z, y, x)
    _write_series(tmp_path / "series", volume)
    nii = nib.load(dicom_series_to_nifti(tmp_path / "series", tmp_path / "s.nii.gz"))
    assert nii.shape == (10, 8, 6)
    np.testing.assert_array_equal(np.asarray(nii.dataobj), volume.transpose(2, 1, 0))
    # DICOM (LPS) origin (-12, -10, 0) is RAS (12, 10, 0); x and y axes flip sign, voxel sizes kept
    np.testing.assert_allclose(nii.affine[:3, 3], [12.0, 10.0, 0.0], atol=1e-4)
    np.testing.assert_allclose(np.diag(nii.affine)[:3], [-0.8, -0.8, 2.5], atol=1e-4)


def test_predict_on_a_series_folder(tiny_run, tiny_dataset, tmp_path):
    img = nib.load(tiny_dataset / "imagesTr/case_000.nii.gz")
    volume = np.asarray(img.dataobj).astype(np.int16).transpose(2, 1, 0)
    _write_series(tmp_path / "patient7", np.ascontiguousarray(volume))
    [out] = predict(tiny_run.run_dir, tmp_path / "patient7", tmp_path / "pred", device="cpu")
    assert out.name == "patient7.nii.gz"
    mask = nib.load(out)
    assert mask.shape == img.shape and mask.get_data_dtype() == np.uint8
    np.testing.assert_allclose(np.abs(np.diag(mask.affine)[:3]), SPACING, atol=1e-4)


def test_folder_without_images_or_series(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no .nii/.nii.gz files and no DICOM series"):
        find_inputs(tmp_path / "empty")


def test_two_series_in_one_folder_is_ambiguous(tmp_path):
    vol = np.zeros((3, 4, 4), dtype=np.int16)
    _write_series(tmp_path / "a", vol, "1.2.3.4.1")
    _write_series(tmp_path / "b", vol, "1.2.3.4.2")
    for f in (tmp_path / "b").iterdir():
        f.rename(tmp_path / "a" / f"b_{f.name}")
    with pytest.raises(InputError, match="holds 2 DICOM series"):
        dicom_series_to_nifti(tmp_path / "a", tmp_path / "x.nii.gz")
