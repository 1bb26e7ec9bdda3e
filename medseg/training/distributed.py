"""Distributed building blocks shared by ``medseg train --nproc N`` and the bundle's multi-GPU config.

The launcher is :mod:`medseg.training.launch`. Each process runs :func:`medseg.training.train.train`,
which uses these helpers to shard the training
cases with a ``DistributedSampler``, wraps the network in ``DistributedDataParallel``, validates
each case once across ranks (medseg's metric handlers all-reduce the per-case sums, so every rank
sees the same metrics), averages the training loss across ranks, and lets only rank 0 write
checkpoints and the journal and talk to MLflow.

A MONAI bundle run under ``torchrun`` (``configs/multi_gpu_train.json``) uses the same helpers
through :mod:`medseg.bundle.components`: :func:`init_process_group`, :func:`ddp`,
:func:`distributed_sampler`, :func:`is_main` and :func:`leave_process_group`.

Convention: every rank takes part in validation. A collective (metric all-reduce, DDP's forward)
issued by one rank only would wait for ever, so nothing but file writing and logging is
restricted to rank 0.
"""

from __future__ import annotations

import logging
from typing import Any

import ignite.distributed as idist
import torch

from medseg.errors import InputError

__all__ = ["is_main", "world_size", "reduce_mean", "NullTracker", "ddp", "unwrap", "samplers",
           "distributed_sampler", "init_process_group", "leave_process_group"]

logger = logging.getLogger(__name__)


def world_size() -> int:
    return idist.get_world_size()


def is_main() -> bool:
    """True on rank 0 (and in a single-process run).

    Before the process group is joined, the ``RANK`` that ``torchrun`` sets decides, so a rank
    knows its role whatever the order in which a bundle config is resolved.
    """
    import os

    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) and "RANK" in os.environ:
        return int(os.environ["RANK"]) == 0
    return idist.get_rank() == 0


def reduce_mean(value: float) -> float:
    """Mean of ``value`` over all ranks (the value itself without a process group)."""
    if world_size() < 2:
        return float(value)
    return float(idist.all_reduce(torch.tensor(float(value), dtype=torch.float64)) / world_size())


def init_process_group(backend: str = "auto") -> torch.device:
    """Join the process group ``torchrun`` describes (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...).

    Args:
        backend: ``"nccl"``, ``"gloo"`` or ``"auto"`` (NCCL when CUDA is available, else Gloo).

    Returns:
        The device of this rank: ``cuda:<LOCAL_RANK>`` with NCCL, else the CPU. Without
        ``torchrun``'s environment (a plain single-process run) no group is created.
    """
    import os

    import torch.distributed as dist

    if backend not in ("auto", "nccl", "gloo"):
        raise ValueError(f"backend must be auto, nccl or gloo, got {backend!r}")
    chosen = ("nccl" if torch.cuda.is_available() else "gloo") if backend == "auto" else backend
    if "WORLD_SIZE" in os.environ and not dist.is_initialized():
        dist.init_process_group(backend=chosen)
    if chosen == "nccl":
        device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


def leave_process_group() -> None:
    """Wait for every rank (so none tears the group down under a peer's collective), then leave it."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def ddp(network: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``DistributedDataParallel`` around ``network`` (moved to ``device``) in a multi-process run, else ``network``."""
    network = network.to(device)
    if world_size() < 2:
        return network
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(network, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap(network: torch.nn.Module) -> torch.nn.Module:
    """The module inside ``DistributedDataParallel`` (``network`` itself otherwise).

    Validation runs the plain module: DDP's forward may broadcast buffers, a collective that a
    rank with fewer validation cases would never answer.
    """
    from torch.nn.parallel import DistributedDataParallel

    return network.module if isinstance(network, DistributedDataParallel) else network


def distributed_sampler(dataset: Any, train: bool) -> Any:
    """MONAI's ``DistributedSampler`` for this rank, ``None`` in a single-process run.

    Training (``train=True``): shuffled shards padded to equal length, so every rank runs the same
    number of iterations (DDP's gradient all-reduce needs it). Validation: each case exactly once
    over all ranks (``even_divisible=False``), in order; a rank may get one case fewer.
    """
    if world_size() < 2:
        return None
    from monai.data import DistributedSampler

    if not train and len(dataset) < world_size():
        raise InputError(f"{len(dataset)} validation case(s) for {world_size()} processes: every process needs "
                         "at least one (use fewer processes or a larger validation fold)")
    return DistributedSampler(dataset, shuffle=train, even_divisible=train)


def samplers(train_ds: Any, val_ds: Any) -> tuple[Any, Any]:
    """Training and validation samplers (:func:`distributed_sampler`); ``None, None`` in a single process."""
    return distributed_sampler(train_ds, train=True), distributed_sampler(val_ds, train=False)


class NullTracker:
    """Tracker of ranks > 0: the same calls as :class:`MLflowTracker`, doing nothing."""

    def __init__(self) -> None:
        self.history: list[dict[str, Any]] = []
        self.run_id = ""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None
