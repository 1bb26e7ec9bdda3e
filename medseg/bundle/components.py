"""Typed building blocks that MONAI bundle configs reference with ``_target_: medseg.bundle.components...``.

Bundle configs hold wiring only: every step that would otherwise be a ``$`` Python expression
(a path join, a fold split, moving a network to a device, a rank rule) is one of these functions,
so the configs also load with :func:`medseg.bundle.trust.load_config` (no ``$`` at all).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "bundle_path",
    "fold_datalist",
    "image_datalist",
    "to_device",
    "parameters",
    "run_engine",
    "init_distributed",
    "distributed_network",
    "distributed_sampler",
    "rank_zero_only",
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
    from medseg.engine.predict import find_inputs

    root = Path(dataset_dir)
    if (root / "dataset.json").is_file():
        from medseg.data.datalist import load_dataset

        dataset = load_dataset(root)
        items = dataset.test if part == "test" else dataset.training
        return [{"image": it["image"]} for it in items]
    return [{"image": str(p.resolve())} for p in find_inputs(root)]


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


def init_distributed(backend: str = "auto") -> torch.device:
    """Join the ``torchrun`` process group; NCCL with one GPU per local rank, else Gloo on CPU.

    Returns the device this rank computes on. Reads ``LOCAL_RANK`` as set by ``torchrun``.
    """
    import torch.distributed as dist

    cuda = torch.cuda.is_available()
    chosen = ("nccl" if cuda else "gloo") if backend == "auto" else backend
    if not dist.is_initialized():
        dist.init_process_group(backend=chosen)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda and chosen == "nccl":
        torch.cuda.set_device(local_rank)
        return torch.device(f"cuda:{local_rank}")
    return torch.device("cpu")


def distributed_network(network: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Wrap an initialised network in ``DistributedDataParallel`` on ``device``."""
    from torch.nn.parallel import DistributedDataParallel

    network = network.to(device)
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(network, device_ids=ids)


def distributed_sampler(dataset: Sequence[Any], shuffle: bool = True, even_divisible: bool = True,
                        ) -> torch.utils.data.Sampler:
    """MONAI's ``DistributedSampler``; ``even_divisible=False`` for validation (each case exactly once)."""
    from monai.data import DistributedSampler

    return DistributedSampler(dataset=dataset, shuffle=shuffle, even_divisible=even_divisible)


def rank_zero_only(items: Iterable[Any]) -> list[Any]:
    """``items`` on rank 0 (or without a process group), ``[]`` on the other ranks."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_rank() > 0:
        return []
    return list(items)


def cleanup_distributed() -> None:
    """Leave the process group (a bundle's ``finalize`` step)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
