"""Training workflow: a planned run on MONAI's ignite ``SupervisedTrainer`` / ``SupervisedEvaluator``.

A run is defined by its :class:`TrainConfig` (run options and explicit overrides) and the
:class:`~medseg.plan.Plan` resolved from the dataset (:func:`prepare_plan`); both are saved in
``RUN_DIR/config.json`` and the plan with its fingerprint in ``RUN_DIR/plans.json`` (layout:
:mod:`medseg.utils.rundir`). :func:`train` wires named builders (data, network, loss, evaluator,
trainer, handlers) and runs them with crash-safe checkpoints and MLflow tracking.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg.data.datalist import Dataset, load_dataset
from medseg.errors import InputError
from medseg.plan.planner import Plan, make_plan
from medseg.utils.files import atomic_write_text
from medseg.utils.rundir import CONFIG_FILE, PLANS_FILE, best_checkpoint, checkpoint_dir

__all__ = ["TrainConfig", "TrainResult", "train", "load_run_config", "prepare_plan", "OVERRIDES"]

logger = logging.getLogger(__name__)

# TrainConfig field -> plan field it overrides
OVERRIDES = {"pixdim": "spacing", "patch_size": "patch_size", "batch_size": "batch_size",
             "samples_per_case": "samples_per_case", "net": "net", "channels": "filters", "strides": "strides",
             "deep_supervision": "deep_supervision", "num_res_units": "num_res_units"}


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved as ``RUN_DIR/config.json``.

    Fields defaulting to None are planned from the dataset (:mod:`medseg.plan`); a value given here
    overrides its planned value. ``plan`` holds the resolved plan once the run has started.
    ``split_seed`` seeds the fold split (``None``: ``seed``), so runs that differ only in ``seed``
    share one split; ``tags`` are added to the MLflow run (``mlflow.parentRunId`` nests it under a parent).
    """

    data: str
    out: str
    epochs: int = 40
    loss: str = "dice_ce"
    loss_args: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    amp: bool = False
    tracking_uri: str | None = None
    experiment: str = "medseg"
    run_name: str | None = None
    seed: int = 0
    fold: int = 0
    folds: int = 5
    lr: float = 2e-3
    weight_decay: float = 1e-5
    val_interval: int = 1
    cache_rate: float = 1.0
    num_workers: int = 0
    check_data: bool = True
    progress: bool = True
    pixdim: tuple[float, float, float] | None = None
    patch_size: tuple[int, int, int] | None = None
    batch_size: int | None = None
    samples_per_case: int | None = None
    net: str | None = None
    channels: tuple[int, ...] | None = None
    strides: tuple[int, ...] | None = None
    deep_supervision: bool | None = None
    num_res_units: int | None = None
    plan: dict[str, Any] | None = None
    plan_sources: dict[str, str] | None = None
    split_seed: int | None = None
    tags: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        if self.epochs < 1:
            raise InputError(f"--epochs must be >= 1, got {self.epochs}")
        if self.batch_size is not None and self.batch_size < 1:
            raise InputError(f"--batch-size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise InputError(f"--lr must be > 0, got {self.lr}")
        if not 1 <= self.val_interval <= self.epochs:
            raise InputError(f"--val-interval must be in [1, --epochs={self.epochs}], got {self.val_interval}")
        if self.channels is not None and len(self.channels) < 2:
            raise InputError(f"--channels needs at least two levels, got {list(self.channels)}")
        if self.patch_size is not None and self.strides is not None:
            factor = 2 ** len(self.strides)
            if any(p % factor for p in self.patch_size):
                raise InputError(f"--patch-size {list(self.patch_size)}: each side must be divisible by {factor}")
        if not 0.0 <= self.cache_rate <= 1.0:
            raise InputError(f"--cache-rate must be in [0, 1], got {self.cache_rate}")

    def overrides(self) -> dict[str, Any]:
        """Explicit plan overrides, by plan field name."""
        return {plan_key: getattr(self, key) for key, plan_key in OVERRIDES.items() if getattr(self, key) is not None}

    def resolved_plan(self) -> Plan:
        if self.plan is None:
            raise RuntimeError("the plan is resolved by prepare_plan() before training")
        return Plan.from_dict(self.plan)

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - names)
        if unknown:
            raise InputError(f"unknown training config keys: {', '.join(unknown)}")
        keep = {"loss_args", "plan", "plan_sources", "tags"}
        return cls(**{k: (tuple(v) if isinstance(v, list) and k not in keep else v) for k, v in raw.items()})


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    best_checkpoint: Path
    best_metric: float
    epochs: int
    mlflow_run_id: str
    tracking_uri: str


def load_run_config(run_dir: str | Path) -> TrainConfig:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise InputError(f"{run_dir}: not a training run directory (no {CONFIG_FILE})")
    return TrainConfig.from_dict(json.loads(path.read_text(encoding="utf-8")))


def prepare_plan(cfg: TrainConfig, dataset: Dataset | None = None) -> Plan:
    """Resolve ``cfg.plan`` (fingerprint + plan + overrides) once and write ``plans.json``; a set plan is kept."""
    from medseg.engine.network import resolve_device
    from medseg.plan.fingerprint import extract_fingerprint
    from medseg.plan.planner import ComputeBudget

    if cfg.plan is not None:
        return cfg.resolved_plan()
    dataset = dataset or load_dataset(cfg.data)
    device = resolve_device(cfg.device).type
    fingerprint = extract_fingerprint(dataset)
    plan, sources = make_plan(fingerprint, dataset, ComputeBudget.for_device(device), cfg.overrides())
    cfg.plan, cfg.plan_sources = plan.to_dict(), sources
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / PLANS_FILE, json.dumps({"fingerprint": fingerprint, "plan": cfg.plan,
                                                    "sources": sources}, indent=1) + "\n")
    user = sorted(k for k, v in sources.items() if v == "user")
    logger.info("plan for %s: spacing %s, patch %s, %s %s, batch %d%s", device, list(plan.spacing),
                list(plan.patch_size), plan.network.name, list(plan.network.filters), plan.batch_size,
                f"; from the user: {', '.join(user)}" if user else "")
    return plan


def _start(cfg: TrainConfig, resume: bool) -> tuple[Any, Dataset]:
    """Checks before anything is written: resume state, config values, the dataset."""
    from medseg.engine import distributed as dist
    from medseg.handlers.checkpoint import latest_checkpoint

    ckpt_dir = checkpoint_dir(cfg.out)
    resumed = None
    if resume:
        resumed = latest_checkpoint(ckpt_dir) if ckpt_dir.is_dir() else None
        if resumed is None:
            raise InputError(f"--resume: no readable checkpoint in {ckpt_dir} (start without --resume)")
        logger.info("resuming from %s (epoch %d)", resumed[0], resumed[1]["epoch"])
    elif ckpt_dir.is_dir() and any(ckpt_dir.glob("*.pt")):
        raise InputError(f"--out {cfg.out}: already holds checkpoints; use --resume to continue it or "
                         "choose another folder")
    cfg.validate()
    dataset = load_dataset(cfg.data)
    if cfg.check_data and not resume and dist.is_main():
        from medseg.data.check import ensure_dataset_ok

        for warning in ensure_dataset_ok(cfg.data):
            logger.warning("dataset: %s", warning)
    return resumed, dataset


def train(cfg: TrainConfig, resume: bool = False) -> TrainResult:
    """Train on ``cfg.data`` with the plan (resolved here if not yet); see :mod:`medseg.utils.rundir` for outputs."""
    from monai.utils import set_determinism

    from medseg.engine import distributed as dist
    from medseg.engine.builders import (
        attach_epoch_handlers,
        build_data,
        build_evaluator,
        build_loss,
        build_trainer,
        finish_run,
        run_device,
        start_tracking,
    )

    resumed, dataset = _start(cfg, resume)
    device, amp = run_device(cfg)
    plan = prepare_plan(cfg, dataset) if dist.is_main() or cfg.plan is not None else None
    if plan is None:
        raise RuntimeError("a multi-process run needs its plan resolved before the processes start")
    loss, engine_loss, dist_key = build_loss(cfg, plan)
    set_determinism(seed=cfg.seed)
    data = build_data(cfg, plan, dataset, dist_key)
    tracker = start_tracking(cfg, plan, data, resume, loss)
    try:
        from medseg.engine.network import network_from_plan

        network = network_from_plan(plan.network, plan.in_channels, plan.out_channels).to(device)
        evaluator = build_evaluator(plan, network, data.val_loader, device, amp)
        trainer, optimizer, scheduler = build_trainer(cfg, network, engine_loss, data.train_loader, evaluator, device, amp,
                                           dist_key)
        saver = attach_epoch_handlers(cfg, plan, trainer, evaluator, optimizer, scheduler, network, tracker, loss, resumed)
        if resumed is None or trainer.state.epoch < cfg.epochs:
            trainer.run()
        best = best_checkpoint(cfg.out)
        if dist.is_main():
            finish_run(tracker, cfg, network, best, plan)
    except KeyboardInterrupt:
        tracker.finish("KILLED")
        raise
    except BaseException:
        tracker.finish("FAILED")
        raise
    return TrainResult(run_dir=Path(cfg.out), best_checkpoint=best, best_metric=float(saver.best_score or 0.0),
                       epochs=cfg.epochs, mlflow_run_id=tracker.run_id, tracking_uri=str(cfg.tracking_uri))
