"""The named parts of a training run, each built from the config and the plan: data, loss, evaluator,
trainer, epoch handlers and tracking. :func:`medseg.training.train.train` wires them together.
"""

from __future__ import annotations

import copy
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Events

from medseg.data.datalist import Dataset, split_train_val
from medseg.errors import InputError
from medseg.plan.planner import Plan
from medseg.training import distributed as dist
from medseg.training.config import TrainConfig
from medseg.utils.files import atomic_write_text
from medseg.utils.rundir import (
    BEST_CHECKPOINT,
    CHECKPOINT_DIR,
    CONFIG_FILE,
    DATALIST_FILE,
    KEY_METRIC,
    PLANS_FILE,
    VAL_PREFIX,
    checkpoint_dir,
)

__all__ = ["RunData", "run_device", "build_data", "build_loss", "build_evaluator", "build_trainer",
           "attach_epoch_handlers", "start_tracking", "finish_run", "validation_post", "DISTANCE_KEY"]

logger = logging.getLogger(__name__)
DISTANCE_KEY = "dist"


@dataclass
class RunData:
    train_files: list[dict[str, Any]]
    val_files: list[dict[str, Any]]
    train_loader: Any
    val_loader: Any


def run_device(cfg: TrainConfig) -> tuple[torch.device, bool]:
    """The device of this process (its own GPU in a multi-process run) and whether AMP is on."""
    from medseg.plan.network import resolve_device

    device = resolve_device(cfg.device)
    if dist.world_size() > 1 and device.type == "cuda":
        import ignite.distributed as idist

        device = torch.device(f"cuda:{idist.get_local_rank()}")
        torch.cuda.set_device(device)
    if cfg.amp and device.type != "cuda":
        logger.warning("--amp needs a CUDA device; training in float32 on %s", device)
    return device, cfg.amp and device.type == "cuda"


def build_data(cfg: TrainConfig, plan: Plan, dataset: Dataset, distance_map_key: str | None) -> RunData:
    """The fold split and its loaders: patches from the preprocessed store, or a RAM cache
    (:mod:`medseg.training.loaders`); sharded across ranks in a multi-process run."""
    from medseg.training.loaders import make_datasets, make_loaders

    train_files, val_files = split_train_val(dataset.training, fold=cfg.fold, folds=cfg.folds,
                                            seed=cfg.seed if cfg.split_seed is None else cfg.split_seed)
    train_ds, val_ds = make_datasets(cfg, plan, dataset, train_files, val_files, distance_map_key)
    train_loader, val_loader = make_loaders(cfg, plan, train_ds, val_ds)
    return RunData(train_files, val_files, train_loader, val_loader)


def build_loss(cfg: TrainConfig, plan: Plan) -> tuple[torch.nn.Module, torch.nn.Module, str | None]:
    """``(loss, engine loss, distance-map key)``: the registered loss and what the trainer calls.

    Region labels train sigmoid outputs on region channels; a DynUNet with deep-supervision heads
    gets the deep-supervision wrapper; a loss that declares ``uses_distance_map`` receives the
    cached signed distance maps from the batch.
    """
    from medseg.losses import create_loss
    from medseg.losses.deep_supervision import DeepSupervisionLoss
    from medseg.training.batch import DeepSupervisionHeads, DistanceMapLossAdapter

    args = dict(cfg.loss_args)
    if plan.label_spec.is_regions:
        args.setdefault("sigmoid", True)
        args.setdefault("to_onehot_y", False)
    loss = create_loss(cfg.loss, **args)
    needs_distance = bool(getattr(loss, "uses_distance_map", False))
    if needs_distance and plan.label_spec.is_regions:
        raise InputError(f"--loss {cfg.loss}: distance-map losses are not available with region labels")
    engine_loss: torch.nn.Module = loss
    if plan.network.name == "dynunet" and plan.network.deep_supervision:
        engine_loss = DeepSupervisionHeads(DeepSupervisionLoss(loss))
    key = DISTANCE_KEY if needs_distance else None
    return loss, (DistanceMapLossAdapter(engine_loss) if key else engine_loss), key


def validation_post(plan: Plan) -> Any:
    """Post-processing of validation outputs into the one-hot / region masks the metrics take."""
    from monai.transforms import Activationsd, AsDiscreted, Compose

    if plan.label_spec.is_regions:
        return Compose([Activationsd(keys="pred", sigmoid=True), AsDiscreted(keys="pred", threshold=0.5)])
    n = plan.out_channels
    return Compose([AsDiscreted(keys="pred", argmax=True, to_onehot=n), AsDiscreted(keys="label", to_onehot=n)])


def build_evaluator(plan: Plan, network: torch.nn.Module, val_loader: Any, device: torch.device, amp: bool) -> Any:
    """Sliding-window validation with medseg's metrics (per class, or per region)."""
    from monai.engines import SupervisedEvaluator
    from monai.inferers import SlidingWindowInferer

    from medseg.handlers.metrics import validation_metrics

    spec = plan.label_spec
    names = {k - 1: v for k, v in spec.names.items()} if spec.is_regions else spec.names
    metrics = validation_metrics(plan.out_channels, names, include_background=spec.is_regions)
    return SupervisedEvaluator(
        device=device, val_data_loader=val_loader, network=dist.unwrap(network),
        inferer=SlidingWindowInferer(roi_size=plan.patch_size, sw_batch_size=4, overlap=0.25, mode="gaussian"),
        postprocessing=validation_post(plan), key_val_metric={KEY_METRIC: metrics.pop(KEY_METRIC)},
        additional_metrics=metrics, amp=amp)


def build_trainer(cfg: TrainConfig, network: torch.nn.Module, engine_loss: torch.nn.Module, train_loader: Any,
                  evaluator: Any, device: torch.device, amp: bool, distance_map_key: str | None,
                  ) -> tuple[Any, Any, Any]:
    """``(SupervisedTrainer, optimizer, lr scheduler)``: AdamW, cosine schedule; ``evaluator`` is run by the epoch
    handlers when the validation schedule says so (:mod:`medseg.training.validation`)."""
    from monai.engines import SupervisedTrainer
    from monai.engines.utils import default_prepare_batch
    from monai.handlers import LrScheduleHandler
    from monai.inferers import SimpleInferer

    from medseg.training.batch import PrepareBatchWithDistanceMap

    optimizer = torch.optim.AdamW(network.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs, eta_min=cfg.lr * 0.01)
    trainer = SupervisedTrainer(
        device=device, max_epochs=cfg.epochs, train_data_loader=train_loader, network=dist.ddp(network, device),
        optimizer=optimizer, loss_function=engine_loss,
        prepare_batch=PrepareBatchWithDistanceMap(distance_map_key) if distance_map_key else default_prepare_batch,
        inferer=SimpleInferer(), amp=amp, decollate=False,
        train_handlers=[LrScheduleHandler(scheduler, print_lr=False)])
    return trainer, optimizer, scheduler


def _best_score(ckpt_dir: Path, resumed: dict[str, Any]) -> float | None:
    """Best validation score so far: ``best.pt`` may be newer than the checkpoint resumed from."""
    from medseg.handlers.checkpoint import load_checkpoint

    scores = [resumed.get("best_score")]
    if (ckpt_dir / BEST_CHECKPOINT).is_file():
        try:
            scores.append(load_checkpoint(ckpt_dir / BEST_CHECKPOINT).get("best_score"))
        except InputError as exc:
            logger.warning("ignoring best checkpoint: %s", exc)
    known = [float(s) for s in scores if s is not None]
    return max(known) if known else None


def attach_epoch_handlers(cfg: TrainConfig, plan: Plan, trainer: Any, evaluator: Any, optimizer: Any, scheduler: Any,
                          network: torch.nn.Module, tracker: Any, loss: torch.nn.Module,
                          resumed: tuple[Path, dict[str, Any]] | None) -> Any:
    """Checkpoints, journal, loss schedule and progress bar; restores a resumed run. Returns the saver."""
    from ignite.handlers import ProgressBar

    from medseg.handlers.checkpoint import CheckpointSaver, restore
    from medseg.handlers.loss_schedule import schedule_for
    from medseg.training.validation import EpochValidation

    objects: dict[str, Any] = {"model": network, "optimizer": optimizer, "scheduler": scheduler, "trainer": trainer}
    if trainer.amp and trainer.scaler is not None:
        objects["scaler"] = trainer.scaler
    config = cfg.to_dict()
    spec = plan.label_spec
    ckpt_dir = checkpoint_dir(cfg.out)
    saver = CheckpointSaver(ckpt_dir, objects, keep=2, extra=lambda: {
        "config": config, "labels": {str(k): v for k, v in spec.names.items()}, "modality": plan.channel_names[0],
        "history": tracker.history, "best_score": saver.best_score})
    if resumed is not None:
        restore(resumed[1], objects)
        saver.best_score = _best_score(ckpt_dir, resumed[1])
        tracker.restore_history(resumed[1].get("history", []), up_to_epoch=resumed[1]["epoch"])
        trainer.state.max_epochs = cfg.epochs
        scheduler.T_max = cfg.epochs  # a resumed run may be given more epochs: the cosine spans them all
    schedule = schedule_for(loss)
    if schedule is not None:
        schedule.attach(trainer)

    from medseg.handlers.data_wait import DataWaitTimer

    data_wait = DataWaitTimer().attach(trainer)
    losses: list[float] = []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda _: losses.clear())
    trainer.add_event_handler(Events.ITERATION_COMPLETED,
                              lambda e: losses.append(e.state.output["loss"].detach().item()))

    def epoch_done(engine: Any) -> None:
        record = {"train_loss": dist.reduce_mean(sum(losses) / max(len(losses), 1)),
                  "lr": optimizer.param_groups[0]["lr"], "data_wait_fraction": dist.reduce_mean(data_wait.fraction)}
        validated, val_record = validation.after_epoch(engine.state.epoch)  # pseudo Dice; full when scheduled
        record.update(val_record)
        if not dist.is_main():
            return
        tracker.record(engine.state.epoch, record)
        saver.save_last(engine)
        if validated and saver.save_best(engine, record[VAL_PREFIX + KEY_METRIC]):
            logger.info("epoch %d: new best %s %.4f", engine.state.epoch, KEY_METRIC, saver.best_score)
        tracker.push()
        logger.info("epoch %d/%d: %s", engine.state.epoch, cfg.epochs,
                    ", ".join(f"{k}={v:.4f}" for k, v in record.items()))

    validation = EpochValidation(evaluator, plan, cfg.val_interval, cfg.val_budget, cfg.epochs,
                                 cfg.val_patches, cfg.seed).attach(trainer)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, epoch_done)
    if cfg.progress and dist.is_main() and sys.stderr.isatty():  # no bar redraws in logs and pipes
        ProgressBar(persist=False).attach(trainer, output_transform=lambda out: {"loss": out["loss"].detach().item()})
    return saver


def _git_commit() -> str:
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def start_tracking(cfg: TrainConfig, plan: Plan, data: RunData, resume: bool, loss: torch.nn.Module) -> Any:
    """Write config, datalist (rank 0) and open the MLflow run; other ranks get a tracker that does nothing."""
    from medseg.handlers.tracking import MLflowTracker, default_tracking_uri

    run_dir = Path(cfg.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.tracking_uri is None:  # resolved once and saved, so --resume finds the same store from anywhere
        cfg.tracking_uri = default_tracking_uri()
    if not dist.is_main():
        return dist.NullTracker()
    config = cfg.to_dict()
    atomic_write_text(run_dir / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    atomic_write_text(run_dir / DATALIST_FILE, json.dumps({"training": data.train_files,
                                                           "validation": data.val_files}, indent=2) + "\n")
    tracker = MLflowTracker(run_dir, cfg.tracking_uri, cfg.experiment, cfg.run_name, resume=resume)
    try:
        if not resume:
            sources = cfg.plan_sources or {}
            from medseg.plan.augmentation import augmentation_of, flatten

            aug = {f"aug.{k}": v for k, v in flatten(augmentation_of(plan)).items()}
            tracker.log_params({**config, **aug, "num_classes": plan.out_channels, "in_channels": plan.in_channels,
                                "train_cases": len(data.train_files), "val_cases": len(data.val_files),
                                "loss_class": type(loss).__name__})
            tracker.set_tags({"git_commit": _git_commit(), "dataset": str(Path(cfg.data).resolve()),
                              "fold": cfg.fold, "loss": cfg.loss, "device": cfg.device,
                              "plan_from_user": ",".join(sorted(k for k, v in sources.items() if v == "user")) or "-",
                              **cfg.tags})
            for name in (CONFIG_FILE, DATALIST_FILE, PLANS_FILE):
                if (run_dir / name).is_file():
                    tracker.log_artifact(run_dir / name)
        tracker.push()
    except BaseException:
        tracker.finish("FAILED")
        raise
    return tracker


def finish_run(tracker: Any, cfg: TrainConfig, network: torch.nn.Module, best: Path, plan: Plan) -> None:
    """Log the best checkpoint, the journal and the best model (MLflow pt2 format), and close the run.

    The ``(2, in_channels, *patch_size)`` input example keeps the batch dimension dynamic; the
    spatial size is the training patch, the window a sliding-window inferer feeds it.
    """
    import numpy as np

    from medseg.handlers.checkpoint import load_checkpoint
    from medseg.utils.rundir import JOURNAL_FILE

    tracker.log_artifact(best, CHECKPOINT_DIR)
    tracker.log_artifact(Path(cfg.out) / JOURNAL_FILE)
    model = copy.deepcopy(dist.unwrap(network)).cpu().eval()
    if best.is_file():
        model.load_state_dict(load_checkpoint(best)["model"])
    tracker.log_model(model, np.zeros((2, plan.in_channels, *plan.patch_size), dtype=np.float32))
    tracker.finish("FINISHED")
