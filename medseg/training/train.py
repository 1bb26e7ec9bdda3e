"""Training workflow: a planned run on MONAI's ignite ``SupervisedTrainer`` / ``SupervisedEvaluator``.

A run is defined by its :class:`TrainConfig` (run options and explicit overrides) and the
:class:`~medseg.plan.Plan` resolved from the dataset (:func:`prepare_plan`); both are saved in
``RUN_DIR/config.json`` and the plan with its fingerprint in ``RUN_DIR/plans.json`` (layout:
:mod:`medseg.utils.rundir`). :func:`train` wires named builders (data, network, loss, evaluator,
trainer, handlers) and runs them with crash-safe checkpoints and MLflow tracking.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from medseg.data.datalist import Dataset, load_dataset
from medseg.errors import InputError
from medseg.plan.planner import Plan, make_plan
from medseg.training.config import OVERRIDES, TrainConfig, TrainResult, load_run_config
from medseg.training.init_source import InitSource
from medseg.utils.files import atomic_write_text
from medseg.utils.rundir import PLANS_FILE, best_checkpoint, checkpoint_dir

__all__ = ["TrainConfig", "TrainResult", "train", "load_run_config", "prepare_plan", "OVERRIDES"]

logger = logging.getLogger(__name__)

def prepare_plan(cfg: TrainConfig, dataset: Dataset | None = None, source: InitSource | None = None) -> Plan:
    """Resolve ``cfg.plan`` (fingerprint + plan + overrides) once and write ``plans.json``; a set plan is kept.

    With ``cfg.init`` the plan travels with the weights (:func:`medseg.training.init.transfer_plan`);
    ``source`` is the already loaded ``cfg.init``.
    """
    from medseg.plan.fingerprint import extract_fingerprint
    from medseg.plan.network import resolve_device
    from medseg.plan.planner import ComputeBudget

    if cfg.plan is not None:
        return cfg.resolved_plan()
    dataset = dataset or load_dataset(cfg.data)
    device = resolve_device(cfg.device).type
    fingerprint = extract_fingerprint(dataset)
    budget = ComputeBudget.for_device(device)
    extra: dict[str, Any] = {}
    if cfg.init:
        from medseg.training.init import read_source, transfer_plan

        source = source or read_source(cfg.init)
        plan, sources = transfer_plan(source, fingerprint, dataset, budget, cfg)
        extra = {"init": source.describe()}
    else:
        plan, sources = make_plan(fingerprint, dataset, budget, cfg.overrides())
    cfg.plan, cfg.plan_sources = plan.to_dict(), sources
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / PLANS_FILE, json.dumps({"fingerprint": fingerprint, "plan": cfg.plan,
                                                    "sources": sources, **extra}, indent=1) + "\n")
    user = sorted(k for k, v in sources.items() if v == "user")
    if cfg.init:
        logger.info("plan from %s: %s", cfg.init, ", ".join(sorted(k for k, v in sources.items() if v == "source")))
    logger.info("plan for %s: spacing %s, patch %s, %s %s, batch %d%s", device, list(plan.spacing),
                list(plan.patch_size), plan.network.name, list(plan.network.filters), plan.batch_size,
                f"; from the user: {', '.join(user)}" if user else "")
    return plan


def _start(cfg: TrainConfig, resume: bool) -> tuple[Any, Dataset]:
    """Checks before anything is written: resume state, config values, the dataset."""
    from medseg.handlers.checkpoint import latest_checkpoint
    from medseg.training import distributed as dist

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


def _init_source(cfg: TrainConfig, fresh: bool) -> InitSource | None:
    """The ``--init`` source of a run that starts now (a resumed run has its weights in its checkpoint)."""
    if not cfg.init or not fresh:
        return None
    from medseg.training import distributed as dist
    from medseg.training.init import init_tags, read_source

    if cfg.freeze_encoder_epochs and dist.world_size() > 1:
        raise InputError("--freeze-encoder-epochs: not available with --nproc > 1 (DDP needs every parameter to "
                         "train in every step)")
    source = read_source(cfg.init)
    cfg.tags = {**cfg.tags, **init_tags(source)}
    return source


def _initialise(cfg: TrainConfig, network: Any, source: InitSource, plan: Plan, tracker: Any) -> None:
    """Load the source's weights into ``network``; ``RUN_DIR/init.json`` holds the report (rank 0)."""
    from medseg.training import distributed as dist
    from medseg.training.init import initialise
    from medseg.utils.rundir import INIT_FILE

    report = initialise(network, source, plan)
    if dist.is_main():
        atomic_write_text(Path(cfg.out) / INIT_FILE, json.dumps(report, indent=1) + "\n")
        tracker.log_artifact(Path(cfg.out) / INIT_FILE)


def train(cfg: TrainConfig, resume: bool = False) -> TrainResult:
    """Train on ``cfg.data`` with the plan (resolved here if not yet); see :mod:`medseg.utils.rundir` for outputs."""
    from monai.utils import set_determinism

    from medseg.training import distributed as dist
    from medseg.training.builders import (
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
    source = _init_source(cfg, resumed is None)
    plan = prepare_plan(cfg, dataset, source) if dist.is_main() or cfg.plan is not None else None
    if plan is None:
        raise RuntimeError("a multi-process run needs its plan resolved before the processes start")
    loss, engine_loss, dist_key = build_loss(cfg, plan)
    set_determinism(seed=cfg.seed)
    data = build_data(cfg, plan, dataset, dist_key)
    tracker = start_tracking(cfg, plan, data, resume, loss)
    try:
        from medseg.plan.network import network_from_plan

        network = network_from_plan(plan.network, plan.in_channels, plan.out_channels)
        if source is not None:
            _initialise(cfg, network, source, plan, tracker)
        network = network.to(device)
        evaluator = build_evaluator(plan, network, data.val_loader, device, amp)
        trainer, optimizer, scheduler = build_trainer(cfg, network, engine_loss, data.train_loader, evaluator, device, amp,
                                           dist_key)
        saver = attach_epoch_handlers(cfg, plan, trainer, evaluator, optimizer, scheduler, network, tracker, loss, resumed)
        if cfg.freeze_encoder_epochs:
            from medseg.training.freeze import FreezeEncoder

            FreezeEncoder(network, cfg.freeze_encoder_epochs).attach(trainer)
        if source is not None:
            from medseg.training.init import attach_initial_validation

            attach_initial_validation(trainer, evaluator, tracker, saver)
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
