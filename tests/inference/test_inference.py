"""Inference beyond one model: mirroring TTA, ensembles, saved probabilities, learned post-processing."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch

from medseg.cli.main import main
from medseg.data.datalist import LabelSpec
from medseg.inference.postprocess import apply_postprocessing, decide_postprocessing
from medseg.inference.predict import mirrored_inference
from medseg.plan.planner import ChannelNorm, NetworkPlan, Plan
from tests.conftest import TINY_TRAIN


def _plan(names: dict[int, str]) -> Plan:
    return Plan(spacing=(1.0, 1.0, 1.0), patch_size=(16, 16, 16), batch_size=2, samples_per_case=1,
                network=NetworkPlan(), normalization=(ChannelNorm("zscore"),), class_ratios=(1.0,) * len(names),
                label_spec=LabelSpec(names))


def test_tta_is_the_mean_over_the_eight_mirrorings():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 3, 3, padding=1), torch.nn.Conv3d(3, 3, 3, padding=1)).eval()
    x = torch.randn(1, 1, 6, 7, 8)
    direct = lambda t, n: n(t)  # noqa: E731 - the identity "inferer"
    softmax = lambda t: torch.softmax(t, 1)  # noqa: E731
    # the 8 subsets of the spatial axes {2, 3, 4}, written out
    subsets = [(), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)]
    expected = sum(torch.flip(softmax(net(torch.flip(x, s))), s) if s else softmax(net(x)) for s in subsets) / 8
    with torch.no_grad():
        got = mirrored_inference(net, x, direct, softmax, tta=True)
        plain = mirrored_inference(net, x, direct, softmax, tta=False)
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(got, plain)  # the network is not mirror-symmetric: TTA changes the output


def _blobs(shape, centres, radius):
    zz, yy, xx = np.indices(shape)
    out = np.zeros(shape, bool)
    for c in centres:
        out |= (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= radius**2
    return out


def test_postprocessing_is_adopted_only_where_validation_says_it_helps():
    """Class 1: one organ plus a stray island in every prediction -> keeping the largest component helps.
    Class 2: two real lesions per case -> keeping the largest component would delete one, so it is not adopted."""
    shape = (32, 32, 32)
    pairs = []
    for shift in range(3):
        gt = np.zeros(shape, np.int16)
        gt[_blobs(shape, [(16, 16, 10 + shift)], 6)] = 1
        gt[_blobs(shape, [(5, 5, 25), (26, 26, 26)], 2)] = 2
        pred = gt.copy()
        pred[_blobs(shape, [(3, 28, 3)], 2)] = 1  # stray island of class 1
        pairs.append((pred.astype(np.uint8), gt, (1.0, 1.0, 1.0)))
    plan = _plan({0: "background", 1: "organ", 2: "lesion"})
    decision = decide_postprocessing(pairs, plan)
    assert decision["structures"]["1"] == {"largest_component": True}
    assert "2" not in decision["structures"]
    assert decision["dice_after"]["1"] > decision["dice_before"]["1"]
    assert decision["dice_after"]["2"] == decision["dice_before"]["2"] == 1.0
    cleaned = apply_postprocessing(pairs[0][0], decision, plan, (1.0, 1.0, 1.0))
    np.testing.assert_array_equal(cleaned, pairs[0][1])  # the island is gone, both lesions stay


@pytest.mark.slow
def test_ensemble_tta_probabilities_and_postprocessing(tmp_path, tiny_dataset, tiny_run, capsys):
    second = tmp_path / "second"
    code = main(["train", "--data", str(tiny_dataset), "--out", str(second), "--epochs", "1", "--seed", "3",
                 "--patch-size", *map(str, TINY_TRAIN["patch_size"]), "--channels", *map(str, TINY_TRAIN["channels"]),
                 "--strides", *map(str, TINY_TRAIN["strides"]), "--no-progress", "--no-check",
                 "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"])
    assert code == 0
    first = tiny_run.run_dir
    images = tiny_dataset / "imagesTs"
    outs = {}
    for name, models in {"a": [first], "b": [second], "ens": [first, second]}.items():
        assert main(["predict", "--model", *map(str, models), "--input", str(images), "--output",
                     str(tmp_path / name), "--tta", "--save-probabilities", "--device", "cpu"]) == 0
        outs[name] = sorted((tmp_path / name / "probabilities").glob("*.nii.gz"))
    assert len(outs["ens"]) == 2
    for fa, fb, fe in zip(outs["a"], outs["b"], outs["ens"], strict=True):
        a, b, e = (np.asarray(nib.load(f).dataobj) for f in (fa, fb, fe))
        assert e.shape[-1] == 3 and e.shape[:3] == nib.load(images / fe.name).shape  # channels last, input grid
        np.testing.assert_allclose(e, (a + b) / 2, atol=1e-5)  # the ensemble is the members' mean
        np.testing.assert_allclose(e.sum(-1), 1.0, atol=1e-4)
        mask = np.asarray(nib.load(tmp_path / "ens" / fe.name).dataobj)
        np.testing.assert_array_equal(mask, np.argmax(e, -1))

    # a stored decision is applied, and --no-postprocess skips it
    rules = {"structures": {"1": {"largest_component": True}}}
    (first / "postprocessing.json").write_text(json.dumps(rules))
    try:
        assert main(["predict", "--model", str(first), "--input", str(images), "--output", str(tmp_path / "pp"),
                     "--device", "cpu"]) == 0
        assert main(["predict", "--model", str(first), "--input", str(images), "--output", str(tmp_path / "raw"),
                     "--device", "cpu", "--no-postprocess"]) == 0
    finally:
        (first / "postprocessing.json").unlink()
    assert json.loads((tmp_path / "pp" / "postprocessing.json").read_text(encoding="utf-8")) == rules
    from medseg.evaluation.evaluate import evaluate_folders

    summary = evaluate_folders(tmp_path / "pp", tiny_dataset / "labelsTs", tmp_path / "report", progress=False)
    assert summary["postprocessing"] == rules  # the report says what predict applied
    assert 'structure 1: {&quot;largest_component&quot;: true}' in (tmp_path / "report" / "report.html").read_text(encoding="utf-8")
    assert not (tmp_path / "raw" / "postprocessing.json").exists()
    for f in sorted((tmp_path / "raw").glob("*.nii.gz")):
        raw = np.asarray(nib.load(f).dataobj)
        zooms = nib.load(f).header.get_zooms()[:3]
        from medseg.inference.predict import load_model

        plan = load_model(first, torch.device("cpu")).plan
        np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / "pp" / f.name).dataobj),
                                      apply_postprocessing(raw, rules, plan, zooms))


def test_ensemble_of_incompatible_runs_is_refused(tmp_path, tiny_run, capsys):
    other = tmp_path / "other"
    shutil.copytree(tiny_run.run_dir, other)
    ckpt = other / "checkpoints" / "best.pt"
    payload = torch.load(ckpt, weights_only=True)
    payload["config"]["plan"]["label_spec"]["names"]["2"] = "tumour"
    torch.save(payload, ckpt)
    code = main(["predict", "--model", str(tiny_run.run_dir), str(other), "--input", str(tmp_path / "nowhere"),
                 "--output", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert f"--model {other}: cannot be ensembled" in err and "different labels" in err
    assert not (tmp_path / "out").exists()
