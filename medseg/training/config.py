"""The definition of a training run: :class:`TrainConfig` (saved as ``RUN_DIR/config.json``) and its result.

Lives apart from the workflow so the builders, the launcher, the study and the bundle template can all
import it downwards.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg.errors import InputError
from medseg.plan.planner import Plan
from medseg.utils.rundir import CONFIG_FILE

__all__ = ["TrainConfig", "TrainResult", "load_run_config", "OVERRIDES", "FINETUNE_LR"]

# TrainConfig field -> plan field it overrides
OVERRIDES = {"pixdim": "spacing", "patch_size": "patch_size", "batch_size": "batch_size",
             "samples_per_case": "samples_per_case", "net": "net", "channels": "filters", "strides": "strides",
             "deep_supervision": "deep_supervision", "num_res_units": "num_res_units", "augmentation": "augmentation"}
# default --lr of a run started from trained weights (--init); measured by benchmarks/bench_finetune.py
FINETUNE_LR = 5e-4


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved as ``RUN_DIR/config.json``.

    Fields defaulting to None are planned from the dataset (:mod:`medseg.plan`); a value given here
    overrides its planned value. ``plan`` holds the resolved plan once the run has started.
    ``cache``: ``store`` (patches read from the preprocessed store under ``store``, default
    ``DATA/.medseg_store``) or ``ram`` (whole volumes in a CacheDataset); ``num_workers`` ``None``: from
    the CPU count; ``iterations_per_epoch`` ``None``: one item per training case.
    ``split_seed`` seeds the fold split (``None``: ``seed``), so runs that differ only in ``seed``
    share one split; ``val_interval`` ``None``: a pseudo Dice on ``val_patches`` fixed patches per validation
    case (``None``: planned) every epoch and the full validation when it counts, within ``val_budget`` of the training time
    (:mod:`medseg.training.validation`); ``augmentation``: overrides of the plan's augmentation section by
    flattened name (``{"noise.prob": 0.3}``, :mod:`medseg.plan.augmentation`); ``tags`` are added to the
    MLflow run (``mlflow.parentRunId`` nests it under a parent).
    ``init`` starts from trained weights (a run, bundle or checkpoint: :mod:`medseg.training.init`), whose
    encoder stays frozen for the first ``freeze_encoder_epochs`` epochs.
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
    val_interval: int | None = None
    val_budget: float = 0.2
    val_patches: int | None = None
    cache_rate: float = 1.0
    num_workers: int | None = None
    cache: str = "store"
    store: str | None = None
    iterations_per_epoch: int | None = None
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
    augmentation: dict[str, Any] | None = None
    plan: dict[str, Any] | None = None
    plan_sources: dict[str, str] | None = None
    split_seed: int | None = None
    tags: dict[str, str] = field(default_factory=dict)
    init: str | None = None
    freeze_encoder_epochs: int = 0

    def validate(self) -> None:
        if self.epochs < 1:
            raise InputError(f"--epochs must be >= 1, got {self.epochs}")
        if self.batch_size is not None and self.batch_size < 1:
            raise InputError(f"--batch-size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise InputError(f"--lr must be > 0, got {self.lr}")
        if self.val_interval is not None and not 1 <= self.val_interval <= self.epochs:
            raise InputError(f"--val-interval must be in [1, --epochs={self.epochs}], got {self.val_interval}")
        if not 0.0 < self.val_budget <= 1.0:
            raise InputError(f"--val-budget must be in (0, 1], got {self.val_budget}")
        if self.val_patches is not None and self.val_patches < 1:
            raise InputError(f"--val-patches must be >= 1, got {self.val_patches}")
        if self.channels is not None and len(self.channels) < 2:
            raise InputError(f"--channels needs at least two levels, got {list(self.channels)}")
        if self.patch_size is not None and self.strides is not None:
            factor = 2 ** len(self.strides)
            if any(p % factor for p in self.patch_size):
                raise InputError(f"--patch-size {list(self.patch_size)}: each side must be divisible by {factor}")
        if self.freeze_encoder_epochs and (self.init is None or not 0 < self.freeze_encoder_epochs <= self.epochs):
            raise InputError(f"--freeze-encoder-epochs {self.freeze_encoder_epochs}: needs --init and a value in "
                             f"[0, --epochs={self.epochs}]")
        if not 0.0 <= self.cache_rate <= 1.0:
            raise InputError(f"--cache-rate must be in [0, 1], got {self.cache_rate}")
        if self.cache not in ("store", "ram"):
            raise InputError(f"--cache must be store or ram, got {self.cache!r}")
        if self.num_workers is not None and self.num_workers < 0:
            raise InputError(f"--num-workers must be >= 0, got {self.num_workers}")
        if self.iterations_per_epoch is not None and self.iterations_per_epoch < 1:
            raise InputError(f"--iterations-per-epoch must be >= 1, got {self.iterations_per_epoch}")

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
