"""Dataset integrity check: every problem of an MSD or nnU-Net v2 dataset, in one pass.

What is checked (errors unless marked *warning*):

- ``dataset.json``: present, valid JSON, a label map of consecutive integers from 0, and
  ``numTraining`` / ``numTest`` equal to the number of cases listed (or found, for nnU-Net v2).
- Every listed file exists, is not empty and decompresses *completely*: a ``.gz`` stream is
  read to its end so its CRC-32 and length are verified (SimpleITK and nibabel load some
  truncated or corrupted files without complaint); the voxel data is as long as the header says.
- NIfTI headers: when both ``qform_code`` and ``sform_code`` are set, the two transforms agree
  (readers disagree on which one wins, so a disagreement moves voxels between tools).
- Dimensionality and channels: labels are 3D (a 4D label is an error, a trailing singleton
  4th axis a *warning*); an image has the channel count ``dataset.json`` declares.
- Image vs label: same shape and, within :class:`Tolerances`, same spacing, origin and direction.
- Values: images hold no NaN or Inf (a constant image is a *warning*); label values are exact
  integers (float labels like 0.9999 truncate to background when cast) that belong to the label
  map; a background-only label is a *warning*.

Example::

    report = check_dataset("data/Task01")
    for p in report.errors + report.warnings:
        print(p)
    report.raise_if_errors()          # InputError listing every error
"""


from __future__ import annotations

import json
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medseg.data.check_volume import ERROR, SHOWN, Case, Problem, Tolerances, check_case, err, warn
from medseg.data.datalist import LabelMapError, channel_file_pattern, parse_channels, parse_labels
from medseg.errors import InputError

__all__ = ["Problem", "CheckReport", "Tolerances", "check_dataset", "ensure_dataset_ok"]


@dataclass
class CheckReport:
    """Result of :func:`check_dataset`: ``errors`` and ``warnings`` (lists of :class:`Problem`)."""

    dataset: str
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    training_cases: int = 0
    test_cases: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors

    def add(self, problems: Iterable[Problem]) -> None:
        for p in problems:
            (self.errors if p.severity == ERROR else self.warnings).append(p)

    def summary(self) -> str:
        return (f"{self.dataset}: {self.training_cases} training and {self.test_cases} test cases checked, "
                f"{len(self.errors)} error(s), {len(self.warnings)} warning(s)")

    def raise_if_errors(self) -> None:
        """Raise :class:`~medseg.errors.InputError` listing every error (nothing if there are none)."""
        if self.errors:
            raise InputError(f"dataset {self.dataset} failed the integrity check with {len(self.errors)} error(s)",
                             problems=[str(p) for p in self.errors])

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "ok": self.ok, "training_cases": self.training_cases,
                "test_cases": self.test_cases, "errors": [asdict(p) for p in self.errors],
                "warnings": [asdict(p) for p in self.warnings]}


def check_dataset(path: str | os.PathLike[str], tolerances: Tolerances | None = None,
                  num_workers: int | None = None) -> CheckReport:
    """Check a dataset folder (or its ``dataset.json``) and return every problem found.

    Accepts the Medical Segmentation Decathlon layout (``training``/``test`` lists; ``test``
    entries may be image paths or ``{"image", "label"}`` dicts) and the nnU-Net v2 raw layout
    (``imagesTr/<case>_<XXXX><file_ending>`` with ``labelsTr/<case><file_ending>``, or an explicit
    ``"dataset"`` mapping). Never raises for bad data: call :meth:`CheckReport.raise_if_errors`.
    ``num_workers`` cases are read in parallel (default: up to 4, bounded by the CPU count).
    """
    tol = tolerances or Tolerances()
    p = Path(path)
    source = p if p.suffix == ".json" else p / "dataset.json"
    root = source.parent
    report = CheckReport(dataset=str(p))
    meta = _load_json(source, report)
    if meta is None:
        return report
    labels = _label_map(meta, source, report)
    cases = _list_cases(meta, root, source, report)
    report.training_cases = sum(c.kind == "training" for c in cases)
    report.test_cases = sum(c.kind == "test" for c in cases)
    workers = num_workers or max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for found in pool.map(lambda c: check_case(c, labels, tol), cases):
            report.add(found)
    return report


def ensure_dataset_ok(path: str | os.PathLike[str], tolerances: Tolerances | None = None) -> list[str]:
    """Check ``path``; raise :class:`~medseg.errors.InputError` on any error, else return the warnings."""
    report = check_dataset(path, tolerances)
    report.raise_if_errors()
    return [str(w) for w in report.warnings]


# ---------------------------------------------------------------------------------------------
# dataset.json and the case list


def _load_json(source: Path, report: CheckReport) -> dict[str, Any] | None:
    if not source.is_file():
        report.add([err(source, "dataset.json not found (expected an MSD or nnU-Net v2 dataset folder)")])
        return None
    try:
        meta = json.loads(source.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        report.add([err(source, f"not valid JSON: {exc}")])
        return None
    if not isinstance(meta, dict):
        report.add([err(source, "must hold a JSON object", type(meta).__name__)])
        return None
    return meta


def _label_map(meta: dict[str, Any], source: Path, report: CheckReport) -> set[int] | None:
    """Label values a label file may hold, parsed by the one dataset reader (its error is reported)."""
    try:
        return parse_labels(meta.get("labels"), source, meta.get("regions_class_order")).label_values
    except LabelMapError as exc:
        report.add([err(source, exc.problem, exc.values)])
    except InputError as exc:
        report.add([err(source, str(exc).removeprefix(f"{source}: "))])
    return None


def _channels(meta: dict[str, Any], source: Path, report: CheckReport) -> int:
    try:
        return len(parse_channels(meta))
    except InputError as exc:
        report.add([err(source, str(exc))])
        return 1


def _list_cases(meta: dict[str, Any], root: Path, source: Path, report: CheckReport) -> list[Case]:
    channels = _channels(meta, source, report)
    if "training" in meta:
        cases = _msd_cases(meta, root, source, channels, report)
    elif isinstance(meta.get("dataset"), dict):
        cases = _mapping_cases(meta["dataset"], root, source, channels, report)
    else:
        cases = _nnunet_cases(meta, root, source, channels, report)
    n_train = sum(c.kind == "training" for c in cases)
    if "numTraining" in meta and meta["numTraining"] != n_train:
        report.add([err(source, "numTraining does not match the training cases",
                         f"numTraining={meta['numTraining']}, cases={n_train}")])
    if "numTest" in meta and "training" in meta:
        n_test = sum(c.kind == "test" for c in cases)
        if meta["numTest"] != n_test:
            report.add([err(source, "numTest does not match the test cases",
                             f"numTest={meta['numTest']}, cases={n_test}")])
    if n_train == 0:
        report.add([err(source, "no training cases")])
    seen: dict[Path, int] = {}
    for c in cases:
        for f in (*c.images, *([c.label] if c.label else [])):
            seen[f] = seen.get(f, 0) + 1
    report.add(warn(f, "listed more than once in dataset.json", f"{n} times") for f, n in seen.items() if n > 1)
    return cases


def _msd_cases(meta: dict[str, Any], root: Path, source: Path, channels: int, report: CheckReport) -> list[Case]:
    cases: list[Case] = []
    for kind in ("training", "test"):
        entries = meta.get(kind, [])
        if not isinstance(entries, list):
            report.add([err(source, f"'{kind}' must be a list", type(entries).__name__)])
            continue
        for i, entry in enumerate(entries):
            if isinstance(entry, str):
                entry = {"image": entry}
            image = entry.get("image") if isinstance(entry, dict) else None
            if not isinstance(image, str) or not image:
                report.add([err(source, f"{kind}[{i}] has no 'image' path", entry)])
                continue
            label = entry.get("label")
            if kind == "training" and not label:
                report.add([err(source, f"training[{i}] has no 'label' path", entry)])
            cases.append(Case(kind, (_join(root, image),), _join(root, label) if label else None, channels))
    listed = {f for c in cases for f in c.images}
    unlisted = [f for f in _nifti_files(root / "imagesTr") if f not in listed]
    if unlisted:
        report.add([warn(root / "imagesTr", f"{len(unlisted)} image file(s) not listed in dataset.json",
                          ", ".join(f.name for f in unlisted[:SHOWN]))])
    return cases


def _mapping_cases(mapping: dict[str, Any], root: Path, source: Path, channels: int, report: CheckReport,
                   ) -> list[Case]:
    """nnU-Net v2 explicit ``"dataset": {case: {"images": [one file per channel], "label": file}}``."""
    cases: list[Case] = []
    for cid, v in mapping.items():
        images = v.get("images") if isinstance(v, dict) else None
        if not isinstance(images, list) or not images or not v.get("label"):
            report.add([err(source, f"dataset entry {cid!r} needs 'images' (a list) and 'label'", v)])
            continue
        if len(images) != channels:
            report.add([err(source, f"dataset entry {cid!r} has {len(images)} image file(s) but "
                                     f"{channels} channel(s) are declared", images)])
        cases.append(Case("training", tuple(_join(root, f) for f in images), _join(root, v["label"]), 1))
    return cases


def _nnunet_cases(meta: dict[str, Any], root: Path, source: Path, channels: int, report: CheckReport,
                  ) -> list[Case]:
    ending = meta.get("file_ending")
    if not isinstance(ending, str) or not ending:
        report.add([err(source, "has neither a 'training' list (MSD) nor a 'file_ending' (nnU-Net v2)")])
        return []
    cases: list[Case] = []
    for kind, images_dir, labels_dir in (("training", "imagesTr", "labelsTr"), ("test", "imagesTs", "labelsTs")):
        ids: dict[str, set[int]] = {}
        for f in sorted((root / images_dir).glob(f"*{ending}")):
            parsed = channel_file_pattern(f.name[: -len(ending)] + ".nii.gz")
            if parsed is None:
                report.add([err(f, f"image name does not follow <case>_<XXXX>{ending}")])
                continue
            ids.setdefault(parsed[0], set()).add(parsed[1])
        for cid, found in sorted(ids.items()):
            missing = sorted(set(range(channels)) - found)
            if missing:
                report.add([err(root / images_dir / f"{cid}_{missing[0]:04d}{ending}",
                                 f"channel file missing ({channels} channel(s) declared)", f"missing {missing}")])
            extra = sorted(found - set(range(channels)))
            if extra:
                report.add([err(root / images_dir / f"{cid}_{extra[0]:04d}{ending}",
                                 f"extra channel file ({channels} channel(s) declared)", f"extra {extra}")])
                found = found - set(extra)
            label = root / labels_dir / f"{cid}{ending}"
            has_label = kind == "training" or (root / labels_dir).is_dir()
            cases.append(Case(kind, tuple(root / images_dir / f"{cid}_{c:04d}{ending}" for c in sorted(found)),
                               label if has_label else None, 1))
        if (root / labels_dir).is_dir():
            orphans = [f.name for f in sorted((root / labels_dir).glob(f"*{ending}"))
                       if f.name[: -len(ending)] not in ids]
            if orphans:
                report.add([err(root / labels_dir, "label file(s) without an image", ", ".join(orphans[:SHOWN]))])
    return cases


def _join(root: Path, rel: str) -> Path:
    return Path(os.path.normpath(root / rel))


def _nifti_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(f for f in folder.iterdir() if f.name.endswith((".nii", ".nii.gz")) and not f.name.startswith("."))
