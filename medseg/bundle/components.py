"""Typed building blocks that MONAI bundle configs reference with ``_target_: medseg.bundle.components...``.

Bundle configs hold wiring only: every step that would otherwise be a ``$`` Python expression
(a path join, a fold split, moving a network to a device, a rank rule) is one of these functions,
so the configs also load with :func:`medseg.utils.trust.load_config` (no ``$`` at all).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from medseg.utils.rundir import VAL_KEY_METRIC, VAL_PREFIX

__all__ = [
    "bundle_path",
    "fold_datalist",
    "image_datalist",
    "to_device",
    "parameters",
    "run_engine",
    "validation_metrics",
    "key_metric",
    "additional_metrics",
    "init_distributed",
    "unwrap",
    "distributed_network",
    "distributed_sampler",
    "is_not_main",
    "cleanup_distributed",
]

logger = logging.getLogger(__name__)


def bundle_path(root: str, name: str) -> str:
    """``root/name`` as a string (``"@bundle_root"`` + ``"models"`` -> ``"./models"``)."""
    return str(Path(root) / name)


def fold_datalist(dataset_dir: str, part: str = "training", fold: int = 0, folds: int = 5, seed: int = 0,
                  ) -> list[dict[str, str]]:
    """Cases of an MSD / nnU-Net dataset: ``training`` or ``validation`` split of fold ``fold``, or ``test``.

    The split is patient-wise and seeded, the same as ``medseg train --fold K --folds N --seed S``.
    """
    from medseg.data.datalist import load_dataset, split_train_val
    from medseg.errors import InputError

    dataset = load_dataset(dataset_dir)
    if part == "test":
        return list(dataset.test)
    train, val = split_train_val(dataset.training, fold=fold, folds=folds, seed=seed)
    if part == "training":
        return train
    if part == "validation":
        return val
    raise InputError(f"part must be training, validation or test, got {part!r}")


def image_datalist(dataset_dir: str, part: str = "test") -> list[dict[str, str]]:
    """``[{"image": path}]`` for inference: a dataset's ``part`` images, or every NIfTI file of a folder."""
    from medseg.inference.predict import find_inputs

    root = Path(dataset_dir)
    if (root / "dataset.json").is_file():
        from medseg.data.datalist import load_dataset

        dataset = load_dataset(root)
        items = dataset.test if part == "test" else dataset.training
        return [{"image": it["image"]} for it in items]
    return [{"image": str(Path(source).resolve())} for _case, source in find_inputs(root)]


def to_device(module: torch.nn.Module, device: str | torch.device) -> torch.nn.Module:
    """``module.to(device)``."""
    return module.to(torch.device(device) if isinstance(device, str) else device)


def parameters(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The trainable parameters of ``module`` (for an optimizer's ``params``)."""
    return [p for p in module.parameters() if p.requires_grad]


def run_engine(engine: Any) -> Any:
    """Run a MONAI / ignite engine (a bundle's ``run`` step) and return its final state."""
    engine.run()
    return engine.state


def validation_metrics(num_classes: int, labels: Mapping[str | int, str] | None = None, hd_convention: str = "monai",
                       prefix: str = VAL_PREFIX) -> dict[str, Any]:
    """medseg's validation metrics, named for a bundle: ``val_mean_dice``, ``val_mean_hd95``, ``val_dice_<name>``...

    The ignite metrics of :func:`medseg.handlers.metrics.validation_metrics` (one accumulator, the
    empty-mask policy of :mod:`medseg.metrics.policy`, HD95 in mm with ``hd_convention``), so a
    bundle's validation scores are those of ``medseg train`` and ``medseg evaluate``. Across
    ranks the per-case sums are all-reduced: every rank must run the evaluator.

    Args:
        num_classes: C, one-hot channels including background.
        labels: ``{label: name}`` (JSON keys are strings) naming the per-class metrics.
        hd_convention: ``"monai"``, ``"medpy"`` or ``"surface_distance"``.
        prefix: put before every metric name.
    """
    from ignite.metrics import MetricsLambda

    from medseg.handlers.metrics import validation_metrics as medseg_metrics

    names = {int(k): str(v) for k, v in (labels or {}).items()}
    metrics = medseg_metrics(int(num_classes), names, hd_convention=hd_convention)
    hd95 = [m for k, m in metrics.items() if k.startswith("hd95_")]
    metrics["mean_hd95"] = MetricsLambda(_mean, *hd95)
    return {f"{prefix}{k}": m for k, m in metrics.items()}


def key_metric(metrics: Mapping[str, Any], name: str = VAL_KEY_METRIC) -> dict[str, Any]:
    """``{name: metrics[name]}``: an evaluator's ``key_val_metric``."""
    if name not in metrics:
        raise ValueError(f"name must be one of {sorted(metrics)}, got {name!r}")
    return {name: metrics[name]}


def additional_metrics(metrics: Mapping[str, Any], key: str = VAL_KEY_METRIC) -> dict[str, Any]:
    """Every metric but the key metric: an evaluator's ``additional_metrics``."""
    return {k: m for k, m in metrics.items() if k != key}


def init_distributed(backend: str = "auto") -> torch.device:
    """Join the ``torchrun`` process group (NCCL with one GPU per local rank, else Gloo); this rank's device.

    The same code as ``medseg train --nproc``: :func:`medseg.training.distributed.init_process_group`.
    """
    from medseg.training.distributed import init_process_group

    return init_process_group(backend)


def distributed_network(network: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``DistributedDataParallel`` around ``network`` on ``device`` (:func:`medseg.training.distributed.ddp`)."""
    from medseg.training.distributed import ddp

    return ddp(network, device)


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside ``DistributedDataParallel`` (what validation and export run)."""
    from medseg.training.distributed import unwrap as _unwrap

    return _unwrap(module)


def distributed_sampler(dataset: Sequence[Any], train: bool = True) -> torch.utils.data.Sampler | None:
    """Training shards (shuffled, equal length) or validation shards (each case once); ``None`` in one process."""
    from medseg.training.distributed import distributed_sampler as _sampler

    return _sampler(dataset, train=train)


def is_not_main() -> bool:
    """True on ranks > 0: the value of ``_disabled_`` for handlers that only rank 0 may run.

    Only handlers that write files or logs may be disabled this way; anything that takes part
    in a collective (validation, metric savers) must run on every rank.
    """
    from medseg.training.distributed import is_main

    return not is_main()


def cleanup_distributed() -> None:
    """Wait for every rank, then leave the process group (a bundle's ``finalize`` step)."""
    from medseg.training.distributed import leave_process_group

    leave_process_group()


def _mean(*values: float) -> float:
    return float(sum(values) / len(values)) if values else float("nan")
