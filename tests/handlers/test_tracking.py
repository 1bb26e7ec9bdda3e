"""MLflowTracker on an embedded store: finish semantics, no duplicate epochs on resume, no global MLflow state."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.handlers.tracking import MLflowTracker, evaluation_metrics, log_evaluation


@pytest.fixture
def store(tmp_path, monkeypatch) -> str:
    # the file store keeps these tests fast (SQLite migrations take seconds); any URI behaves the same
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return (tmp_path / "mlruns").as_uri()


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(uri)


def test_failed_run_ends_failed_and_finish_is_idempotent(tmp_path, store):
    tracker = MLflowTracker(tmp_path / "run", store, "t")
    tracker.record(1, {"train_loss": 0.5})
    assert tracker.finish("FAILED") is True
    assert tracker.finish("FAILED") is True  # twice: harmless
    assert tracker.finish("FINISHED") is True  # a later, different status does not overwrite the first
    run = _client(store).get_run(tracker.run_id)
    assert run.info.status == "FAILED"
    assert [m.step for m in _client(store).get_metric_history(tracker.run_id, "train_loss")] == [1]


def test_finish_rejects_an_unknown_status(tmp_path, store):
    tracker = MLflowTracker(tmp_path / "run", store, "t")
    with pytest.raises(ValueError, match=r"status must be one of \['FINISHED', 'FAILED', 'KILLED'\], got 'DONE'"):
        tracker.finish("DONE")


def test_resume_pushes_each_epoch_once(tmp_path, store):
    first = MLflowTracker(tmp_path / "run", store, "t")
    for epoch in (1, 2):
        first.record(epoch, {"train_loss": 1.0 / epoch, "val_dice": 0.1 * epoch})
    assert first.push()
    # resumed from the epoch-2 checkpoint: the history comes back, epoch 3 is new
    resumed = MLflowTracker(tmp_path / "run", store, "t", resume=True)
    assert resumed.run_id == first.run_id
    resumed.restore_history(first.history, up_to_epoch=2)
    resumed.record(3, {"train_loss": 0.3, "val_dice": 0.3})
    assert resumed.push() and resumed.push()
    resumed.finish()
    client = _client(store)
    for key in ("train_loss", "val_dice"):
        assert sorted(m.step for m in client.get_metric_history(first.run_id, key)) == [1, 2, 3], key


def test_partially_pushed_epoch_sends_only_the_missing_values(tmp_path, store):
    from mlflow.entities import Metric

    tracker = MLflowTracker(tmp_path / "run", store, "t")
    # the run already holds epoch 1's train_loss (e.g. logged before a crash), not its val_dice
    _client(store).log_batch(tracker.run_id, metrics=[Metric("train_loss", 0.9, 0, 1)])
    resumed = MLflowTracker(tmp_path / "run", store, "t", resume=True)
    resumed.record(1, {"train_loss": 0.9, "val_dice": 0.4})
    assert resumed.push()
    client = _client(store)
    assert [m.step for m in client.get_metric_history(tracker.run_id, "train_loss")] == [1]
    assert [m.value for m in client.get_metric_history(tracker.run_id, "val_dice")] == [0.4]


def test_log_model_leaves_the_process_tracking_uri_alone(tmp_path, store, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "file:///somewhere/else")
    mlflow.set_tracking_uri(None)
    tracker = MLflowTracker(tmp_path / "run", store, "t")
    uri = tracker.log_model(torch.nn.Conv3d(1, 2, 1), np.zeros((2, 1, 4, 4, 4), np.float32))
    assert uri is not None and uri.startswith("models:/")
    from mlflow.tracking._tracking_service import utils

    assert utils._tracking_uri is None and os.environ["MLFLOW_TRACKING_URI"] == "file:///somewhere/else"
    assert mlflow.active_run() is None
    models = _client(store).search_logged_models(experiment_ids=[_client(store).get_run(tracker.run_id).info.experiment_id])
    assert [m.source_run_id for m in models] == [tracker.run_id]
    assert _client(store).get_run(tracker.run_id).info.status == "RUNNING"  # logging a model does not end the run


def _summary() -> dict:
    dice = {"mean": 0.8, "std": 0.1, "median": 0.8, "p5": 0.7, "p95": 0.9, "n": 2, "n_nan": 0}
    return {"classes": {"1": {"label": 1, "name": "whole tumor", "metrics": {"dice": dice}}},
            "mean_foreground": {"dice": 0.8}, "hd_convention": "monai", "nsd_tolerance_mm": 1.0, "n_cases": 2,
            "lesions": {"1": {"label": 1, "name": "whole tumor", "f1": 0.5, "precision": 1.0, "recall": None,
                              "lesion_dice": 0.4, "lesion_hd95": 12.0}}}


def test_evaluation_metrics_names():
    assert evaluation_metrics(_summary()) == {
        "eval_dice_whole tumor": 0.8, "eval_mean_dice": 0.8, "eval_lesion_f1_whole tumor": 0.5,
        "eval_lesion_precision_whole tumor": 1.0, "eval_lesion_dice_whole tumor": 0.4,
        "eval_lesion_hd95_whole tumor": 12.0}


def test_log_evaluation_into_a_new_run_and_into_the_training_run(tmp_path, store):
    report = tmp_path / "summary.json"
    report.write_text("{}")
    new_id = log_evaluation(_summary(), {"summary_json": report}, store, experiment="ev")
    client = _client(store)
    run = client.get_run(new_id)
    assert run.info.status == "FINISHED" and run.data.metrics["eval_lesion_f1_whole tumor"] == 0.5
    assert run.data.tags["eval.hd_convention"] == "monai"
    assert client.get_experiment(run.info.experiment_id).name == "ev"
    assert [a.path for a in client.list_artifacts(new_id, "evaluation")] == ["evaluation/summary.json"]

    tracker = MLflowTracker(tmp_path / "run", store, "train")
    tracker.finish()
    assert tracker.log_evaluation(_summary(), {"summary_json": report})
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["eval_mean_dice"] == 0.8
    assert Path(client.list_artifacts(tracker.run_id, "evaluation")[0].path).name == "summary.json"
