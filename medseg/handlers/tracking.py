"""Experiment tracking: a local metric journal in the run directory, mirrored to MLflow.

MONAI's ``MLFlowHandler`` logs straight to the server: if the server goes away the epoch's
metrics are lost, and a resumed training starts a second run. This tracker keeps the whole
per-epoch history in ``RUN_DIR/metrics.jsonl`` (and in every checkpoint), pushes to MLflow what
the run does not hold yet, warns once when MLflow is unreachable, and catches up when it is back
or when training resumes -- so the MLflow run ends with exactly one value per epoch, no gaps.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from medseg.errors import InputError
from medseg.utils.files import atomic_write_text

__all__ = ["MLflowTracker", "default_tracking_uri", "flatten_params"]

logger = logging.getLogger(__name__)
RUN_FILE = "mlflow_run.json"
JOURNAL = "metrics.jsonl"


def default_tracking_uri(base_dir: str | Path | None = None) -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else an embedded SQLite store ``mlflow.db`` in ``base_dir`` (cwd)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    base = Path(base_dir or Path.cwd()).resolve()
    return f"sqlite:///{base / 'mlflow.db'}"


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> flat ``{"a.b": "value"}`` strings (MLflow params are strings, <= 6000 chars)."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, prefix=f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
    return {k: v[:6000] for k, v in flat.items()}


def _local_artifact_root(uri: str) -> str | None:
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite" and parsed.path not in ("", "/:memory:"):
        db = Path(uri[len("sqlite:///"):])
        return (db.parent / "mlartifacts").resolve().as_uri()
    return None


class MLflowTracker:
    """Per-epoch metrics journal + MLflow run that survives restarts and server outages.

    Args:
        run_dir: training output folder (journal and run id live here).
        tracking_uri: any MLflow URI (``sqlite:///...``, ``http://host:port``, ...).
        experiment: experiment name (created when missing).
        run_name: name of a new run.
        resume: continue the run recorded in ``run_dir`` instead of creating one.
    """

    def __init__(self, run_dir: str | Path, tracking_uri: str, experiment: str = "medseg",
                 run_name: str | None = None, resume: bool = False) -> None:
        # fail fast on an unreachable server instead of MLflow's multi-minute retry back-off
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        from mlflow import MlflowClient

        self.run_dir = Path(run_dir)
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri)
        self.history: list[dict[str, Any]] = []
        self._pushed: set[int] = set()
        self._warned = False
        self.run_id = self._resume_run() if resume else self._new_run(experiment, run_name)
        atomic_write_text(self.run_dir / RUN_FILE, json.dumps(
            {"run_id": self.run_id, "tracking_uri": tracking_uri, "experiment": experiment}) + "\n")

    # -- run lifecycle ---------------------------------------------------------------------------
    def _new_run(self, experiment: str, run_name: str | None) -> str:
        exp = self.client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp else self.client.create_experiment(
            experiment, artifact_location=_local_artifact_root(self.tracking_uri))
        return self.client.create_run(exp_id, run_name=run_name).info.run_id

    def _resume_run(self) -> str:
        run_file = self.run_dir / RUN_FILE
        if not run_file.is_file():
            raise InputError(f"--resume: {run_file} is missing, so the MLflow run to continue is unknown")
        info = json.loads(run_file.read_text())
        run_id = info["run_id"]
        self._safe("update_run", self.client.update_run, run_id, status="RUNNING")
        # epochs already in the run need not be pushed again
        try:
            self._pushed = {m.step for m in self.client.get_metric_history(run_id, "train_loss")}
        except Exception as exc:  # noqa: BLE001 - server down: push everything later
            self._warn(exc)
        return run_id

    def _safe(self, what: str, fn, *args, **kwargs) -> bool:  # type: ignore[no-untyped-def]
        try:
            fn(*args, **kwargs)
            return True
        except Exception as exc:  # noqa: BLE001 - tracking must never stop training
            self._warn(exc, what)
            return False

    def _warn(self, exc: BaseException, what: str = "tracking") -> None:
        if not self._warned:
            self._warned = True
            logger.warning("MLflow at %s unreachable during %s (%s: %s); training continues, metrics are "
                           "kept in %s and pushed when it is back", self.tracking_uri, what,
                           type(exc).__name__, str(exc).splitlines()[0][:200], self.run_dir / JOURNAL)

    # -- params, tags, artifacts -----------------------------------------------------------------
    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        flat = flatten_params(params)
        items = [Param(k, v) for k, v in flat.items()]
        for i in range(0, len(items), 100):
            self._safe("log_params", self.client.log_batch, self.run_id, params=items[i:i + 100])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self._safe("set_tags", self.client.log_batch, self.run_id,
                   tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> bool:
        return self._safe("log_artifact", self.client.log_artifact, self.run_id, str(path), artifact_path)

    def log_model(self, model: Any, input_example: Any, name: str = "model") -> str | None:
        """``mlflow.pytorch.log_model`` into this run with ``input_example`` (signature inferred from it).

        Returns the model URI, or ``None`` when MLflow is unreachable (warned once, training unaffected).
        Requirements are pinned to the running torch / MONAI versions instead of being inferred
        (inference would load the model again in a subprocess).
        """
        try:
            import mlflow
            import mlflow.pytorch
            import monai
            import torch

            mlflow.set_tracking_uri(self.tracking_uri)
            # the fluent API refuses a run outside its active experiment (set by any earlier caller)
            mlflow.set_experiment(experiment_id=self.client.get_run(self.run_id).info.experiment_id)
            requirements = [f"torch=={torch.__version__.split('+')[0]}", f"monai=={monai.__version__}"]
            with mlflow.start_run(run_id=self.run_id):
                info = mlflow.pytorch.log_model(model, name=name, input_example=input_example,
                                                pip_requirements=requirements)
            return str(info.model_uri)
        except Exception as exc:  # noqa: BLE001 - tracking must never stop training
            self._warn(exc, "log_model")
            return None

    # -- metrics ---------------------------------------------------------------------------------
    def record(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Add one epoch to the journal (replacing a previous record of the same epoch)."""
        self.history = [h for h in self.history if h["epoch"] != epoch]
        self.history.append({"epoch": int(epoch), "time": time.time(),
                             "metrics": {k: float(v) for k, v in metrics.items()}})
        self.history.sort(key=lambda h: h["epoch"])
        self._write_journal()

    def restore_history(self, history: list[dict[str, Any]], up_to_epoch: int) -> None:
        """Take the history stored in a checkpoint; records after ``up_to_epoch`` are dropped."""
        self.history = [dict(h) for h in history if h["epoch"] <= up_to_epoch]
        self._write_journal()

    def _write_journal(self) -> None:
        atomic_write_text(self.run_dir / JOURNAL, "".join(json.dumps(h) + "\n" for h in self.history))

    def push(self) -> bool:
        """Send every journal epoch MLflow does not have yet; True when all are there."""
        from mlflow.entities import Metric

        for record in self.history:
            if record["epoch"] in self._pushed:
                continue
            ts = int(record["time"] * 1000)
            metrics = [Metric(k, v, ts, record["epoch"]) for k, v in record["metrics"].items()]
            if not self._safe("log_metrics", self.client.log_batch, self.run_id, metrics=metrics):
                return False
            self._pushed.add(record["epoch"])
        return True

    def finish(self, status: str = "FINISHED") -> None:
        self.push()
        self._safe("terminate", self.client.set_terminated, self.run_id, status)
