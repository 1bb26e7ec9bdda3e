"""Multi-process training through ``ignite.distributed`` / ``torch.distributed``.

``medseg train --nproc N`` spawns N processes with :class:`ignite.distributed.Parallel` (NCCL with
one GPU per process when CUDA is available, Gloo on CPU; under ``torchrun`` the group it set up is
joined). Each process runs :func:`medseg.engine.train.train`, which then shards the training
cases with a ``DistributedSampler``, wraps the network in ``DistributedDataParallel``, validates
each case once across ranks (MONAI's metric handlers gather the per-case results, so every rank
sees the same metrics), averages the training loss across ranks, and lets only rank 0 write
checkpoints and the journal and talk to MLflow.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import socket
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch

from medseg.errors import InputError

__all__ = ["launch", "is_main", "world_size", "reduce_mean", "NullTracker", "ddp", "samplers", "RESULT_FILE"]

logger = logging.getLogger(__name__)
RESULT_FILE = "train_result.json"


def world_size() -> int:
    return idist.get_world_size()


def is_main() -> bool:
    """True on rank 0 (and in a single-process run)."""
    return idist.get_rank() == 0


def reduce_mean(value: float) -> float:
    """Mean of ``value`` over all ranks (the value itself without a process group)."""
    if world_size() < 2:
        return float(value)
    return float(idist.all_reduce(torch.tensor(float(value), dtype=torch.float64)) / world_size())


def ddp(network: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``DistributedDataParallel`` around ``network`` in a multi-process run, else ``network``."""
    if world_size() < 2:
        return network
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(network, device_ids=[device.index] if device.type == "cuda" else None)


def samplers(train_ds: Any, val_ds: Any) -> tuple[Any, Any]:
    """Training sampler (shuffled shards, padded to equal length) and validation sampler (each case once)."""
    if world_size() < 2:
        return None, None
    from monai.data import DistributedSampler

    return (DistributedSampler(train_ds, shuffle=True, even_divisible=True),
            DistributedSampler(val_ds, shuffle=False, even_divisible=False))


class NullTracker:
    """Tracker of ranks > 0: the same calls as :class:`MLflowTracker`, doing nothing."""

    def __init__(self) -> None:
        self.history: list[dict[str, Any]] = []
        self.run_id = ""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(local_rank: int, cfg_dict: dict[str, Any], resume: bool) -> None:
    from medseg.engine.train import TrainConfig, train

    torch.set_num_threads(max(1, torch.get_num_threads() // max(world_size(), 1)))
    result = train(TrainConfig.from_dict(cfg_dict), resume=resume)
    if is_main():
        payload = {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(result).items()}
        (Path(cfg_dict["out"]) / RESULT_FILE).write_text(json.dumps(payload) + "\n")


def launch(cfg: Any, nproc: int = 1, resume: bool = False) -> Any:
    """Train with ``nproc`` processes (1: in this process); returns rank 0's :class:`TrainResult`."""
    from medseg.engine.train import TrainResult, train

    if nproc < 1:
        raise InputError(f"--nproc must be >= 1, got {nproc}")
    if nproc == 1:
        return train(cfg, resume=resume)
    cuda = torch.cuda.is_available() and not str(cfg.device).startswith("cpu")
    if cuda and nproc > torch.cuda.device_count():
        raise InputError(f"--nproc {nproc}: only {torch.cuda.device_count()} CUDA device(s) (use --device cpu for Gloo)")
    cfg.device = "cuda" if cuda else "cpu"
    backend = "nccl" if cuda else "gloo"
    logger.info("training with %d processes (%s)", nproc, backend)
    result_file = Path(cfg.out) / RESULT_FILE
    result_file.unlink(missing_ok=True)
    with idist.Parallel(backend=backend, nproc_per_node=nproc, master_port=_free_port()) as parallel:
        parallel.run(_worker, cfg.to_dict(), resume)
    raw = json.loads(result_file.read_text())
    return TrainResult(**{**raw, "run_dir": Path(raw["run_dir"]), "best_checkpoint": Path(raw["best_checkpoint"])})
