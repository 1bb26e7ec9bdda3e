"""Cross-validation: fold datalist, `medseg train --fold K` for two folds, and the cross-fold summary."""

from __future__ import annotations

import json
import statistics

import pytest

from medseg.cli.main import main
from medseg.data.datalist import kfold_split, load_dataset
from medseg.errors import InputError
from medseg.evaluation.crossval import summarize_folds


def test_folds_are_patient_wise_and_seeded(tiny_dataset):
    training = load_dataset(tiny_dataset).training
    a = kfold_split(training, folds=3, seed=7)
    assert kfold_split(training, folds=3, seed=7) == a
    assert [len(g) for g in a] == [2, 2, 2]  # 6 cases
    assert len({it["case_id"] for g in a for it in g}) == 6


def test_summary_needs_runs(tmp_path):
    with pytest.raises(InputError, match="not a medseg training run"):
        summarize_folds([tmp_path])


@pytest.mark.slow
def test_two_folds_and_their_summary(tmp_path, tiny_dataset, capsys):
    runs = []
    for fold in (0, 1):
        run = tmp_path / f"fold{fold}"
        code = main(["train", "--data", str(tiny_dataset), "--out", str(run), "--epochs", "1", "--fold", str(fold),
                     "--folds", "3", "--patch-size", "16", "16", "16", "--channels", "8", "16", "32",
                     "--no-progress", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"])
        assert code == 0
        runs.append(run)
    val = [{d["case_id"] for d in json.loads((r / "datalist.json").read_text(encoding="utf-8"))["validation"]} for r in runs]
    assert val[0] and val[1] and not val[0] & val[1]

    capsys.readouterr()
    assert main(["crossval", *map(str, runs), "--out", str(tmp_path / "cv.json")]) == 0
    out = capsys.readouterr().out
    assert "folds [0, 1] of 3" in out and "mean_dice" in out and "mean_hd95" in out
    summary = json.loads((tmp_path / "cv.json").read_text(encoding="utf-8"))
    dice = [r["metrics"]["mean_dice"] for r in summary["runs"]]
    assert summary["summary"]["mean_dice"]["mean"] == pytest.approx(statistics.mean(dice))
    assert summary["summary"]["mean_dice"]["std"] == pytest.approx(statistics.stdev(dice))
    assert summary["summary"]["mean_hd95"]["n"] >= 1

    assert main(["crossval", *map(str, runs), "--postprocess", "--device", "cpu"]) == 0
    decisions = [json.loads((r / "postprocessing.json").read_text(encoding="utf-8")) for r in runs]
    assert decisions[0] == decisions[1] and decisions[0]["validation_cases"] == sum(map(len, val))
    assert set(decisions[0]["dice_before"]) == {"1", "2"}
    for k, rule in decisions[0]["structures"].items():  # adopted only where it raised the validation Dice
        assert decisions[0]["dice_after"][k] >= decisions[0]["dice_before"][k]
        assert rule in [t["rule"] for t in decisions[0]["tried"][k]]
    assert "post-processing from" in capsys.readouterr().out

    assert main(["crossval", str(runs[0]), str(runs[0])]) == 2
    assert "fold 0 appears twice" in capsys.readouterr().err
