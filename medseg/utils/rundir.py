"""The training run directory: its file names, its metric journal and the best-epoch query, defined once.

Layout::

    RUN_DIR/config.json                 resolved run configuration, including the plan
    RUN_DIR/plans.json                  fingerprint, plan and where each planned value came from
    RUN_DIR/datalist.json               the training / validation split
    RUN_DIR/checkpoints/last_epoch=N.pt newest two, written atomically
    RUN_DIR/checkpoints/best.pt         best validation mean Dice
    RUN_DIR/metrics.jsonl               one line per epoch: {"epoch": N, "metrics": {...}}
    RUN_DIR/mlflow_run.json             the MLflow run this directory belongs to
    RUN_DIR/postprocessing.json         post-processing decided from validation (``medseg crossval``)
    RUN_DIR/init.json                   what ``--init`` loaded: tensors loaded, re-initialised, skipped
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["CONFIG_FILE", "PLANS_FILE", "DATALIST_FILE", "CHECKPOINT_DIR", "BEST_CHECKPOINT", "JOURNAL_FILE",
           "MLFLOW_RUN_FILE", "RESULT_FILE", "POSTPROCESSING_FILE", "INIT_FILE", "KEY_METRIC", "VAL_PREFIX", "VAL_KEY_METRIC",
           "read_journal", "best_record", "checkpoint_dir", "best_checkpoint"]

CONFIG_FILE = "config.json"
PLANS_FILE = "plans.json"
DATALIST_FILE = "datalist.json"
CHECKPOINT_DIR = "checkpoints"
BEST_CHECKPOINT = "best.pt"
JOURNAL_FILE = "metrics.jsonl"
MLFLOW_RUN_FILE = "mlflow_run.json"
RESULT_FILE = "train_result.json"
POSTPROCESSING_FILE = "postprocessing.json"
INIT_FILE = "init.json"

KEY_METRIC = "mean_dice"  # the evaluator's key metric: mean foreground Dice
VAL_PREFIX = "val_"  # validation metrics in the journal and in MLflow
VAL_KEY_METRIC = VAL_PREFIX + KEY_METRIC


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR


def best_checkpoint(run_dir: str | Path) -> Path:
    return checkpoint_dir(run_dir) / BEST_CHECKPOINT


def read_journal(run_dir: str | Path) -> list[dict[str, Any]]:
    """The journal's records (``{"epoch": N, "metrics": {...}}``), last record per epoch, in epoch order."""
    path = Path(run_dir) / JOURNAL_FILE
    if not path.is_file():
        return []
    by_epoch: dict[int, dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a crash
                continue
            by_epoch[int(record["epoch"])] = record
    return [by_epoch[e] for e in sorted(by_epoch)]


def best_record(run_dir: str | Path, metric: str = VAL_KEY_METRIC) -> dict[str, Any] | None:
    """The journal record with the highest ``metric`` (first on ties), or None if no epoch has it."""
    scored = [r for r in read_journal(run_dir) if metric in r.get("metrics", {})]
    return max(scored, key=lambda r: r["metrics"][metric]) if scored else None
