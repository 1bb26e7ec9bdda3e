"""Training workflow: MONAI's ignite SupervisedTrainer / SupervisedEvaluator with crash-safe
checkpoints, a per-epoch metric journal and MLflow tracking.

Run directory layout::

    RUN_DIR/config.json            resolved configuration (also an MLflow artifact)
    RUN_DIR/checkpoints/last_epoch=N.pt   newest two, written atomically
    RUN_DIR/checkpoints/best.pt    best validation mean Dice
    RUN_DIR/metrics.jsonl          one line per epoch (train loss, validation metrics, lr)
    RUN_DIR/mlflow_run.json        the MLflow run this directory belongs to
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Events

from medseg.errors import InputError
from medseg.utils.files import atomic_write_text

__all__ = ["TrainConfig", "TrainResult", "train", "load_run_config"]

logger = logging.getLogger(__name__)
CONFIG_FILE = "config.json"


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved as ``RUN_DIR/config.json``."""

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
    batch_size: int = 2
    samples_per_case: int = 2
    lr: float = 2e-3
    weight_decay: float = 1e-5
    val_interval: int = 1
    channels: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[int, ...] = (2, 2, 2)
    num_res_units: int = 1
    pixdim: tuple[float, float, float] = (1.6, 1.6, 2.5)
    patch_size: tuple[int, int, int] = (48, 48, 32)
    hu_window: tuple[float, float] = (-250.0, 350.0)
    cache_rate: float = 1.0
    num_workers: int = 0
    check_data: bool = True
    progress: bool = True

    def validate(self) -> None:
        if self.epochs < 1:
            raise InputError(f"--epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise InputError(f"--lr must be > 0, got {self.lr}")
        if not 1 <= self.val_interval <= self.epochs:
            raise InputError(f"--val-interval must be in [1, --epochs={self.epochs}], got {self.val_interval}")
        if len(self.channels) < 2:
            raise InputError(f"--channels needs at least two levels, got {list(self.channels)}")
        factor = 2 ** len(self.strides)
        if any(p % factor for p in self.patch_size):
            raise InputError(f"--patch-size {list(self.patch_size)}: each side must be divisible by {factor}")
        if not 0.0 <= self.cache_rate <= 1.0:
            raise InputError(f"--cache-rate must be in [0, 1], got {self.cache_rate}")

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - set(names))
        if unknown:
            raise InputError(f"unknown training config keys: {', '.join(unknown)}")
        values = {k: (tuple(v) if isinstance(v, list) and k != "loss_args" else v) for k, v in raw.items()}
        return cls(**values)


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
    return TrainConfig.from_dict(json.loads(path.read_text()))


def _pipeline_config(cfg: TrainConfig, num_classes: int, modality: str, dist_key: str | None):
    from medseg.data.pipeline import PipelineConfig

    return PipelineConfig(pixdim=cfg.pixdim, patch_size=cfg.patch_size, num_classes=num_classes,
                          modality=modality, hu_window=cfg.hu_window, samples_per_case=cfg.samples_per_case,
                          distance_map_key=dist_key)


def _loaders(cfg: TrainConfig, train_files, val_files, pcfg):
    from monai.data import CacheDataset, DataLoader, Dataset

    from medseg.data.pipeline import train_transforms, val_transforms
    from medseg.engine.distributed import is_main, samplers

    def dataset(files, transform):
        if cfg.cache_rate > 0:
            return CacheDataset(files, transform, cache_rate=cfg.cache_rate, num_workers=2,
                                progress=cfg.progress and is_main())
        return Dataset(files, transform)

    train_ds = dataset(train_files, train_transforms(pcfg))
    val_ds = dataset(val_files, val_transforms(pcfg))
    train_sampler, val_sampler = samplers(train_ds, val_ds)  # None, None in a single process
    train_loader = DataLoader(train_ds, batch_size=cfg.batch_size, shuffle=train_sampler is None,
                              sampler=train_sampler, num_workers=cfg.num_workers, persistent_workers=cfg.num_workers > 0)
    val_loader = DataLoader(val_ds, batch_size=1, sampler=val_sampler, num_workers=cfg.num_workers)
    return train_loader, val_loader


def _validation_metrics(num_classes: int, labels: dict[int, str]) -> tuple[str, dict[str, Any]]:
    from medseg.handlers.metrics import validation_metrics

    metrics = validation_metrics(num_classes=num_classes, label_names=labels)
    return "mean_dice", metrics


def _git_commit() -> str:
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _log_best_model(tracker: Any, network: torch.nn.Module, best: Path, patch_size: tuple[int, ...]) -> None:
    """Log the best weights as an MLflow PyTorch model (torch.export "pt2" format, no pickle).

    The (2, 1, *patch_size) input example keeps the batch dimension dynamic; the spatial size is
    the training patch, the window a sliding-window inferer feeds it.
    """
    import copy

    import numpy as np

    from medseg.handlers.checkpoint import load_checkpoint

    model = copy.deepcopy(network).cpu().eval()
    if best.is_file():
        model.load_state_dict(load_checkpoint(best)["model"])
    tracker.log_model(model, np.zeros((2, 1, *patch_size), dtype=np.float32))


def _best_score(ckpt_dir: Path, resumed: dict[str, Any]) -> float | None:
    """Best validation score so far: ``best.pt`` may be newer than the checkpoint resumed from."""
    from medseg.handlers.checkpoint import load_checkpoint

    scores = [resumed.get("best_score")]
    if (ckpt_dir / "best.pt").is_file():
        try:
            scores.append(load_checkpoint(ckpt_dir / "best.pt").get("best_score"))
        except InputError as exc:
            logger.warning("ignoring best checkpoint: %s", exc)
    known = [float(s) for s in scores if s is not None]
    return max(known) if known else None


def _loss_schedule(loss: torch.nn.Module) -> Any:
    """The paper's region-to-boundary rebalancing for a loss with ``region`` and ``boundary`` terms."""
    from medseg.handlers.loss_schedule import BoundaryLossSchedule
    from medseg.losses.compound import WeightedSumLoss

    for module in loss.modules():
        if isinstance(module, WeightedSumLoss) and {"region", "boundary"} <= set(module.weights):
            return BoundaryLossSchedule(loss=loss)
    return None


def train(cfg: TrainConfig, resume: bool = False) -> TrainResult:
    """Train a 3D U-Net on ``cfg.data``; see the module docstring for what lands in ``cfg.out``."""
    from ignite.handlers import ProgressBar
    from monai.engines import SupervisedEvaluator, SupervisedTrainer
    from monai.engines.utils import default_prepare_batch
    from monai.handlers import LrScheduleHandler, ValidationHandler
    from monai.inferers import SimpleInferer, SlidingWindowInferer
    from monai.transforms import AsDiscreted, Compose
    from monai.utils import set_determinism

    from medseg.data.datalist import load_dataset, split_train_val
    from medseg.engine import distributed as dist
    from medseg.engine.batch import DistanceMapLossAdapter, PrepareBatchWithDistanceMap
    from medseg.engine.network import build_network, resolve_device
    from medseg.handlers.checkpoint import CheckpointSaver, latest_checkpoint, restore
    from medseg.handlers.tracking import MLflowTracker, default_tracking_uri
    from medseg.losses import create_loss

    run_dir = Path(cfg.out)
    ckpt_dir = run_dir / "checkpoints"
    resumed = None
    if resume:
        found = latest_checkpoint(ckpt_dir) if ckpt_dir.is_dir() else None
        if found is None:
            raise InputError(f"--resume: no readable checkpoint in {ckpt_dir} (start without --resume)")
        resumed = found
        logger.info("resuming from %s (epoch %d)", found[0], found[1]["epoch"])
    elif ckpt_dir.is_dir() and any(ckpt_dir.glob("*.pt")):
        raise InputError(f"--out {run_dir}: already holds checkpoints; use --resume to continue it or "
                         "choose another folder")
    cfg.validate()
    device = resolve_device(cfg.device)
    main_rank = dist.is_main()
    if dist.world_size() > 1 and device.type == "cuda":
        import ignite.distributed as idist

        device = torch.device(f"cuda:{idist.get_local_rank()}")
        torch.cuda.set_device(device)
    if cfg.amp and device.type != "cuda":
        logger.warning("--amp needs a CUDA device; training in float32 on %s", device)
    amp = cfg.amp and device.type == "cuda"

    dataset = load_dataset(cfg.data)
    if cfg.check_data and not resume and main_rank:
        from medseg.data.check import ensure_dataset_ok

        for warning in ensure_dataset_ok(cfg.data):
            logger.warning("dataset: %s", warning)
    num_classes = dataset.num_classes
    loss = create_loss(cfg.loss, **cfg.loss_args)
    dist_key = "dist" if getattr(loss, "uses_distance_map", False) else None

    set_determinism(seed=cfg.seed)
    train_files, val_files = split_train_val(dataset.training, fold=cfg.fold, folds=cfg.folds, seed=cfg.seed)
    pcfg = _pipeline_config(cfg, num_classes, dataset.modality, dist_key)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.tracking_uri is None:  # resolved once and saved, so --resume finds the same store from anywhere
        cfg.tracking_uri = default_tracking_uri()
    config = cfg.to_dict()
    tracking_uri = cfg.tracking_uri
    tracker: Any = dist.NullTracker()
    if main_rank:  # only rank 0 writes the run directory and talks to MLflow
        atomic_write_text(run_dir / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
        atomic_write_text(run_dir / "datalist.json", json.dumps({"training": train_files, "validation": val_files},
                                                                indent=2) + "\n")
        tracker = MLflowTracker(run_dir, tracking_uri, cfg.experiment, cfg.run_name, resume=resume)

    train_loader, val_loader = _loaders(cfg, train_files, val_files, pcfg)
    network = build_network(num_classes, channels=cfg.channels, strides=cfg.strides,
                            num_res_units=cfg.num_res_units).to(device)
    optimizer = torch.optim.AdamW(network.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs, eta_min=cfg.lr * 0.01)

    key_metric, metrics = _validation_metrics(num_classes, dataset.labels)
    post = Compose([AsDiscreted(keys="pred", argmax=True, to_onehot=num_classes),
                    AsDiscreted(keys="label", to_onehot=num_classes)])
    evaluator = SupervisedEvaluator(
        device=device, val_data_loader=val_loader, network=network,
        inferer=SlidingWindowInferer(roi_size=cfg.patch_size, sw_batch_size=4, overlap=0.25, mode="gaussian"),
        postprocessing=post, key_val_metric={key_metric: metrics.pop(key_metric)}, additional_metrics=metrics,
        amp=amp)
    trainer = SupervisedTrainer(
        device=device, max_epochs=cfg.epochs, train_data_loader=train_loader, network=dist.ddp(network, device),
        optimizer=optimizer, loss_function=DistanceMapLossAdapter(loss) if dist_key else loss,
        prepare_batch=PrepareBatchWithDistanceMap(dist_key) if dist_key else default_prepare_batch,
        inferer=SimpleInferer(), amp=amp, decollate=False,
        train_handlers=[LrScheduleHandler(scheduler, print_lr=False),
                        ValidationHandler(validator=evaluator, interval=cfg.val_interval, epoch_level=True)])

    schedule = _loss_schedule(loss)
    if schedule is not None:
        schedule.attach(trainer)

    objects: dict[str, Any] = {"model": network, "optimizer": optimizer, "scheduler": scheduler, "trainer": trainer}
    if amp and trainer.scaler is not None:
        objects["scaler"] = trainer.scaler
    saver = CheckpointSaver(ckpt_dir, objects, keep=2,
                            extra=lambda: {"config": config, "labels": {str(k): v for k, v in dataset.labels.items()},
                                           "modality": dataset.modality,
                                           "history": tracker.history, "best_score": saver.best_score})
    if resumed is not None:
        restore(resumed[1], objects)
        saver.best_score = _best_score(ckpt_dir, resumed[1])
        tracker.restore_history(resumed[1].get("history", []), up_to_epoch=resumed[1]["epoch"])
        trainer.state.max_epochs = cfg.epochs
        scheduler.T_max = cfg.epochs  # a resumed run may be given more epochs: the cosine spans them all
    else:
        tracker.log_params({**config, "num_classes": num_classes, "train_cases": len(train_files),
                            "val_cases": len(val_files), "loss_class": type(loss).__name__})
        tracker.set_tags({"git_commit": _git_commit(), "dataset": str(Path(cfg.data).resolve()),
                          "fold": cfg.fold, "loss": cfg.loss, "device": str(device)})
        tracker.log_artifact(run_dir / CONFIG_FILE)
        tracker.log_artifact(run_dir / "datalist.json")
    tracker.push()

    losses: list[float] = []

    @trainer.on(Events.EPOCH_STARTED)
    def _reset(engine) -> None:  # noqa: ANN001
        losses.clear()

    @trainer.on(Events.ITERATION_COMPLETED)
    def _collect(engine) -> None:  # noqa: ANN001
        losses.append(engine.state.output["loss"].detach().item())

    @trainer.on(Events.EPOCH_COMPLETED)
    def _epoch_done(engine) -> None:  # noqa: ANN001
        record = {"train_loss": dist.reduce_mean(sum(losses) / max(len(losses), 1)),
                  "lr": optimizer.param_groups[0]["lr"]}
        validated = engine.state.epoch % cfg.val_interval == 0  # when ValidationHandler has run
        if validated:
            record.update({f"val_{k}": float(v) for k, v in evaluator.state.metrics.items()
                           if isinstance(v, (int, float))})
        if not main_rank:
            return
        tracker.record(engine.state.epoch, record)
        saver.save_last(engine)
        if validated and saver.save_best(engine, record[f"val_{key_metric}"]):
            logger.info("epoch %d: new best %s %.4f", engine.state.epoch, key_metric, saver.best_score)
        tracker.push()
        logger.info("epoch %d/%d: %s", engine.state.epoch, cfg.epochs,
                    ", ".join(f"{k}={v:.4f}" for k, v in record.items()))

    if cfg.progress and main_rank and sys.stderr.isatty():  # no bar redraws in logs and pipes
        ProgressBar(persist=False).attach(trainer, output_transform=lambda out: {"loss": out["loss"].detach().item()})

    try:
        if resumed is None or trainer.state.epoch < cfg.epochs:
            trainer.run()
    except BaseException:
        tracker.finish("KILLED")
        raise
    best = ckpt_dir / "best.pt"
    if main_rank:
        tracker.log_artifact(best, "checkpoints")
        tracker.log_artifact(run_dir / "metrics.jsonl")
        _log_best_model(tracker, network, best, cfg.patch_size)
        tracker.finish("FINISHED")
    return TrainResult(run_dir=run_dir, best_checkpoint=best, best_metric=float(saver.best_score or 0.0),
                       epochs=cfg.epochs, mlflow_run_id=tracker.run_id, tracking_uri=tracking_uri)
