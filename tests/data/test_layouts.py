"""The two dataset layouts hold the same data: MSD (4D files, channels last) and nnU-Net v2 (one file per channel).

The same seed writes the same phantoms in both; they must read, fingerprint, plan and pre-process
to identical arrays, and a missing or extra channel file must be refused naming the case and file.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from medseg.cli.main import main
from medseg.data.datalist import load_dataset
from medseg.data.synth import SynthConfig, synthesise_dataset
from medseg.errors import InputError

CFG = {"train_cases": 3, "test_cases": 1, "size": 24, "spacing": (2.0, 2.0, 3.0), "seed": 11, "channels": 2,
       "modality": "MR"}


@pytest.fixture(scope="module")
def both_layouts(tmp_path_factory):
    root = tmp_path_factory.mktemp("layouts")
    for layout in ("msd", "nnunet"):
        synthesise_dataset(root / layout, SynthConfig(layout=layout, **CFG))
    return root


def test_same_cases_fingerprint_and_plan(both_layouts):
    from medseg.plan import plan_dataset

    msd, nnunet = load_dataset(both_layouts / "msd"), load_dataset(both_layouts / "nnunet")
    assert (msd.layout, nnunet.layout) == ("msd", "nnunet")
    assert msd.channel_names == nnunet.channel_names == {0: "T1", 1: "T2"}
    assert [e["case_id"] for e in msd.training] == [e["case_id"] for e in nnunet.training] == [
        "case_000", "case_001", "case_002"]
    assert isinstance(msd.training[0]["image"], str)
    assert [p.rsplit("/", 1)[1] for p in nnunet.training[0]["image"]] == ["case_000_0000.nii.gz",
                                                                        "case_000_0001.nii.gz"]
    assert nnunet.test[0]["label"].endswith("labelsTs/case_003.nii.gz")
    fp_msd, plan_msd, _ = plan_dataset(msd)
    fp_nn, plan_nn, _ = plan_dataset(nnunet)
    assert fp_msd == fp_nn  # exact: both layouts hold the same voxels
    assert plan_msd == plan_nn
    assert fp_msd["orientations"] == ["RAS", "RAS", "LPS"]


@pytest.mark.parametrize("case", [0, 2], ids=["ras", "lps"])
def test_preprocessing_gives_the_same_tensors(both_layouts, case):
    from monai.transforms import Compose

    from medseg.plan import plan_dataset
    from medseg.preprocessing.pipeline import preprocessing

    msd, nnunet = load_dataset(both_layouts / "msd"), load_dataset(both_layouts / "nnunet")
    _, plan, _ = plan_dataset(msd)
    pre = Compose(preprocessing(plan))
    a, b = pre(dict(msd.training[case])), pre(dict(nnunet.training[case]))
    assert a["image"].shape[0] == 2 and a["image"].shape == b["image"].shape
    torch.testing.assert_close(a["image"].as_tensor(), b["image"].as_tensor(), rtol=0, atol=0)
    torch.testing.assert_close(a["label"].as_tensor(), b["label"].as_tensor(), rtol=0, atol=0)
    # the two channels are different contrasts, not one file read twice
    assert not torch.equal(a["image"][0], a["image"][1])


def _copy(both_layouts, tmp_path, layout="nnunet"):
    dst = tmp_path / layout
    shutil.copytree(both_layouts / layout, dst)
    return dst


def test_check_refuses_a_missing_channel_file(both_layouts, tmp_path, capsys):
    root = _copy(both_layouts, tmp_path)
    (root / "imagesTr/case_001_0001.nii.gz").unlink()
    assert main(["check", str(root)]) == 2
    err = capsys.readouterr().err
    assert "imagesTr/case_001_0001.nii.gz: channel file missing (2 channel(s) declared)" in err
    with pytest.raises(InputError, match=r"case 'case_001' lacks channel file case_001_0001\.nii\.gz"):
        load_dataset(root)


def test_check_refuses_an_extra_channel_file(both_layouts, tmp_path, capsys):
    root = _copy(both_layouts, tmp_path)
    shutil.copy(root / "imagesTr/case_001_0001.nii.gz", root / "imagesTr/case_001_0002.nii.gz")
    with pytest.raises(InputError, match=r"case 'case_001' has an extra channel file case_001_0002\.nii\.gz"):
        load_dataset(root)
    assert main(["check", str(root)]) == 2
    assert "case_001_0002.nii.gz" in capsys.readouterr().err


def test_check_refuses_a_4d_file_with_a_channel_missing(both_layouts, tmp_path, capsys):
    import nibabel as nib

    root = _copy(both_layouts, tmp_path, "msd")
    path = root / "imagesTr/case_001.nii.gz"
    img = nib.load(path)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[..., :1], img.affine), path)
    assert main(["check", str(root)]) == 2
    err = capsys.readouterr().err
    assert ("imagesTr/case_001.nii.gz: image should be 4D with 2 channels in the 4th dimension "
            "(dataset.json declares that many) [seen: shape (24, 24, 12, 1)]") in err


def test_channel_files_load_correctly_from_threads(both_layouts):
    """CacheDataset fills its cache from a thread pool: every case keeps both channel files."""
    from concurrent.futures import ThreadPoolExecutor

    from medseg.plan import plan_dataset
    from medseg.preprocessing.pipeline import val_transforms

    ds = load_dataset(both_layouts / "nnunet")
    _, plan, _ = plan_dataset(ds)
    pipeline = val_transforms(plan)
    with ThreadPoolExecutor(2) as pool:
        shapes = list(pool.map(lambda e: tuple(pipeline(dict(e))["image"].shape), ds.training * 8))
    assert {s[0] for s in shapes} == {2}
