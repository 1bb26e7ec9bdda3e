"""DICOM studies through ``medseg predict``: which series become cases, and what is written for each.

Every series under ``--input`` (any depth) is listed and checked (:mod:`medseg.io.dicom_series`);
each qualifying CT/MR series is one case, or only those named by ``--series-uid``. The series table
is logged, and ``series.csv`` beside the masks records every series with its verdict and output.
A case is named after the input folder (or file) when the input holds a single series, else after
its SeriesInstanceUID. Masks are written as NIfTI on the series grid and/or as DICOM SEG
(``--output-format``), whose segments are the model's labels (or regions) with codes from
``label_codes``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.datalist import NIFTI_SUFFIXES
from medseg.errors import InputError
from medseg.utils.files import atomic_write_text

__all__ = ["OUTPUT_FORMATS", "SERIES_CSV", "DicomInputs", "find_dicom_inputs", "check_output_format",
           "load_label_codes", "seg_segments", "algorithm_name", "write_seg", "write_series_csv", "writes_nifti", "writes_seg"]

logger = logging.getLogger(__name__)

OUTPUT_FORMATS = ("nifti", "dicom-seg", "both")
SERIES_CSV = "series.csv"


@dataclass
class DicomInputs:
    """The series found under ``root`` and the cases chosen from them: ``(case_id, DicomSeries)``."""

    root: Path
    found: list[Any]
    cases: list[tuple[str, Any]]


def writes_nifti(output_format: str) -> bool:
    return output_format in ("nifti", "both")


def writes_seg(output_format: str) -> bool:
    return output_format in ("dicom-seg", "both")


def check_output_format(output_format: str) -> None:
    if output_format not in OUTPUT_FORMATS:
        raise InputError(f"--output-format must be one of {', '.join(OUTPUT_FORMATS)}, got {output_format!r}")


def _holds_nifti(path: Path) -> bool:
    if path.is_file():
        return path.name.endswith(NIFTI_SUFFIXES)
    return path.is_dir() and any(f.is_file() and f.name.endswith(NIFTI_SUFFIXES) for f in path.iterdir())


def find_dicom_inputs(path: str | Path, series_uids: Sequence[str] | None = None,
                      num_channels: int = 1) -> DicomInputs | None:
    """The DICOM cases of ``--input``, or ``None`` when it is NIfTI input (or holds no DICOM at all).

    Raises:
        InputError: ``--series-uid`` names no series found; a single selected (or the only) series does
            not qualify; no series qualifies; the model needs several channels.
    """
    from medseg.io.dicom_series import discover_series, select_series, series_table

    root = Path(path)
    if not root.exists() or _holds_nifti(root):
        if series_uids:
            raise InputError(f"--series-uid: applies to DICOM input only; {root} is not a DICOM folder or file")
        return None
    found = discover_series(root)
    if not found:
        if series_uids:
            raise InputError(f"--series-uid: no DICOM series found under {root}")
        return None
    logger.info("DICOM series under %s:\n%s", root, series_table(found))
    chosen = select_series(found, series_uids, f"--input {root}")
    if len(found) == 1 and not found[0].qualifies:
        raise InputError(f"--input {root}: series {found[0].uid} cannot be predicted: {found[0].reason}")
    usable = [s for s in chosen if s.qualifies]
    if not usable:
        raise InputError(f"--input {root}: no series can be predicted",
                         [f"series {s.uid} ({s.modality} {s.description}): {s.reason}" for s in chosen])
    if num_channels != 1:
        raise InputError(f"--input {root}: the model expects {num_channels} channels; DICOM input gives one")
    for s in chosen:
        if not s.qualifies:
            logger.warning("skipped series %s (%s): %s", s.uid, s.description or s.modality, s.reason)
    name = (root.name if root.is_dir() else root.name.removesuffix(".dcm")) or "series"
    return DicomInputs(root, found, [(name if len(found) == 1 else s.uid, s) for s in usable])


def load_label_codes(source: str | Path | Mapping[str, Any] | None, config: Mapping[str, Any] | None = None
                     ) -> dict[str, Any]:
    """Segment codes for DICOM SEG: ``source`` (a JSON file holding a ``label_codes`` map, e.g. a
    ``dataset.json``, or the bare map; or the map itself), else the training dataset's ``dataset.json``
    when the run's config still points at one that has ``label_codes``, else none (generic codes)."""
    from medseg.io.dicom_seg import parse_label_codes

    if isinstance(source, Mapping):
        return parse_label_codes(source, "label_codes")
    if source is not None:
        path = Path(source)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"--label-codes {path}: cannot be read as JSON ({exc})") from None
        return parse_label_codes(raw.get("label_codes", raw) if isinstance(raw, dict) else raw, str(path))
    data = Path(str((config or {}).get("data") or ""))
    meta = data / "dataset.json" if data.is_dir() else data
    if meta.name == "dataset.json" and meta.is_file():
        try:
            raw = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return parse_label_codes(raw.get("label_codes") if isinstance(raw, dict) else None, str(meta))
    return {}


def seg_segments(plan: Any, label_codes: Any, config: Mapping[str, Any] | None) -> list[Any]:
    """The DICOM SEG segments of a model: its labels (or regions), coded by :func:`load_label_codes`."""
    from medseg.io.dicom_seg import segments_for

    spec = plan.label_spec
    return segments_for(spec.names, spec.regions, load_label_codes(label_codes, config))


def algorithm_name(models: Sequence[str | Path]) -> str:
    """The model's name recorded in the SEG: run folder or checkpoint name (members joined by ``+``)."""
    names = [Path(m).name if Path(m).is_dir() else Path(m).stem for m in models]
    return "+".join(names)[:64] or "medseg model"


def write_seg(mask: np.ndarray, series: Any, segments: Sequence[Any], target: Path, models: Sequence[str | Path]
              ) -> Path:
    """``mask`` (on the series grid) as a DICOM SEG of ``series`` at ``target``."""
    from medseg.io.dicom_seg import write_dicom_seg

    return write_dicom_seg(mask, series, segments, target, algorithm=algorithm_name(models))


def write_series_csv(out_dir: Path, inputs: DicomInputs, outputs: Mapping[str, Sequence[Path]]) -> Path:
    """``series.csv`` in ``out_dir``: every series found, its verdict and the files written for it."""
    from medseg.io.dicom_series import series_csv

    written = {uid: ";".join(p.name for p in paths) for uid, paths in outputs.items()}
    target = out_dir / SERIES_CSV
    atomic_write_text(target, series_csv(inputs.found, written))
    return target
