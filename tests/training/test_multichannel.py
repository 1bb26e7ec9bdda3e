"""Multi-channel inputs are read channel by channel: a decoy-noise channel 0 and the anatomy in channel 1.

The same phantoms in both layouts (MSD: one 4D file per case; nnU-Net v2: CASE_0000 / CASE_0001).
A model can only reach a good foreground Dice on the held-out cases by reading channel 1, and its
Dice collapses when channel 1 is replaced by noise.
"""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest

from medseg.cli.main import main
from medseg.data.synth import SynthConfig, synthesise_dataset
from medseg.inference.predict import predict

pytestmark = pytest.mark.slow

DATA = {"train_cases": 10, "test_cases": 2, "size": 32, "spacing": (3.0, 3.0, 3.0), "seed": 5, "channels": 2,
        "decoy_channel": True}
TEST_CASES = ["case_010", "case_011"]


def _dice(pred_path, gt_path) -> float:
    pred = np.asarray(nib.load(pred_path).dataobj) > 0
    gt = np.asarray(nib.load(gt_path).dataobj) > 0
    return float(2 * (pred & gt).sum() / (pred.sum() + gt.sum()))


def _train(layout, tmp_path_factory, train_args):
    from medseg.training.train import TrainConfig, train

    base = tmp_path_factory.mktemp(f"multichannel_{layout}")
    synthesise_dataset(base / "data", SynthConfig(layout=layout, **DATA))
    result = train(TrainConfig(data=str(base / "data"), out=str(base / "run"),
                               tracking_uri=f"sqlite:///{base / 'mlflow.db'}", experiment="multichannel", **train_args))
    return base / "data", result


@pytest.fixture(scope="module")
def msd_run(tmp_path_factory, learning_train_args):
    return _train("msd", tmp_path_factory, learning_train_args)


@pytest.fixture(scope="module")
def nnunet_run(tmp_path_factory, learning_train_args):
    return _train("nnunet", tmp_path_factory, learning_train_args)


@pytest.mark.parametrize("layout", ["msd", "nnunet"])
def test_learns_from_channel_1(layout, request, tmp_path):
    data, result = request.getfixturevalue(f"{layout}_run")
    written = predict(result.run_dir, data / "imagesTs", tmp_path / "pred", device="cpu")
    assert sorted(p.name for p in written) == [f"{c}.nii.gz" for c in TEST_CASES]
    assert sorted(p.name for p in (tmp_path / "pred").glob("*.nii.gz")) == [f"{c}.nii.gz" for c in TEST_CASES]
    for path in written:
        assert _dice(path, data / "labelsTs" / path.name) >= 0.7, (layout, path.name)


def test_noise_in_channel_1_destroys_the_prediction(nnunet_run, tmp_path):
    data, result = nnunet_run
    inputs = tmp_path / "in"
    inputs.mkdir()
    cid = TEST_CASES[0]
    shutil.copy(data / "imagesTs" / f"{cid}_0000.nii.gz", inputs / f"{cid}_0000.nii.gz")
    shutil.copy(data / "imagesTs" / f"{cid}_0000.nii.gz", inputs / f"{cid}_0001.nii.gz")  # the decoy, twice
    [out] = predict(result.run_dir, inputs, tmp_path / "pred", device="cpu")
    assert _dice(out, data / "labelsTs" / f"{cid}.nii.gz") < 0.3


def test_predict_refuses_a_case_without_its_second_channel(nnunet_run, tmp_path, capsys):
    data, result = nnunet_run
    inputs = tmp_path / "in"
    shutil.copytree(data / "imagesTs", inputs)
    (inputs / "case_011_0001.nii.gz").unlink()
    code = main(["predict", "--model", str(result.run_dir), "--input", str(inputs), "--output",
                 str(tmp_path / "pred"), "--device", "cpu"])
    assert code == 2
    err = capsys.readouterr().err
    assert "case 'case_011' lacks channel file case_011_0001.nii.gz (2 channel(s) expected)" in err
    assert not (tmp_path / "pred").exists() or not any((tmp_path / "pred").iterdir())  # refused before writing
