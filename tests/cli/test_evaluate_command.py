"""``medseg evaluate``: exit codes, one-line errors naming the case, outputs and printed summary."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.cli.main import main

AFFINE = np.diag([0.8, 0.8, 2.5, 1.0])


def _save(path: Path, data: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, AFFINE), str(path))


def _make_dataset(root: Path, n_cases: int) -> tuple[Path, Path]:
    """labelsTs/ + pred/ with class 1 ("liver" in dataset.json); case 0's prediction is empty."""
    root.mkdir(parents=True)
    (root / "dataset.json").write_text('{"labels": {"0": "background", "1": "liver"}}')
    for i in range(n_cases):
        gt = np.zeros((16, 14, 10), np.uint8)
        gt[3:11, 4:10, 2:8] = 1
        pred = np.zeros_like(gt) if i == 0 else np.roll(gt, i % 3, axis=1)
        _save(root / "labelsTs" / f"case_{i:03d}.nii.gz", gt)
        _save(root / "pred" / f"case_{i:03d}.nii.gz", pred)
    return root / "pred", root / "labelsTs"


def test_evaluate_writes_outputs_and_prints_summary(tmp_path, capsys):
    pred, gt = _make_dataset(tmp_path / "d", n_cases=4)
    out = tmp_path / "eval"
    code = main(["evaluate", str(pred), str(gt), "--out", str(out), "--hd-convention", "medpy",
                 "--nsd-tolerance", "2", "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "evaluated 4 cases (HD convention: medpy)" in printed
    assert "liver" in printed and "missed 1" in printed
    assert {p.name for p in out.iterdir()} == {"metrics.csv", "summary.json", "report.html"}


def test_shape_mismatch_exits_2_naming_the_case(tmp_path, capsys):
    pred, gt = _make_dataset(tmp_path / "d", n_cases=2)
    _save(pred / "case_001.nii.gz", np.zeros((4, 4, 4), np.uint8))
    code = main(["evaluate", str(pred), str(gt), "--out", str(tmp_path / "eval")])
    err = capsys.readouterr().err
    assert code == 2
    assert "case_001: prediction" in err and "shape (4, 4, 4)" in err and "Traceback" not in err
    assert not (tmp_path / "eval").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        pytest.param(["--workers", "0"], "--workers must be >= 1, got 0", id="workers"),
        pytest.param(["--nsd-tolerance", "-1"], "--nsd-tolerance must be >= 0 mm, got -1.0", id="tolerance"),
    ],
)
def test_bad_values_exit_2(tmp_path, capsys, extra, message):
    code = main(["evaluate", str(tmp_path), str(tmp_path), "--out", str(tmp_path / "o"), *extra])
    assert code == 2
    assert message in capsys.readouterr().err


def test_missing_directory_exits_2(tmp_path, capsys):
    code = main(["evaluate", str(tmp_path / "nope"), str(tmp_path), "--out", str(tmp_path / "o")])
    assert code == 2
    assert f"PRED_DIR {tmp_path / 'nope'}: not a directory" in capsys.readouterr().err


def test_unknown_convention_is_a_usage_error(tmp_path):
    with pytest.raises(SystemExit) as info:
        main(["evaluate", str(tmp_path), str(tmp_path), "--out", "o", "--hd-convention", "itk"])
    assert info.value.code == 2


def test_nifti_helper_roundtrip(tmp_path):
    _save(tmp_path / "x.nii.gz", np.ones((2, 2, 2), np.uint8))
    assert nib.load(str(tmp_path / "x.nii.gz")).shape == (2, 2, 2)


def _brats(root: Path) -> tuple[Path, Path]:
    """Region labels (nnU-Net v2); case 1's prediction misses the small enhancing lesion."""
    root.mkdir(parents=True)
    (root / "dataset.json").write_text('{"labels": {"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [2, 3], '
                                       '"enhancing_tumor": 3}, "regions_class_order": [1, 2, 3]}')
    for i in range(2):
        gt = np.zeros((16, 14, 10), np.uint8)
        gt[2:12, 2:12, 2:8] = 1
        gt[4:9, 4:9, 3:7] = 2
        gt[5:7, 5:7, 4:6] = 3
        pred = gt.copy()
        if i == 1:
            pred[pred == 3] = 2
        _save(root / "labelsTs" / f"case_{i:03d}.nii.gz", gt)
        _save(root / "pred" / f"case_{i:03d}.nii.gz", pred)
    return root / "pred", root / "labelsTs"


def test_regions_and_lesion_wise(tmp_path, capsys):
    pred, gt = _brats(tmp_path / "d")
    out = tmp_path / "eval"
    code = main(["evaluate", str(pred), str(gt), "--out", str(out), "--regions", "--lesion-wise", "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    # enhancing tumour: found in case 0, missed in case 1 -> TP 1, FN 1, F1 = 2/(2+1)
    assert "3 enhancing_tumor lesions: TP 1  FP 0  FN 1  F1 0.6667" in printed
    assert "1 whole_tumor    Dice 1.0000" in printed
    assert {p.name for p in out.iterdir()} == {"metrics.csv", "summary.json", "report.html", "lesions.csv"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        pytest.param(["--match-iou", "0"], "--match-iou must be in (0, 1], got 0.0", id="iou"),
        pytest.param(["--size-bins", "100", "10"], "--size-bins must be increasing volumes > 0 mm^3, got [100.0, 10.0]",
                     id="bins"),
        pytest.param(["--lesion-worst-distance", "-2"], "--lesion-worst-distance must be >= 0 mm, got -2.0", id="worst"),
    ],
)
def test_bad_lesion_values_exit_2(tmp_path, capsys, extra, message):
    code = main(["evaluate", str(tmp_path), str(tmp_path), "--out", str(tmp_path / "o"), "--lesion-wise", *extra])
    assert code == 2
    assert message in capsys.readouterr().err


def test_regions_on_a_plain_dataset_exits_2_naming_dataset_json(tmp_path, capsys):
    pred, gt = _make_dataset(tmp_path / "d", n_cases=1)
    code = main(["evaluate", str(pred), str(gt), "--out", str(tmp_path / "o"), "--regions", "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert f"--regions: {tmp_path / 'd' / 'dataset.json'} defines no region labels" in err


def test_tracking_uri_logs_a_new_evaluation_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    pred, gt = _make_dataset(tmp_path / "d", n_cases=2)
    uri = (tmp_path / "mlruns").as_uri()
    code = main(["evaluate", str(pred), str(gt), "--out", str(tmp_path / "o"), "--tracking-uri", uri, "--no-progress"])
    assert code == 0
    assert "MLflow run: " in capsys.readouterr().out
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    [run] = client.search_runs([client.get_experiment_by_name("medseg-evaluate").experiment_id])
    assert run.info.status == "FINISHED" and "eval_dice_liver" in run.data.metrics


def test_lesion_defaults_are_the_metric_defaults():
    # the CLI spells them out so that `medseg --help` does not import scipy
    from medseg.cli import evaluate as cli
    from medseg.metrics import lesion

    assert cli.MATCH_IOU == lesion.MATCH_IOU_THRESHOLD
    assert cli.LESION_WORST_MM == lesion.BRATS_WORST_DISTANCE_MM
    assert cli.SIZE_BINS_MM3 == lesion.DEFAULT_SIZE_BINS_MM3
