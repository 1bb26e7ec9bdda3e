from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from medseg.data.synth import SynthConfig, synthesise_dataset
from medseg.errors import InputError


def test_layout_and_dataset_json(tiny_dataset):
    meta = json.loads((tiny_dataset / "dataset.json").read_text(encoding="utf-8"))
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


def _voxels(path):
    return np.asarray(nib.load(path).dataobj)


def test_default_dataset_is_unchanged(tmp_path):
    """Voxels, affines and dataset.json of a default dataset, hashed when the options were added."""
    import hashlib

    root = tmp_path / "d"
    synthesise_dataset(root, SynthConfig(train_cases=2, test_cases=1, size=24, seed=7))
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.nii.gz")):
        img = nib.load(f)
        h.update(np.asarray(img.dataobj).tobytes())
        h.update(img.affine.tobytes())
    assert h.hexdigest() == "2a1a742a22792a2b874b46b5dd8b1178987b3fedc90e1e167fa936302c2675bf"
    assert hashlib.sha256((root / "dataset.json").read_bytes()).hexdigest() == (
        "de5a3be50915e32c8fc957ada8747037dcfafda574b652ca89012597121fb7df")


def test_vessels_leave_the_rest_of_the_phantom_unchanged(tmp_path):
    base, ves = tmp_path / "base", tmp_path / "ves"
    synthesise_dataset(base, SynthConfig(train_cases=2, test_cases=0, size=48, seed=3))
    synthesise_dataset(ves, SynthConfig(train_cases=2, test_cases=0, size=48, seed=3, vessels=True))
    assert json.loads((ves / "dataset.json").read_text(encoding="utf-8"))["labels"]["3"] == "vessel"
    for k in range(2):
        lab0, lab1 = _voxels(base / f"labelsTr/case_{k:03d}.nii.gz"), _voxels(ves / f"labelsTr/case_{k:03d}.nii.gz")
        img0, img1 = _voxels(base / f"imagesTr/case_{k:03d}.nii.gz"), _voxels(ves / f"imagesTr/case_{k:03d}.nii.gz")
        vessel = lab1 == 3
        assert vessel.sum() > 20
        assert (lab0[vessel] == 0).all()  # drawn beside the organ, never over it
        np.testing.assert_array_equal(lab1[~vessel], lab0[~vessel])
        np.testing.assert_array_equal(img1[~vessel], img0[~vessel])
        assert img1[vessel].mean() > img0[vessel].mean() + 100  # contrast-filled
        # thin: no vessel voxel is more than 2 voxels in-plane from the tube's surface (3-4 voxels across)
        from scipy import ndimage

        assert ndimage.distance_transform_edt(vessel, sampling=(1, 1, 100)).max() <= 2.5
        organ = lab0 > 0
        gap = ndimage.distance_transform_edt(~organ, sampling=(0.8, 0.8, 2.5))[vessel].min()
        assert gap < 5.0  # beside the organ (mm)


@pytest.mark.parametrize("layout", ["msd", "nnunet"])
def test_channels_layouts_and_decoy(tmp_path, layout):
    from medseg.data.check import check_dataset
    from medseg.data.datalist import load_dataset

    root = tmp_path / layout
    synthesise_dataset(root, SynthConfig(train_cases=2, test_cases=1, size=32, seed=4, channels=2,
                                         decoy_channel=True, layout=layout))
    meta = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    if layout == "msd":
        assert meta["modality"] == {"0": "noise", "1": "CT"} and meta["tensorImageSize"] == "4D"
        image = _voxels(root / "imagesTr/case_000.nii.gz")
        assert image.shape == (32, 32, 16, 2)  # channels last
        channels = np.moveaxis(image, -1, 0)
    else:
        assert meta["channel_names"] == {"0": "noise", "1": "CT"}
        assert meta["labels"] == {"background": 0, "organ": 1, "lesion": 2}
        assert meta["numTraining"] == 2 and meta["file_ending"] == ".nii.gz" and "training" not in meta
        assert sorted(p.name for p in (root / "imagesTr").iterdir()) == [
            "case_000_0000.nii.gz", "case_000_0001.nii.gz", "case_001_0000.nii.gz", "case_001_0001.nii.gz"]
        assert sorted(p.name for p in (root / "imagesTs").iterdir()) == ["case_002_0000.nii.gz",
                                                                         "case_002_0001.nii.gz"]
        assert sorted(p.name for p in (root / "labelsTs").iterdir()) == ["case_002.nii.gz"]
        channels = np.stack([_voxels(root / f"imagesTr/case_000_000{c}.nii.gz") for c in range(2)])
    label = _voxels(root / "labelsTr/case_000.nii.gz")
    organ = label > 0
    # the decoy shows nothing: its organ mean is within 5 standard errors of its background mean
    noise = channels[0].astype(float)
    assert abs(noise[organ].mean() - noise[~organ].mean()) < 5 * noise.std() / np.sqrt(organ.sum())
    assert channels[1][organ].mean() - channels[1][~organ].mean() > 300  # CT: organ vs mostly air
    report = check_dataset(root)
    assert report.ok, [str(p) for p in report.errors]
    ds = load_dataset(root)
    assert ds.layout == layout and ds.channel_names == {0: "noise", 1: "CT"} and len(ds.test) == 1


def test_mr_is_zero_outside_the_body_only(tmp_path):
    root = tmp_path / "mr"
    synthesise_dataset(root, SynthConfig(train_cases=1, test_cases=0, size=32, seed=5, modality="MR", channels=2))
    meta = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    assert meta["modality"] == {"0": "T1", "1": "T2"} and meta["name"] == "SyntheticAbdomenMR"
    image = np.moveaxis(_voxels(root / "imagesTr/case_000.nii.gz"), -1, 0)
    label = _voxels(root / "labelsTr/case_000.nii.gz")
    for ch in image:
        assert ch.min() == 0
        assert (ch[:2, :2] == 0).all()  # the corners are air
        assert (ch[label > 0] > 0).all() and (ch[16, 16] > 0).all()  # the body, centre included, is nonzero
    # the same nonzero region (the body) in both contrasts, and a different contrast inside it
    np.testing.assert_array_equal(image[0] != 0, image[1] != 0)
    assert abs(np.corrcoef(image[0][label > 0], image[1][label > 0])[0, 1]) < 0.9
    assert check_ok(root)


def check_ok(root) -> bool:
    from medseg.data.check import check_dataset

    report = check_dataset(root)
    assert report.ok, [str(p) for p in report.errors]
    return True


@pytest.mark.parametrize("layout", ["msd", "nnunet"])
def test_regions(tmp_path, layout):
    from scipy import ndimage

    from medseg.data.datalist import load_dataset

    root = tmp_path / layout
    synthesise_dataset(root, SynthConfig(train_cases=2, test_cases=1, size=48, seed=6, regions=True, layout=layout,
                                         lesions=(2, 2)))
    meta = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    assert meta["labels"] == {"background": 0, "whole": [1, 2, 3], "core": [2, 3], "lesion": [3]}
    assert meta["regions_class_order"] == [1, 2, 3]
    label = _voxels(root / "labelsTr/case_000.nii.gz")
    assert set(np.unique(label)) == {0, 1, 2, 3}
    whole, core = label > 0, label >= 2
    # the rim (1) wraps the core: no core voxel touches the outside of the organ
    assert not (ndimage.binary_dilation(core & (label == 2)) & ~whole).any()
    assert (label == 1).sum() > 0.2 * whole.sum()
    spec = load_dataset(root).label_spec
    assert spec.regions == {"whole": (1, 2, 3), "core": (2, 3), "lesion": (3,)}
    assert spec.regions_class_order == (1, 2, 3)
    assert check_ok(root)


def test_lesion_count_and_radius_vary_the_imbalance(tmp_path):
    from scipy import ndimage

    def lesion_voxels(name, **kw):
        synthesise_dataset(tmp_path / name, SynthConfig(train_cases=3, test_cases=0, size=48, seed=9, lps_every=0,
                                                        **kw))
        labels = [_voxels(tmp_path / name / f"labelsTr/case_{k:03d}.nii.gz") for k in range(3)]
        return labels, sum(int((lab == 2).sum()) for lab in labels)

    labels, none = lesion_voxels("none", lesions=(0, 0))
    assert none == 0
    labels, _ = lesion_voxels("five", lesions=(5, 5), lesion_radius_mm=(1.0, 1.2))
    for lab in labels:  # tiny lesions rarely touch: 5 spheres, at most 5 components
        assert 3 <= ndimage.label(lab == 2, np.ones((3, 3, 3)))[1] <= 5
    _, small = lesion_voxels("small", lesions=(2, 2), lesion_radius_mm=(1.5, 2.0))
    _, large = lesion_voxels("large", lesions=(2, 2), lesion_radius_mm=(5.0, 6.0))
    assert large > 5 * small > 0


@pytest.mark.parametrize(("flags", "message"), [
    (["--layout", "bids"], "--layout must be one of msd, nnunet, got 'bids'"),
    (["--modality", "PET"], "--modality must be one of CT, MR, got 'PET'"),
    (["--channels", "0"], "--channels must be between 1 and 8, got 0"),
    (["--decoy-channel"], "--decoy-channel needs --channels >= 2, got 1"),
    (["--lesions", "3", "1"], "--lesions must satisfy 0 <= min <= max <= 50, got (3, 1)"),
    (["--noise", "-1"], "--noise must be >= 0, got -1.0"),
], ids=["layout", "modality", "channels", "decoy", "lesions", "noise"])
def test_cli_flags_are_validated(tmp_path, capsys, flags, message):
    from medseg.cli.main import main

    assert main(["synth", str(tmp_path / "out"), "--size", "24", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_cli_writes_the_requested_variant(tmp_path, capsys):
    from medseg.cli.main import main

    out = tmp_path / "ds"
    assert main(["synth", str(out), "--train-cases", "2", "--test-cases", "1", "--size", "24", "--layout", "nnunet",
                 "--channels", "3", "--modality", "mr", "--regions", "--vessels", "--lesions", "1", "2"]) == 0
    assert "2 training and 1 test cases (nnunet layout)" in capsys.readouterr().out
    meta = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
    assert meta["channel_names"] == {"0": "T1", "1": "T2", "2": "FLAIR"}
    assert meta["labels"]["vessel"] == 4 and meta["regions_class_order"] == [1, 2, 3, 4]
    assert meta["synth_options"]["lesions"] == [1, 2]
    assert len(list((out / "imagesTr").glob("*.nii.gz"))) == 6
    assert check_ok(out)
