"""Helpers to run MONAI's bundle CLI (``python -m monai.bundle``) on a bundle folder."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "ct_organ_lesion"
# the tiny network of tests/conftest.py::TINY_TRAIN, applied as command-line overrides of the bundle's plan
TINY_CHANNELS, TINY_STRIDES = [8, 16, 32], [2, 2]
TINY_OVERRIDES: dict[str, Any] = {"patch_size": [16, 16, 16], "pipeline#raw#patch_size": [16, 16, 16],
                                  "pipeline#raw#network#filters": TINY_CHANNELS,
                                  "pipeline#raw#network#kernels": [[3, 3, 3]] * 3,
                                  "pipeline#raw#network#strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
                                  "pipeline#raw#samples_per_case": 1}
HAS_FIRE = importlib.util.find_spec("fire") is not None


def monai_bundle(command: str, cwd: Path, *positional: str, **kwargs: Any) -> subprocess.CompletedProcess:
    """``python -m monai.bundle COMMAND ... --key value`` in ``cwd``; fails the test on a non-zero exit.

    Without the ``fire`` package (which ``python -m monai.bundle`` needs for argument parsing) the
    same MONAI function is called with the same arguments in a fresh interpreter.
    """
    if HAS_FIRE:
        args = [sys.executable, "-m", "monai.bundle", command, *positional]
        for key, value in kwargs.items():
            args += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    else:
        call = {"positional": list(positional), "kwargs": kwargs}
        code = ("import json, sys; from monai.bundle import scripts; c = json.loads(sys.argv[1]); "
                f"getattr(scripts, {command!r})(*c['positional'], **c['kwargs'])")
        args = [sys.executable, "-c", code, json.dumps(call)]
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"monai.bundle {command} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc
