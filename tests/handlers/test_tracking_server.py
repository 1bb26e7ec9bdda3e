"""Tracking against a real ``mlflow server`` on loopback (SQLite backend, proxied artifact store)."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import TINY_TRAIN

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """``mlflow server`` as a child process; ``stop()`` ends it (idempotent)."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.port = port or _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        mlflow_bin = Path(sys.executable).with_name("mlflow")
        self.log = open(root / "server.log", "a")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{root / 'server.db'}", "--artifacts-destination", str(root / "art")],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.close()
                raise RuntimeError(f"mlflow server exited: {(root / 'server.log').read_text(encoding='utf-8')[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError("mlflow server did not answer within 90 s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path)
    yield server
    server.stop()


def _train(tmp_path: Path, data: Path, uri: str, epochs: int):
    from medseg.training.train import TrainConfig, train

    # full validation every epoch (the planned schedule validates fully only when it counts)
    cfg = TrainConfig(data=str(data), out=str(tmp_path / "run"), tracking_uri=uri, experiment="server-tests",
                      **{**TINY_TRAIN, "epochs": epochs, "val_interval": 1})
    return train(cfg)


def test_run_lands_in_a_real_server(tmp_path, tiny_dataset, mlflow_server):
    import mlflow
    from mlflow import MlflowClient

    result = _train(tmp_path, tiny_dataset, mlflow_server.uri, epochs=2)
    client = MlflowClient(mlflow_server.uri)
    run = client.get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["loss"] == "dice_ce" and run.data.params["patch_size"] == "[16, 16, 16]"
    assert {"git_commit", "dataset", "fold", "loss"} <= set(run.data.tags)
    for key in ("train_loss", "val_mean_dice"):
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, key)) == [1, 2], key
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.json", "datalist.json", "metrics.jsonl", "checkpoints"} <= artifacts
    local = client.download_artifacts(run.info.run_id, "checkpoints/best.pt", str(tmp_path / "dl"))
    assert Path(local).stat().st_size == result.best_checkpoint.stat().st_size

    models = client.search_logged_models(experiment_ids=[run.info.experiment_id])
    assert len(models) == 1 and models[0].source_run_id == run.info.run_id
    mlflow.set_tracking_uri(mlflow_server.uri)
    loaded = mlflow.pytorch.load_model(models[0].model_uri)
    from medseg.inference.predict import load_model

    reference = load_model(result.run_dir, torch.device("cpu")).network
    for batch in (1, 3):  # the batch dimension stays dynamic; the spatial size is the training patch
        x = torch.rand(batch, 1, 16, 16, 16)
        with torch.no_grad():
            assert torch.allclose(loaded(x), reference(x), atol=1e-5)
    info = mlflow.models.get_model_info(models[0].model_uri)
    assert info.signature is not None and info.saved_input_example_info is not None


def test_training_survives_the_server_going_away(tmp_path, tiny_dataset, mlflow_server, caplog):
    journal = tmp_path / "run" / "metrics.jsonl"

    def stop_after_first_epoch() -> None:
        while not (journal.is_file() and journal.read_text(encoding="utf-8").strip()):
            time.sleep(0.1)
        mlflow_server.stop()

    watcher = threading.Thread(target=stop_after_first_epoch, daemon=True)
    watcher.start()
    with caplog.at_level(logging.WARNING, logger="medseg.handlers.tracking"):
        result = _train(tmp_path, tiny_dataset, mlflow_server.uri, epochs=3)
    watcher.join(timeout=5)
    assert mlflow_server.proc.poll() is not None  # the server really was stopped mid-run
    records = [json.loads(line) for line in journal.read_text(encoding="utf-8").splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert all(np.isfinite(r["metrics"]["train_loss"]) and "val_mean_dice" in r["metrics"] for r in records)
    assert sorted(p.name for p in (result.run_dir / "checkpoints").glob("*.pt")) == [
        "best.pt", "last_epoch=2.pt", "last_epoch=3.pt"]
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]


def test_outage_at_resume_never_pushes_an_epoch_twice(tmp_path, mlflow_server, caplog):
    from mlflow import MlflowClient

    from medseg.handlers.tracking import MLflowTracker

    run_dir = tmp_path / "run"
    first = MLflowTracker(run_dir, mlflow_server.uri, "outage")
    for epoch in (1, 2):
        first.record(epoch, {"train_loss": 1.0 / epoch})
    assert first.push()
    mlflow_server.stop()
    # training restarts from the epoch-2 checkpoint while MLflow is down
    with caplog.at_level(logging.WARNING, logger="medseg.handlers.tracking"):
        resumed = MLflowTracker(run_dir, mlflow_server.uri, "outage", resume=True)
    assert any("unreachable" in r.getMessage() for r in caplog.records)
    resumed.restore_history(first.history, up_to_epoch=2)
    resumed.record(3, {"train_loss": 0.3})
    assert not resumed.push()  # still down: kept in the journal
    back = MlflowServer(tmp_path, port=mlflow_server.port)  # the same store comes back
    try:
        assert resumed.push()
        assert resumed.finish("FINISHED")
        client = MlflowClient(back.uri)
        assert sorted(m.step for m in client.get_metric_history(first.run_id, "train_loss")) == [1, 2, 3]
        assert client.get_run(first.run_id).info.status == "FINISHED"
    finally:
        back.stop()
