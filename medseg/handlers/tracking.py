"""Experiment tracking: a local metric journal in the run directory, mirrored to MLflow.

MONAI's ``MLFlowHandler`` logs straight to the server: if the server goes away the epoch's
metrics are lost, and a resumed training starts a second run. This tracker keeps the whole
per-epoch history in ``RUN_DIR/metrics.jsonl`` (and in every checkpoint), pushes to MLflow what
the run does not hold yet, warns once when MLflow is unreachable, and catches up when it is back
or when training resumes -- so the MLflow run ends with exactly one value per epoch, no gaps.

What the run already holds is read back from MLflow whenever it is unknown (at resume, and after
any failed push, since a request that timed out may still have reached the server): a
``(metric, epoch)`` value the run holds is never sent again, even across outages and restarts.
``finish(status)`` ends the run once (FINISHED, FAILED or KILLED; later calls change nothing).

Evaluation results (``medseg evaluate``, the demo, training) reach MLflow through one function,
:func:`log_evaluation`: into an existing run (``run_id``, e.g. the training run) or into a new run
of an experiment. Everything goes through an ``MlflowClient`` bound to the tracking URI; the
process-wide MLflow state (tracking URI, active experiment, active run) is never changed, except
for the duration of :meth:`MLflowTracker.log_model` (see there).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from medseg.errors import InputError
from medseg.utils.files import atomic_write_text
from medseg.utils.rundir import JOURNAL_FILE, MLFLOW_RUN_FILE

__all__ = ["MLflowTracker", "default_tracking_uri", "flatten_params", "evaluation_metrics", "log_evaluation",
           "RUN_STATUSES", "tracking_client", "metric_safe_name"]

logger = logging.getLogger(__name__)
RUN_FILE = MLFLOW_RUN_FILE
JOURNAL = JOURNAL_FILE
#: Final statuses accepted by :meth:`MLflowTracker.finish`.
RUN_STATUSES: tuple[str, ...] = ("FINISHED", "FAILED", "KILLED")
EVAL_EXPERIMENT = "medseg-evaluate"
EVAL_ARTIFACT_DIR = "evaluation"


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


def tracking_client(tracking_uri: str) -> Any:
    """An ``MlflowClient`` bound to ``tracking_uri`` that fails fast on an unreachable server."""
    # instead of MLflow's multi-minute retry back-off
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri)


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
        self.run_dir = Path(run_dir)
        self.tracking_uri = tracking_uri
        self.client = tracking_client(tracking_uri)
        self.history: list[dict[str, Any]] = []
        # epoch -> metric keys the MLflow run holds; None: unknown, read it back before pushing
        self._remote: dict[int, set[str]] | None = {}
        self._final_status: str | None = None
        self._terminated = False
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
        info = json.loads(run_file.read_text(encoding="utf-8"))
        run_id = info["run_id"]
        self._safe("update_run", self.client.update_run, run_id, status="RUNNING")
        self._remote = None  # what the run holds is read back before the first push
        return run_id

    def _read_remote(self) -> bool:
        """Load which ``(metric, epoch)`` values the run holds; False when MLflow is unreachable."""
        try:
            keys = set(self.client.get_run(self.run_id).data.metrics)
            keys |= {k for record in self.history for k in record["metrics"]}
            remote: dict[int, set[str]] = {}
            for key in sorted(keys):
                for m in self.client.get_metric_history(self.run_id, key):
                    remote.setdefault(int(m.step), set()).add(key)
        except Exception as exc:  # noqa: BLE001 - tracking must never stop training
            self._warn(exc, "reading the run back")
            return False
        self._remote = remote
        return True

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

        Convention: everything goes through this tracker's client and its URI: the model is written
        to a temporary folder with ``mlflow.pytorch.save_model``, uploaded with ``log_model_artifacts``
        and finalised; MLflow's process-wide tracking URI, active run and experiment are never touched.
        """
        try:
            import mlflow.pytorch
            import monai
            import torch
            from mlflow.entities import LoggedModelStatus

            experiment_id = self.client.get_run(self.run_id).info.experiment_id
            logged = self.client.create_logged_model(experiment_id=experiment_id, name=name,
                                                     source_run_id=self.run_id)
            requirements = [f"torch=={torch.__version__.split('+')[0]}", f"monai=={monai.__version__}"]
            with tempfile.TemporaryDirectory() as tmp:
                local = Path(tmp) / name
                mlflow.pytorch.save_model(model, str(local), input_example=input_example,
                                          pip_requirements=requirements)
                self.client.log_model_artifacts(logged.model_id, str(local))
            self.client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
            return f"models:/{logged.model_id}"
        except Exception as exc:  # noqa: BLE001 - tracking must never stop training
            self._warn(exc, "log_model")
            return None

    def log_evaluation(self, summary: Mapping[str, Any], outputs: Mapping[str, str | Path]) -> bool:
        """Log an evaluation summary and its files into this run (see :func:`log_evaluation`)."""
        return self._safe("log_evaluation", _log_evaluation_to_run, self.client, self.run_id, summary, outputs)

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
        """Send every journal value the MLflow run does not hold yet; True when all are there.

        A value is identified by ``(metric, epoch)``: one the run holds is never sent again (the
        journal may differ from it only for an epoch trained again after a crash, and MLflow cannot
        replace a logged value; the journal keeps the newer one).
        """
        from mlflow.entities import Metric

        if self._remote is None and not self._read_remote():
            return False
        remote = self._remote if self._remote is not None else {}
        for record in self.history:
            epoch = record["epoch"]
            held = remote.get(epoch, set())
            missing = {k: v for k, v in record["metrics"].items() if k not in held}
            if not missing:
                continue
            ts = int(record["time"] * 1000)
            metrics = [Metric(k, v, ts, epoch) for k, v in missing.items()]
            if not self._safe("log_metrics", self.client.log_batch, self.run_id, metrics=metrics):
                self._remote = None  # the request may have reached the server: read back before resending
                return False
            remote.setdefault(epoch, set()).update(missing)
        return True

    def finish(self, status: str = "FINISHED") -> bool:
        """Push what is left and end the run with ``status`` (FINISHED, FAILED or KILLED).

        Idempotent: the first call decides the status; later calls only retry what MLflow did not
        receive (an unreachable server) and never change the status. Returns True once the run is ended.
        """
        if status not in RUN_STATUSES:
            raise ValueError(f"status must be one of {list(RUN_STATUSES)}, got {status!r}")
        if self._final_status is None:
            self._final_status = status
        elif status != self._final_status:
            logger.debug("run %s already ended as %s; ignoring finish(%r)", self.run_id, self._final_status, status)
        if self._terminated:
            return True
        self.push()
        self._terminated = self._safe("terminate", self.client.set_terminated, self.run_id, self._final_status)
        return self._terminated


def evaluation_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """MLflow metrics of an evaluation summary (``summary.json`` of :func:`medseg.evaluation.evaluate.evaluate_folders`).

    ``eval_<metric>_<class>`` (mean over cases), ``eval_mean_<metric>`` (mean over classes) and, when
    the summary has lesion-wise results, ``eval_lesion_<stat>_<class>`` for f1, precision, recall,
    dice and hd95 (BraTS lesion-wise Dice / HD95). Class names are made MLflow-safe.
    """
    metrics: dict[str, float] = {}
    for entry in summary.get("classes", {}).values():
        for name, stats in entry["metrics"].items():
            if stats["mean"] is not None:
                metrics[f"eval_{name}_{metric_safe_name(entry['name'])}"] = float(stats["mean"])
    for name, value in summary.get("mean_foreground", {}).items():
        if value is not None:
            metrics[f"eval_mean_{name}"] = float(value)
    for entry in (summary.get("lesions") or {}).values():
        stats = {"f1": entry["f1"], "precision": entry["precision"], "recall": entry["recall"],
                 "dice": entry["lesion_dice"], "hd95": entry["lesion_hd95"]}
        for name, value in stats.items():
            if value is not None:
                metrics[f"eval_lesion_{name}_{metric_safe_name(entry['name'])}"] = float(value)
    return metrics


def log_evaluation(summary: Mapping[str, Any], outputs: Mapping[str, str | Path], tracking_uri: str, *,
                   run_id: str | None = None, experiment: str | None = None, run_name: str = "evaluate") -> str:
    """Log an evaluation to MLflow: metrics (:func:`evaluation_metrics`), settings as tags, files as artifacts.

    Args:
        summary: the evaluation summary.
        outputs: files to attach (under ``evaluation/`` in the run's artifacts).
        tracking_uri: the MLflow store, as ``medseg train --tracking-uri``.
        run_id: log into this existing run (e.g. the training run); its status is left unchanged.
        experiment: otherwise, create a run named ``run_name`` in this experiment (default
            ``medseg-evaluate``, created when missing) and end it FINISHED (FAILED if logging fails).

    Returns:
        The run id.
    """
    client = tracking_client(tracking_uri)
    if run_id is not None:
        _log_evaluation_to_run(client, run_id, summary, outputs)
        return run_id
    name = experiment or EVAL_EXPERIMENT
    exp = client.get_experiment_by_name(name)
    exp_id = exp.experiment_id if exp else client.create_experiment(
        name, artifact_location=_local_artifact_root(tracking_uri))
    new_id = client.create_run(exp_id, run_name=run_name).info.run_id
    try:
        _log_evaluation_to_run(client, new_id, summary, outputs)
    except BaseException:
        with contextlib.suppress(Exception):
            client.set_terminated(new_id, "FAILED")
        raise
    client.set_terminated(new_id, "FINISHED")
    return new_id


def _log_evaluation_to_run(client: Any, run_id: str, summary: Mapping[str, Any],
                           outputs: Mapping[str, str | Path]) -> None:
    from mlflow.entities import Metric, RunTag

    now = int(time.time() * 1000)
    settings = {"hd_convention": summary.get("hd_convention"), "nsd_tolerance_mm": summary.get("nsd_tolerance_mm"),
                "n_cases": summary.get("n_cases"), "structures": summary.get("structures", "labels"),
                "gt_dir": summary.get("gt_dir"), "pred_dir": summary.get("pred_dir")}
    tags = [RunTag(f"eval.{k}", str(v)) for k, v in settings.items() if v is not None]
    metrics = [Metric(k, v, now, 0) for k, v in evaluation_metrics(summary).items()]
    for i in range(0, max(len(metrics), 1), 500):
        client.log_batch(run_id, metrics=metrics[i:i + 500], tags=tags if i == 0 else [])
    for path in outputs.values():
        client.log_artifact(run_id, str(path), EVAL_ARTIFACT_DIR)


def metric_safe_name(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_\-. /]", "_", str(name))
