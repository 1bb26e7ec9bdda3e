"""Weights-only checkpoint loading with clear errors (no arbitrary unpickling, ever).

``torch.load(weights_only=True)`` refuses pickled objects beyond tensors and primitive
containers, but its messages suggest ``weights_only=False`` and do not tell a malicious file
from a truncated one. :func:`safe_torch_load` does, and names the file.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from medseg.errors import InputError

__all__ = ["UnsafeCheckpointError", "CorruptCheckpointError", "safe_torch_load", "first_line"]

_UNSAFE_PICKLE_MARKERS = ("Unsupported global", "unrecognized function", "allowlisted", "Unsupported class")


class UnsafeCheckpointError(InputError):
    """A checkpoint holds pickled objects beyond tensors and primitive containers."""


class CorruptCheckpointError(InputError):
    """A checkpoint file is missing, empty, truncated or otherwise unreadable."""


def safe_torch_load(path: str | os.PathLike[str], map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with every failure turned into a clear InputError.

    Raises:
        UnsafeCheckpointError: the file pickles an object that is not a tensor or primitive container.
        CorruptCheckpointError: the file is missing, empty, truncated or not a checkpoint.
    """
    p = Path(path)
    if not p.is_file():
        raise CorruptCheckpointError(f"{p}: checkpoint not found")
    if p.stat().st_size == 0:
        raise CorruptCheckpointError(f"{p}: empty checkpoint file (0 bytes)")
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        found = re.search(r"GLOBAL ([\w.]+)", msg) or re.search(r"Unsupported global: ([\w.]+)", msg)
        kind = found.group(1) if found else first_line(msg.split("WeightsUnpickler error:")[-1])
        unsafe = found is not None or any(t in msg for t in _UNSAFE_PICKLE_MARKERS)
        if "Weights only load failed" in msg and unsafe and not _cut_allowed_name(kind):
            raise UnsafeCheckpointError(f"{p}: contains a pickled object of type {kind} that is not allowed; only "
                                        "tensors and primitive containers load (weights_only=True)") from None
        raise CorruptCheckpointError(f"{p}: not a complete checkpoint (truncated or corrupted): the pickle "
                                     "stream is cut or damaged") from None
    except Exception as exc:  # zip, pickle and storage errors of every kind
        raise CorruptCheckpointError(f"{p}: not a complete checkpoint (truncated or corrupted): "
                                     f"{type(exc).__name__}: {first_line(str(exc))}") from None


def _cut_allowed_name(name: str) -> bool:
    """True if ``name`` is an allowed global cut short: a truncated legacy-format file, not an unsafe one."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        allowed = list(_get_allowed_globals())
    except Exception:  # private torch API; without it, report the name as unsafe
        return False
    return name not in allowed and any(a.startswith(name) for a in allowed)


def first_line(text: str) -> str:
    """The first non-blank line of ``text``, stripped (for one-line error messages)."""
    return next((ln.strip() for ln in text.strip().splitlines() if ln.strip()), text.strip())
