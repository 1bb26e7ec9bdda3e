from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from medseg.data.synth import SynthConfig, synthesise_dataset
from medseg.errors import InputError


def test_layout_and_dataset_json(tiny_dataset):
    meta = json.loads((tiny_dataset / "dataset.json").read_text())
    assert meta["numTraining"] == 6 and meta["numTest"] == 2
    assert meta["labels"] == {"0": "background", "1": "organ", "2": "lesion"}
    for entry in meta["training"] + meta["test"]:
        assert (tiny_dataset / entry["image"]).is_file() and (tiny_dataset / entry["label"]).is_file()


def test_geometry_intensities_and_imbalance(tiny_dataset):
    img = nib.load(tiny_dataset / "imagesTr/case_000.nii.gz")
    lab = nib.load(tiny_dataset / "labelsTr/case_000.nii.gz")
    assert img.shape == (32, 32, 16) and lab.shape == img.shape
    np.testing.assert_allclose(img.header.get_zooms(), (0.8, 0.8, 2.5), rtol=1e-6)
    np.testing.assert_allclose(img.affine, lab.affine)
    assert img.get_data_dtype() == np.int16 and lab.get_data_dtype() == np.uint8
    data = np.asarray(img.dataobj)
    assert data.min() < -900 and data.max() > 300  # air and bone are both present
    labels = np.asarray(lab.dataobj)
    assert set(np.unique(labels)) <= {0, 1, 2}
    assert 0 < (labels == 2).mean() < 0.02  # lesions: the rare class


def test_every_third_case_is_stored_lps(tiny_dataset):
    codes = [nib.aff2axcodes(nib.load(tiny_dataset / f"imagesTr/case_{k:03d}.nii.gz").affine) for k in range(3)]
    assert codes == [("R", "A", "S"), ("R", "A", "S"), ("L", "P", "S")]


def test_same_seed_same_bytes(tmp_path):
    cfg = SynthConfig(train_cases=2, test_cases=1, size=24, seed=7)
    synthesise_dataset(tmp_path / "a", cfg)
    synthesise_dataset(tmp_path / "b", cfg)
    for f in sorted((tmp_path / "a").rglob("*.nii.gz")):
        assert f.read_bytes() == (tmp_path / "b" / f.relative_to(tmp_path / "a")).read_bytes()
    other = tmp_path / "c"
    synthesise_dataset(other, SynthConfig(train_cases=2, test_cases=1, size=24, seed=8))
    assert (other / "imagesTr/case_000.nii.gz").read_bytes() != (tmp_path / "a/imagesTr/case_000.nii.gz").read_bytes()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"train_cases": 0}, "--train-cases must be >= 1, got 0"),
    ({"size": 8}, "--size must be between 24 and 512 voxels, got 8"),
    ({"lesion_radius_mm": (5.0, 2.0)}, "--lesion-radius must satisfy 0 < min <= max"),
], ids=["no-cases", "too-small", "radius-order"])
def test_bad_config(tmp_path, kwargs, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        synthesise_dataset(tmp_path, SynthConfig(**kwargs))
    assert not (tmp_path / "dataset.json").exists()
