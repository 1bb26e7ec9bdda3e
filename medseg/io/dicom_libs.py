"""The third-party DICOM libraries behind one door: imported on demand, and kept quiet.

pydicom and highdicom come with the optional extra ``pip install "medseg[dicom]"``; a missing extra
is a clear :class:`~medseg.errors.InputError`, never an ``ImportError`` traceback. Their warnings
(malformed but readable attributes, decoder plug-in notes) are silenced around each call into them,
so the user's terminal shows medseg's own findings only; medseg's loggers are left untouched.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from types import ModuleType

from medseg.errors import InputError

__all__ = ["DICOM_EXTRA_HINT", "require_pydicom", "require_highdicom", "quiet_dicom_libraries"]

DICOM_EXTRA_HINT = 'DICOM needs the optional extra: pip install "medseg[dicom]"'
_NOISY_LOGGERS = ("pydicom", "highdicom")


def _require(name: str, what: str) -> ModuleType:
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        raise InputError(f"{what}: {name} is not installed. {DICOM_EXTRA_HINT}") from None


def require_pydicom(what: str = "DICOM input") -> ModuleType:
    """The ``pydicom`` module, or an :class:`InputError` naming ``what`` needed it and how to install it."""
    return _require("pydicom", what)


def require_highdicom(what: str = "DICOM input") -> ModuleType:
    """The ``highdicom`` module, or an :class:`InputError` naming ``what`` needed it and how to install it."""
    return _require("highdicom", what)


@contextlib.contextmanager
def quiet_dicom_libraries() -> Iterator[None]:
    """Silence pydicom's and highdicom's warnings and log records below ERROR inside the block."""
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
