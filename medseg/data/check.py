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

import gzip
import json
import os
import re
import zlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from medseg.errors import InputError

__all__ = ["Problem", "CheckReport", "Tolerances", "check_dataset", "ensure_dataset_ok"]

ERROR, WARNING = "error", "warning"
_SHOWN = 8  # offending values listed per problem


@dataclass(frozen=True)
class Problem:
    """One finding: ``severity`` ("error" or "warning"), the ``file``, what is wrong, the values seen."""

    severity: str
    file: str
    problem: str
    values: str = ""

    def __str__(self) -> str:
        return f"{self.file}: {self.problem}" + (f" [seen: {self.values}]" if self.values else "")


@dataclass(frozen=True)
class Tolerances:
    """How close image and label geometry must be (the same spacing/origin/direction otherwise).

    ``spacing_rtol``: relative, per axis. ``origin_atol_mm``: per coordinate. ``direction_atol``:
    per direction-cosine entry. ``qform_sform_voxels``: largest distance, in voxels, that the qform
    and the sform may place any corner of the grid apart. ``label_atol``: a label value further
    than this from an integer is not an integer.
    """

    spacing_rtol: float = 1e-5
    origin_atol_mm: float = 1e-4
    direction_atol: float = 1e-5
    qform_sform_voxels: float = 1e-3
    label_atol: float = 1e-6


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
        for found in pool.map(lambda c: _check_case(c, labels, tol), cases):
            report.add(found)
    return report


def ensure_dataset_ok(path: str | os.PathLike[str], tolerances: Tolerances | None = None) -> list[str]:
    """Check ``path``; raise :class:`~medseg.errors.InputError` on any error, else return the warnings."""
    report = check_dataset(path, tolerances)
    report.raise_if_errors()
    return [str(w) for w in report.warnings]


# ---------------------------------------------------------------------------------------------
# dataset.json and the case list


@dataclass(frozen=True)
class _Case:
    kind: str  # "training" or "test"
    images: tuple[Path, ...]  # one file per channel (nnU-Net) or one file holding all (MSD)
    label: Path | None
    channels: int  # channels declared in dataset.json


def _err(file: object, problem: str, values: object = "") -> Problem:
    return Problem(ERROR, str(file), problem, str(values))


def _warn(file: object, problem: str, values: object = "") -> Problem:
    return Problem(WARNING, str(file), problem, str(values))


def _load_json(source: Path, report: CheckReport) -> dict[str, Any] | None:
    if not source.is_file():
        report.add([_err(source, "dataset.json not found (expected an MSD or nnU-Net v2 dataset folder)")])
        return None
    try:
        meta = json.loads(source.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        report.add([_err(source, f"not valid JSON: {exc}")])
        return None
    if not isinstance(meta, dict):
        report.add([_err(source, "must hold a JSON object", type(meta).__name__)])
        return None
    return meta


def _label_map(meta: dict[str, Any], source: Path, report: CheckReport) -> set[int] | None:
    raw = meta.get("labels")
    if not isinstance(raw, dict) or not raw:
        report.add([_err(source, "missing or empty 'labels' map", raw)])
        return None
    values: set[int] = set()
    for key, value in raw.items():
        if re.fullmatch(r"-?\d+", str(key)):  # MSD: {"1": "organ"}
            values.add(int(key))
        elif isinstance(value, int) and not isinstance(value, bool):  # nnU-Net v2: {"organ": 1}
            values.add(value)
        elif isinstance(value, list) and value and all(isinstance(v, int) for v in value):  # regions
            values.update(value)
        else:
            report.add([_err(source, f"label entry {key!r} is neither MSD ({{\"1\": \"organ\"}}) nor nnU-Net v2 "
                                     f"({{\"organ\": 1}}) style", value)])
    if values and sorted(values) != list(range(len(values))):
        report.add([_err(source, "labels must be consecutive integers starting at 0 (background)", sorted(values))])
    return values


def _channels(meta: dict[str, Any]) -> int:
    declared = meta.get("channel_names") or meta.get("modality")
    return len(declared) if isinstance(declared, dict) and declared else 1


def _list_cases(meta: dict[str, Any], root: Path, source: Path, report: CheckReport) -> list[_Case]:
    channels = _channels(meta)
    if "training" in meta:
        cases = _msd_cases(meta, root, source, channels, report)
    elif isinstance(meta.get("dataset"), dict):
        cases = _mapping_cases(meta["dataset"], root, source, channels, report)
    else:
        cases = _nnunet_cases(meta, root, source, channels, report)
    n_train = sum(c.kind == "training" for c in cases)
    if "numTraining" in meta and meta["numTraining"] != n_train:
        report.add([_err(source, "numTraining does not match the training cases",
                         f"numTraining={meta['numTraining']}, cases={n_train}")])
    if "numTest" in meta and "training" in meta:
        n_test = sum(c.kind == "test" for c in cases)
        if meta["numTest"] != n_test:
            report.add([_err(source, "numTest does not match the test cases",
                             f"numTest={meta['numTest']}, cases={n_test}")])
    if n_train == 0:
        report.add([_err(source, "no training cases")])
    seen: dict[Path, int] = {}
    for c in cases:
        for f in (*c.images, *([c.label] if c.label else [])):
            seen[f] = seen.get(f, 0) + 1
    report.add(_warn(f, "listed more than once in dataset.json", f"{n} times") for f, n in seen.items() if n > 1)
    return cases


def _msd_cases(meta: dict[str, Any], root: Path, source: Path, channels: int, report: CheckReport) -> list[_Case]:
    cases: list[_Case] = []
    for kind in ("training", "test"):
        entries = meta.get(kind, [])
        if not isinstance(entries, list):
            report.add([_err(source, f"'{kind}' must be a list", type(entries).__name__)])
            continue
        for i, entry in enumerate(entries):
            if isinstance(entry, str):
                entry = {"image": entry}
            image = entry.get("image") if isinstance(entry, dict) else None
            if not isinstance(image, str) or not image:
                report.add([_err(source, f"{kind}[{i}] has no 'image' path", entry)])
                continue
            label = entry.get("label")
            if kind == "training" and not label:
                report.add([_err(source, f"training[{i}] has no 'label' path", entry)])
            cases.append(_Case(kind, (_join(root, image),), _join(root, label) if label else None, channels))
    listed = {f for c in cases for f in c.images}
    unlisted = [f for f in _nifti_files(root / "imagesTr") if f not in listed]
    if unlisted:
        report.add([_warn(root / "imagesTr", f"{len(unlisted)} image file(s) not listed in dataset.json",
                          ", ".join(f.name for f in unlisted[:_SHOWN]))])
    return cases


def _mapping_cases(mapping: dict[str, Any], root: Path, source: Path, channels: int, report: CheckReport,
                   ) -> list[_Case]:
    """nnU-Net v2 explicit ``"dataset": {case: {"images": [one file per channel], "label": file}}``."""
    cases: list[_Case] = []
    for cid, v in mapping.items():
        images = v.get("images") if isinstance(v, dict) else None
        if not isinstance(images, list) or not images or not v.get("label"):
            report.add([_err(source, f"dataset entry {cid!r} needs 'images' (a list) and 'label'", v)])
            continue
        if len(images) != channels:
            report.add([_err(source, f"dataset entry {cid!r} has {len(images)} image file(s) but "
                                     f"{channels} channel(s) are declared", images)])
        cases.append(_Case("training", tuple(_join(root, f) for f in images), _join(root, v["label"]), 1))
    return cases


def _nnunet_cases(meta: dict[str, Any], root: Path, source: Path, channels: int, report: CheckReport,
                  ) -> list[_Case]:
    ending = meta.get("file_ending")
    if not isinstance(ending, str) or not ending:
        report.add([_err(source, "has neither a 'training' list (MSD) nor a 'file_ending' (nnU-Net v2)")])
        return []
    cases: list[_Case] = []
    for kind, images_dir, labels_dir in (("training", "imagesTr", "labelsTr"), ("test", "imagesTs", "labelsTs")):
        ids: dict[str, set[int]] = {}
        for f in sorted((root / images_dir).glob(f"*{ending}")):
            m = re.fullmatch(r"(.+)_(\d{4})" + re.escape(ending), f.name)
            if m is None:
                report.add([_err(f, f"image name does not follow <case>_<XXXX>{ending}")])
                continue
            ids.setdefault(m.group(1), set()).add(int(m.group(2)))
        for cid, found in sorted(ids.items()):
            missing = sorted(set(range(channels)) - found)
            if missing:
                report.add([_err(root / images_dir / f"{cid}_{missing[0]:04d}{ending}",
                                 f"channel file missing ({channels} channel(s) declared)", f"missing {missing}")])
            label = root / labels_dir / f"{cid}{ending}"
            has_label = kind == "training" or (root / labels_dir).is_dir()
            cases.append(_Case(kind, tuple(root / images_dir / f"{cid}_{c:04d}{ending}" for c in sorted(found)),
                               label if has_label else None, 1))
        if (root / labels_dir).is_dir():
            orphans = [f.name for f in sorted((root / labels_dir).glob(f"*{ending}"))
                       if f.name[: -len(ending)] not in ids]
            if orphans:
                report.add([_err(root / labels_dir, "label file(s) without an image", ", ".join(orphans[:_SHOWN]))])
    return cases


def _join(root: Path, rel: str) -> Path:
    return Path(os.path.normpath(root / rel))


def _nifti_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(f for f in folder.iterdir() if f.name.endswith((".nii", ".nii.gz")) and not f.name.startswith("."))


# ---------------------------------------------------------------------------------------------
# one case


@dataclass
class _Volume:
    path: Path
    shape: tuple[int, ...]
    affine: np.ndarray  # voxel -> RAS mm
    data: np.ndarray

    @property
    def spacing(self) -> np.ndarray:
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def direction(self) -> np.ndarray:
        return self.affine[:3, :3] / np.where(self.spacing > 0, self.spacing, 1.0)


def _check_case(case: _Case, labels: set[int] | None, tol: Tolerances) -> list[Problem]:
    out: list[Problem] = []
    try:
        _check_case_files(case, labels, tol, out)
    except Exception as exc:  # a file shaped like nothing foreseen: report it, check the other cases
        out.append(_err(case.label or case.images[0], f"could not be checked: {type(exc).__name__}: {exc}"))
    return out


def _check_case_files(case: _Case, labels: set[int] | None, tol: Tolerances, out: list[Problem]) -> None:
    images = [_read(f, out, tol) for f in case.images]
    for vol in images:
        if vol is not None:
            _check_image(vol, case.channels, out)
    label = _read(case.label, out, tol, what="label file") if case.label is not None else None
    if label is not None:
        _check_label(label, labels, tol, out)
        for vol in images:
            if vol is not None:
                _compare_geometry(vol, label, tol, out)


def _read(path: Path, out: list[Problem], tol: Tolerances, what: str = "image file") -> _Volume | None:
    """Read a volume completely; on any failure append the problem and return None."""
    if not path.exists():
        out.append(_err(path, f"{what} not found"))
        return None
    if not path.is_file():
        out.append(_err(path, f"{what} is not a regular file"))
        return None
    size = path.stat().st_size
    if size == 0:
        out.append(_err(path, f"empty {what}", "0 bytes"))
        return None
    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz")):
        return _read_sitk(path, out)
    if name.endswith(".gz"):
        try:
            with gzip.open(path, "rb") as fh:  # reading to EOF verifies the CRC-32 and the length
                raw = fh.read()
        except EOFError:
            out.append(_err(path, "truncated gzip stream: the file ends before the end-of-stream marker "
                                  "(incomplete download or copy?)", f"{size} bytes on disk"))
            return None
        except (gzip.BadGzipFile, zlib.error, OSError) as exc:
            out.append(_err(path, f"corrupted gzip stream: {exc}", f"{size} bytes on disk"))
            return None
    else:
        raw = path.read_bytes()
    if len(raw) < 348:
        out.append(_err(path, "not a NIfTI file: shorter than a NIfTI header", f"{len(raw)} bytes"))
        return None
    sizeof_hdr = int.from_bytes(raw[:4], "little")
    klass = nib.Nifti2Image if sizeof_hdr in (540, int.from_bytes((540).to_bytes(4, "big"), "little")) \
        else nib.Nifti1Image
    try:
        img = klass.from_bytes(raw)
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for damaged headers/data
        out.append(_err(path, f"not a readable NIfTI file: {' '.join(str(exc).split())}"))
        return None
    shape = tuple(int(s) for s in data.shape)
    if data.size == 0:
        out.append(_err(path, "the volume has no voxels", f"shape {shape}"))
        return None
    _check_qform_sform(path, img, shape, tol, out)
    return _Volume(path, shape, np.asarray(img.affine, dtype=np.float64), data)


def _read_sitk(path: Path, out: list[Problem]) -> _Volume | None:
    import SimpleITK as sitk

    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        out.append(_err(path, f"not a readable image: {' '.join(str(exc).split())[:300]}"))
        return None
    data = sitk.GetArrayFromImage(img)  # a copy: a view dies with the image
    dim = img.GetDimension()
    data = np.transpose(data, tuple(range(dim - 1, -1, -1)) + tuple(range(dim, data.ndim)))
    affine = np.eye(4)
    if dim >= 3:
        d = np.array(img.GetDirection()).reshape(dim, dim)[:3, :3]
        affine[:3, :3] = d * np.array(img.GetSpacing()[:3])
        affine[:3, 3] = img.GetOrigin()[:3]
        affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine  # LPS -> RAS
    return _Volume(path, tuple(int(s) for s in data.shape), affine, np.asarray(data))


def _check_qform_sform(path: Path, img: Any, shape: tuple[int, ...], tol: Tolerances, out: list[Problem]) -> None:
    qform, qcode = img.header.get_qform(coded=True)
    sform, scode = img.header.get_sform(coded=True)
    if not (qcode and scode and qform is not None and sform is not None):
        return
    n = [*shape[:3], 1, 1, 1][:3]
    ijk = np.array([[i, j, k, 1.0] for i in (0, n[0] - 1) for j in (0, n[1] - 1) for k in (0, n[2] - 1)]).T
    dist = float(np.max(np.linalg.norm((qform @ ijk - sform @ ijk)[:3], axis=0)))
    spacing = float(np.min(np.linalg.norm(sform[:3, :3], axis=0))) or 1.0
    if dist > tol.qform_sform_voxels * spacing:
        out.append(_err(path, f"qform and sform disagree (codes {int(qcode)}/{int(scode)}): they place voxels up to "
                              f"{dist:.4g} mm apart, so nibabel and SimpleITK would read different geometry",
                        f"qform {_fmt(qform[:3])}, sform {_fmt(sform[:3])}"))


def _check_image(vol: _Volume, channels: int, out: list[Problem]) -> None:
    shape, data = vol.shape, vol.data
    if channels == 1 and len(shape) == 4 and shape[3] == 1:
        out.append(_warn(vol.path, "image has a singleton 4th dimension; read as 3D", f"shape {shape}"))
    elif channels == 1 and len(shape) != 3:
        out.append(_err(vol.path, f"image is {len(shape)}D but a 3D single-channel volume is expected "
                                  "(dataset.json declares 1 channel)", f"shape {shape}"))
    elif channels > 1 and (len(shape) != 4 or shape[3] != channels):
        out.append(_err(vol.path, f"image should be 4D with {channels} channels in the 4th dimension "
                                  "(dataset.json declares that many)", f"shape {shape}"))
    if np.issubdtype(data.dtype, np.complexfloating) or data.dtype.names:
        out.append(_err(vol.path, "unsupported voxel type (complex or RGB)", data.dtype))
        return
    lo, hi = data.min(), data.max()
    if np.issubdtype(data.dtype, np.floating) and not (np.isfinite(lo) and np.isfinite(hi)):
        n_nan, n_inf = int(np.isnan(data).sum()), int(np.isinf(data).sum())
        found = [f"{n_nan} NaN" if n_nan else "", f"{n_inf} Inf" if n_inf else ""]
        first = np.argwhere(~np.isfinite(data))[0].tolist()
        out.append(_err(vol.path, "image contains non-finite values (NaN/Inf)",
                        f"{', '.join(x for x in found if x)} voxel(s), first at index {first}"))
    elif lo == hi:
        out.append(_warn(vol.path, "image is constant", f"every voxel = {lo}"))


def _check_label(vol: _Volume, labels: set[int] | None, tol: Tolerances, out: list[Problem]) -> None:
    shape, data = vol.shape, vol.data
    if len(shape) == 4 and shape[3] == 1:
        out.append(_warn(vol.path, "label has a singleton 4th dimension; read as 3D", f"shape {shape}"))
    elif len(shape) != 3:
        out.append(_err(vol.path, f"label is {len(shape)}D; a label map must be one 3D volume", f"shape {shape}"))
    if np.issubdtype(data.dtype, np.integer) or data.dtype == bool:
        lo, hi = int(data.min()), int(data.max())
        if hi - lo <= 64:  # the usual few classes: one comparison pass each, no sort, no copy
            values = np.array([v for v in range(lo, hi + 1) if v in (lo, hi) or (data == v).any()], np.float64)
        elif hi - lo < 1 << 16:
            counts = np.bincount((data.astype(np.int64) - lo).ravel(order="K"))
            values = (np.nonzero(counts)[0] + lo).astype(np.float64)
        else:
            values = np.unique(data).astype(np.float64)
    elif np.issubdtype(data.dtype, np.floating):
        values = np.unique(data).astype(np.float64)
    else:
        out.append(_err(vol.path, "unsupported label voxel type", data.dtype))
        return
    finite = values[np.isfinite(values)]
    if finite.size < values.size:
        out.append(_err(vol.path, "label contains NaN/Inf", ", ".join(map(str, values[~np.isfinite(values)]))))
    nearest = np.round(finite)
    off = np.abs(finite - nearest) > tol.label_atol
    if off.any():
        bad = finite[off]
        shown = ", ".join(f"{v:.6g}" for v in bad[:_SHOWN]) + (f" ... ({bad.size} values)" if bad.size > _SHOWN else "")
        near = np.abs(bad - np.round(bad)) <= 1e-3
        hint = (f"stored as inexact floats (an int cast truncates {bad[0]:.6g} to {int(bad[0])}); round the "
                "label before saving" if near.all()
                else "not a label map of integers (an interpolated or probability image?)")
        out.append(_err(vol.path, f"label values are not integers: {hint}", shown))
    ints = sorted({int(v) for v in nearest})
    if labels is not None:
        unexpected = [v for v in ints if v not in labels]
        if unexpected:
            out.append(_err(vol.path, f"label values outside the dataset.json label map {sorted(labels)}",
                            ", ".join(map(str, unexpected[:_SHOWN]))))
    if ints == [0] and not off.any():
        out.append(_warn(vol.path, "label is background only (every voxel is 0)"))


def _compare_geometry(image: _Volume, label: _Volume, tol: Tolerances, out: list[Problem]) -> None:
    where = f"label vs its image {image.path}"
    if image.shape[:3] != label.shape[:3]:
        out.append(_err(label.path, f"shape differs: {where}", f"label {label.shape[:3]}, image {image.shape[:3]}"))
    if not np.allclose(label.spacing, image.spacing, rtol=tol.spacing_rtol, atol=1e-8):
        out.append(_err(label.path, f"spacing differs: {where}",
                        f"label {_fmt(label.spacing)} mm, image {_fmt(image.spacing)} mm"))
    if not np.allclose(label.affine[:3, 3], image.affine[:3, 3], rtol=0, atol=tol.origin_atol_mm):
        out.append(_err(label.path, f"origin differs: {where}",
                        f"label {_fmt(label.affine[:3, 3])} mm, image {_fmt(image.affine[:3, 3])} mm"))
    if not np.allclose(label.direction, image.direction, rtol=0, atol=tol.direction_atol):
        out.append(_err(label.path, f"direction differs: {where}",
                        f"label {_fmt(label.direction)}, image {_fmt(image.direction)}"))


def _fmt(a: np.ndarray) -> str:
    return np.array2string(np.asarray(a, dtype=np.float64), precision=4, suppress_small=True,
                           separator=", ", max_line_width=10_000).replace("\n", "")
