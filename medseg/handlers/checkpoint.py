"""Crash-safe checkpoints: atomic writes, the previous good file kept, safe (weights-only) loading.

ignite's ``Checkpoint`` removes the oldest file *before* writing the new one, so a crash at that
moment can leave no checkpoint at all. Here a checkpoint is written to a temporary file, fsynced
and renamed; only then are files beyond ``keep`` removed. Loading uses
``torch.load(weights_only=True)``: checkpoints hold state dicts, tensors and primitives only,
never arbitrary pickled objects.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine

from medseg.errors import InputError
from medseg.utils.files import atomic_path
from medseg.utils.rundir import BEST_CHECKPOINT
from medseg.utils.safe_load import safe_torch_load

__all__ = ["CheckpointSaver", "load_checkpoint", "latest_checkpoint", "restore"]

logger = logging.getLogger(__name__)
_LAST = re.compile(r"^last_epoch=(\d+)\.pt$")


def _state(objects: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (v.state_dict() if hasattr(v, "state_dict") else v) for k, v in objects.items()}


class CheckpointSaver:
    """Save ``objects`` (state dicts) each epoch as ``last_epoch=N.pt`` and the best as ``best.pt``.

    Args:
        directory: where the checkpoints go.
        objects: name -> object with ``state_dict()`` (model, optimizer, scheduler, scaler, the
            trainer engine) or a plain value (dicts of primitives such as the resolved config).
        keep: how many ``last_epoch=*.pt`` to keep; the newest is written completely before any
            older one is removed, so at least one good file always exists.
        extra: called at save time; its dict is stored too (e.g. the metric history).
    """

    def __init__(self, directory: str | Path, objects: Mapping[str, Any], keep: int = 2,
                 extra: Callable[[], dict[str, Any]] | None = None) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.directory = Path(directory)
        self.objects = dict(objects)
        self.keep = keep
        self.extra = extra
        self.best_score: float | None = None

    def _payload(self, engine: Engine) -> dict[str, Any]:
        payload = _state(self.objects)
        payload["epoch"] = int(engine.state.epoch)
        if self.extra is not None:
            payload.update(self.extra())
        return payload

    def save_last(self, engine: Engine) -> Path:
        path = self.directory / f"last_epoch={engine.state.epoch}.pt"
        with atomic_path(path) as tmp:
            torch.save(self._payload(engine), tmp)
        olds = sorted(self._lasts(), key=lambda p: p[0])[: -self.keep]
        for _, old in olds:
            old.unlink(missing_ok=True)
        return path

    def save_best(self, engine: Engine, score: float) -> Path | None:
        if self.best_score is not None and not score > self.best_score:
            return None
        self.best_score = float(score)
        path = self.directory / BEST_CHECKPOINT
        with atomic_path(path) as tmp:
            payload = self._payload(engine)
            payload["best_score"] = self.best_score
            torch.save(payload, tmp)
        return path

    def _lasts(self) -> list[tuple[int, Path]]:
        return [(int(m.group(1)), p) for p in self.directory.glob("last_epoch=*.pt") if (m := _LAST.match(p.name))]


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; any problem becomes an :class:`InputError`.

    Unsafe pickles and truncated/corrupt files are told apart by
    :func:`medseg.utils.safe_load.safe_torch_load`.
    """
    p = Path(path)
    obj = safe_torch_load(p, map_location=map_location)
    if not isinstance(obj, dict):
        raise InputError(f"{p}: not a medseg checkpoint (top level is {type(obj).__name__}, expected a dict)")
    return obj


def latest_checkpoint(directory: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """Newest readable ``last_epoch=N.pt`` in ``directory``, skipping (and reporting) broken ones."""
    d = Path(directory)
    found = sorted(((int(m.group(1)), p) for p in d.glob("last_epoch=*.pt") if (m := _LAST.match(p.name))),
                   reverse=True)
    for _, path in found:
        try:
            return path, load_checkpoint(path)
        except InputError as exc:
            logger.warning("skipping checkpoint: %s", exc)
    return None


def restore(payload: Mapping[str, Any], objects: Mapping[str, Any]) -> None:
    """Load the state dicts of ``payload`` into ``objects`` (same names as when saved)."""
    for name, obj in objects.items():
        if name not in payload:
            raise InputError(f"checkpoint has no '{name}' entry (has: {sorted(payload)})")
        obj.load_state_dict(payload[name])
