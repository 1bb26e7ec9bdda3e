"""Launching a training run in one or several processes (``medseg train --nproc N``).

N processes are spawned with :class:`ignite.distributed.Parallel` (NCCL with one GPU per process
when CUDA is available, Gloo on CPU; under ``torchrun`` the group it set up is joined). The plan is
resolved once, here, before the processes start, so every rank trains the same plan. Each process
runs :func:`medseg.training.train.train`; rank 0 writes the run directory and talks to MLflow.
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
from medseg.training.distributed import is_main, world_size
from medseg.training.train import TrainConfig, TrainResult, prepare_plan, train
from medseg.utils.rundir import RESULT_FILE

__all__ = ["launch"]

logger = logging.getLogger(__name__)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(local_rank: int, cfg_dict: dict[str, Any], resume: bool) -> None:
    torch.set_num_threads(max(1, torch.get_num_threads() // max(world_size(), 1)))
    result = train(TrainConfig.from_dict(cfg_dict), resume=resume)
    if is_main():
        payload = {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(result).items()}
        (Path(cfg_dict["out"]) / RESULT_FILE).write_text(json.dumps(payload) + "\n", encoding="utf-8")


def launch(cfg: TrainConfig, nproc: int = 1, resume: bool = False) -> TrainResult:
    """Train with ``nproc`` processes (1: in this process); returns rank 0's :class:`TrainResult`."""
    if nproc < 1:
        raise InputError(f"--nproc must be >= 1, got {nproc}")
    if nproc == 1:
        return train(cfg, resume=resume)
    cuda = torch.cuda.is_available() and not str(cfg.device).startswith("cpu")
    if cuda and nproc > torch.cuda.device_count():
        raise InputError(f"--nproc {nproc}: only {torch.cuda.device_count()} CUDA device(s) (use --device cpu for Gloo)")
    cfg.device = "cuda" if cuda else "cpu"
    if not resume:
        prepare_plan(cfg)
    backend = "nccl" if cuda else "gloo"
    logger.info("training with %d processes (%s)", nproc, backend)
    result_file = Path(cfg.out) / RESULT_FILE
    result_file.unlink(missing_ok=True)
    with idist.Parallel(backend=backend, nproc_per_node=nproc, master_port=_free_port()) as parallel:
        parallel.run(_worker, cfg.to_dict(), resume)
    raw = json.loads(result_file.read_text(encoding="utf-8"))
    return TrainResult(**{**raw, "run_dir": Path(raw["run_dir"]), "best_checkpoint": Path(raw["best_checkpoint"])})
