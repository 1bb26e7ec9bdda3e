"""medseg study: one plan for every run, numbers read back from MLflow, resuming, and bad settings."""

from __future__ import annotations

import csv
import json
import os

import pytest

from medseg.cli.main import main
from medseg.errors import InputError
from medseg.study.report import verdict
from medseg.study.run import (
    ROW_FILE,
    ROW_METRICS,
    STATE_FILE,
    StudyConfig,
    run_dir_of,
    run_study,
    validate_study,
)
from medseg.utils.rundir import MLFLOW_RUN_FILE, read_journal

LOSSES = ("dice", "ce", "dice_ce")
TRAIN = {"patch_size": (16, 16, 16), "channels": (8, 16, 32), "strides": (2, 2), "batch_size": 2,
         "samples_per_case": 1, "progress": False}


@pytest.fixture(scope="module")
def study_data(tmp_path_factory):
    from medseg.data.synth import SynthConfig, synthesise_dataset

    root = tmp_path_factory.mktemp("study_data")
    synthesise_dataset(root, SynthConfig(train_cases=6, test_cases=2, size=32, seed=1, vessels=True, lesions=(2, 3),
                                         lesion_radius_mm=(2.0, 5.0)))
    return root


def _config(data, base):
    return StudyConfig(data=str(data), out=str(base / "study"), losses=LOSSES, seeds=2, epochs=2, baseline="dice_ce",
                       device="cpu", tracking_uri=f"sqlite:///{base / 'mlflow.db'}", train_overrides=dict(TRAIN),
                       n_boot=200)


@pytest.fixture(scope="module")
def resumed_study(study_data, tmp_path_factory):
    """A study stopped after 2 of 6 runs, one of them then set back to its epoch-1 checkpoint, and continued."""
    base = tmp_path_factory.mktemp("study")
    cfg = _config(study_data, base)
    first = run_study(cfg, max_runs=2)
    done = run_dir_of(cfg.out, "dice", 0)
    half = run_dir_of(cfg.out, "dice", 1)
    before = {"done_ckpts": {p.name: p.stat().st_mtime_ns for p in (done / "checkpoints").glob("*.pt")},
              "done_run": json.loads((done / ROW_FILE).read_text(encoding="utf-8"))["mlflow_run_id"],
              "half_run": json.loads((half / MLFLOW_RUN_FILE).read_text(encoding="utf-8"))["run_id"]}
    # the second run "was killed" during its second epoch: no evaluation, newest checkpoint epoch 1
    (half / ROW_FILE).unlink()
    (half / "checkpoints" / "last_epoch=2.pt").unlink()
    (half / "checkpoints" / "best.pt").unlink()
    trained = []
    study = run_study(cfg, on_run=trained.append)
    return cfg, first, before, study, trained


@pytest.mark.slow
def test_stopped_study_resumes_without_retraining_finished_runs(resumed_study):
    cfg, first, before, study, trained = resumed_study
    assert first["complete"] is False and len(first["runs"]) == 2
    done, half = run_dir_of(cfg.out, "dice", 0), run_dir_of(cfg.out, "dice", 1)
    # the evaluated run was not touched: same checkpoints (mtimes), same MLflow run
    assert {p.name: p.stat().st_mtime_ns for p in (done / "checkpoints").glob("*.pt")} == before["done_ckpts"]
    assert json.loads((done / ROW_FILE).read_text(encoding="utf-8"))["mlflow_run_id"] == before["done_run"]
    # the half-finished run resumed from epoch 1 into the same MLflow run, one journal record per epoch
    assert json.loads((half / ROW_FILE).read_text(encoding="utf-8"))["mlflow_run_id"] == before["half_run"]
    assert [r["epoch"] for r in read_journal(half)] == [1, 2]
    assert [(r.loss, r.seed, r.trained) for r in trained] == [
        ("dice", 0, False), ("dice", 1, True), ("ce", 0, True), ("ce", 1, True), ("dice_ce", 0, True),
        ("dice_ce", 1, True)]
    assert len(study["runs"]) == 6


@pytest.mark.slow
def test_study_csv_matches_the_mlflow_child_runs(resumed_study):
    from mlflow import MlflowClient

    cfg, _, _, study, _ = resumed_study
    client = MlflowClient(study["tracking_uri"])
    parent = client.get_run(study["parent_run_id"])
    assert parent.data.tags["study"] == "study" and parent.info.status == "FINISHED"
    with open(os.path.join(cfg.out, "study.csv"), newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["loss"], r["seed"], r["class"]) for r in rows) == sorted(
        (loss, str(seed), c) for loss in LOSSES for seed in (0, 1) for c in ("organ", "lesion", "vessel"))
    checked = 0
    for row in rows:
        child = client.get_run(row["mlflow_run_id"])
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert (child.data.tags["loss"], child.data.tags["seed"]) == (row["loss"], row["seed"])
        for column, key in ROW_METRICS.items():
            expected = child.data.metrics.get(key.format(c=row["class"]))
            if expected is None:
                assert row[column] == ""
            else:
                assert float(row[column]) == expected
                checked += 1
    assert checked >= 6 * 3 * 5  # dice, hd95, nsd, lesion recall, precision of every run and class
    # one plan for all runs, one split, different seeds
    plans = {json.dumps(json.loads((run_dir_of(cfg.out, r["loss"], int(r["seed"])) / "config.json").read_text(encoding="utf-8"))["plan"],
                        sort_keys=True) for r in rows}
    assert len(plans) == 1
    splits = {(run_dir_of(cfg.out, loss, s) / "datalist.json").read_text(encoding="utf-8") for loss in LOSSES for s in (0, 1)}
    assert len(splits) == 1


@pytest.mark.slow
def test_report_has_comparisons_curves_and_figures(resumed_study):
    cfg, _, _, study, _ = resumed_study
    assert [(c["loss"], c["class"]) for c in study["comparisons"]] == [
        (loss, c) for loss in ("dice", "ce") for c in ("organ", "lesion", "vessel")]
    assert all(c["n_pairs"] == 4 for c in study["comparisons"])  # 2 test cases x 2 seeds
    assert [len(points) for points in study["val_curves"]["ce"].values()] == [2, 2]
    html = open(os.path.join(cfg.out, "report.html"), encoding="utf-8").read()
    assert html.count("data:image/png;base64,") == 2 and "Dice difference to the baseline dice_ce" in html
    assert json.loads(open(os.path.join(cfg.out, STATE_FILE), encoding="utf-8").read())["elapsed_s"] > 0


@pytest.mark.slow
def test_markdown_page_from_study_json(resumed_study, tmp_path, capsys):
    cfg, _, _, study, _ = resumed_study
    page = tmp_path / "page.md"
    assert main(["study", "--out", cfg.out, "--markdown", str(page)]) == 0
    text = page.read_text(encoding="utf-8")
    assert "| dice_ce | lesion |" in text and "![val curves](page/val_curves.png)" in text
    assert (tmp_path / "page" / "dice_by_size.png").stat().st_size > 1000


def test_bad_losses_and_loss_args_exit_2_listing_all_before_training(study_data, tmp_path, capsys):
    code = main(["study", "--data", str(study_data), "--out", str(tmp_path / "s"), "--losses", "dice,dcie,focall,ce",
                 "--baseline", "dice", "--loss-args", '{"ce": {"gamma": 2}, "tversky": {"alpha": 0.3}}'])
    err = capsys.readouterr().err
    assert code == 2
    assert "unknown loss(es) 'dcie', 'focall'" in err
    assert "--loss-args: 'tversky' is not one of --losses" in err
    assert "--loss-args ce: loss 'ce' does not accept argument(s) gamma" in err
    assert not (tmp_path / "s").exists()  # nothing written, nothing trained


def test_invalid_loss_args_json_exits_2(study_data, tmp_path, capsys):
    assert main(["study", "--data", str(study_data), "--out", str(tmp_path / "s"), "--loss-args", "{dice"]) == 2
    assert "--loss-args: not valid JSON" in capsys.readouterr().err


@pytest.mark.parametrize(("changes", "message"), [
    ({"baseline": "tversky"}, r"--baseline 'tversky' is not one of --losses"),
    ({"seeds": 0}, "--seeds must be >= 1, got 0"),
    ({"losses": ("dice", "dice")}, "--losses must name distinct losses"),
    ({"train_overrides": {"seed": 3}}, "train overrides seed are set by the study itself"),
], ids=["baseline", "seeds", "duplicates", "owned-override"])
def test_validate_study_names_the_problem(study_data, tmp_path, changes, message):
    cfg = StudyConfig(data=str(study_data), out=str(tmp_path / "s"), losses=("dice", "ce"), baseline="dice")
    for key, value in changes.items():
        setattr(cfg, key, value)
    with pytest.raises(InputError, match=message):
        validate_study(cfg)


def test_study_needs_labelled_test_cases(tmp_path):
    from medseg.data.synth import SynthConfig, synthesise_dataset

    synthesise_dataset(tmp_path / "d", SynthConfig(train_cases=2, test_cases=0, size=24))
    cfg = StudyConfig(data=str(tmp_path / "d"), out=str(tmp_path / "s"), losses=("dice",), baseline="dice")
    with pytest.raises(InputError, match=r"no cases in imagesTs/ \(the study scores the held-out cases\)"):
        validate_study(cfg)


@pytest.mark.parametrize(("low", "high", "lower", "expected"), [
    (0.01, 0.05, False, "holds"), (-0.05, -0.01, False, "does not hold"), (-0.01, 0.02, False, "inconclusive"),
    (-3.0, -1.0, True, "holds"), (1.0, 3.0, True, "does not hold"), (None, None, False, "inconclusive"),
], ids=["up", "down", "zero-inside", "hd-down", "hd-up", "undefined"])
def test_verdict_from_the_interval(low, high, lower, expected):
    assert verdict(low, high, lower) == expected
