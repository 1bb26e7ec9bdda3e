"""Cross-validation: fold datalist, `medseg train --fold K` for two folds, and the cross-fold summary."""

from __future__ import annotations

import json
import statistics

import pytest

from medseg.cli.main import main
from medseg.engine.crossval import fold_datalist, summarize_folds
from medseg.errors import InputError


def test_fold_datalist_is_patient_wise_and_seeded(tiny_dataset):
    a = fold_datalist(tiny_dataset, folds=3, seed=7)
    assert fold_datalist(tiny_dataset, folds=3, seed=7) == a
    folds = [it["fold"] for it in a["training"]]
    assert sorted(set(folds)) == [0, 1, 2] and [folds.count(k) for k in range(3)] == [2, 2, 2]  # 6 cases
    assert len({it["case_id"] for it in a["training"]}) == 6
    assert len(a["test"]) == 2


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
    val = [{d["case_id"] for d in json.loads((r / "datalist.json").read_text())["validation"]} for r in runs]
    assert val[0] and val[1] and not val[0] & val[1]

    capsys.readouterr()
    assert main(["crossval", *map(str, runs), "--out", str(tmp_path / "cv.json")]) == 0
    out = capsys.readouterr().out
    assert "folds [0, 1] of 3" in out and "mean_dice" in out and "mean_hd95" in out
    summary = json.loads((tmp_path / "cv.json").read_text())
    dice = [r["metrics"]["mean_dice"] for r in summary["runs"]]
    assert summary["summary"]["mean_dice"]["mean"] == pytest.approx(statistics.mean(dice))
    assert summary["summary"]["mean_dice"]["std"] == pytest.approx(statistics.stdev(dice))
    assert summary["summary"]["mean_hd95"]["n"] >= 1

    assert main(["crossval", str(runs[0]), str(runs[0])]) == 2
    assert "fold 0 appears twice" in capsys.readouterr().err
