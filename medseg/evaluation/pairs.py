"""Which files to evaluate: prediction/ground-truth pairs matched by case id and checked for geometry, the
structures to score (labels or regions of the dataset's ``dataset.json``) and the images for overlays.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from medseg.data.datalist import LabelSpec, parse_labels, read_meta
from medseg.errors import InputError
from medseg.evaluation.case import Structure, spatial_shape

__all__ = ["find_cases", "find_dataset_json", "load_label_spec", "load_label_names", "match_cases", "structures_to_score",
           "find_image_dir", "image_for", "AFFINE_TOLERANCE"]

AFFINE_TOLERANCE = 1e-4
_NIFTI = re.compile(r"^(?P<id>.+?)\.nii(\.gz)?$")


def find_cases(folder: str | Path) -> dict[str, Path]:
    """``{case_id: path}`` of the NIfTI files in ``folder`` (case id = name without ``.nii``/``.nii.gz``)."""
    out: dict[str, Path] = {}
    for path in sorted(Path(folder).iterdir()):
        match = _NIFTI.match(path.name)
        if match and path.is_file() and not path.name.startswith("."):
            out[match.group("id")] = path
    return out


def find_dataset_json(gt_dir: str | Path) -> Path | None:
    """The first ``dataset.json`` in ``gt_dir`` or its two parents (``labelsTs/`` sits inside the dataset)."""
    start = Path(gt_dir).resolve()
    for folder in (start, start.parent, start.parent.parent):
        if (folder / "dataset.json").is_file():
            return folder / "dataset.json"
    return None


def load_label_spec(gt_dir: str | Path, dataset: str | Path | None = None) -> LabelSpec | None:
    """The label specification of ``dataset`` (folder or ``dataset.json``), else of :func:`find_dataset_json`.

    Returns ``None`` when no ``dataset.json`` is found; a malformed one raises ``InputError``.
    """
    source = Path(dataset) if dataset is not None else find_dataset_json(gt_dir)
    if source is None:
        return None
    path, meta = read_meta(source)
    return parse_labels(meta["labels"], path, meta.get("regions_class_order"))


def load_label_names(gt_dir: str | Path, dataset: str | Path | None = None) -> dict[int, str]:
    """Label value -> name from the dataset's ``dataset.json`` (``{}`` without one).

    With region labels, a value is named when a region covers it alone (``"enhancing_tumor": 3``).
    """
    spec = load_label_spec(gt_dir, dataset)
    if spec is None:
        return {}
    if spec.regions is None:
        return dict(spec.names)
    single = {vals[0]: name for name, vals in spec.regions.items() if len(vals) == 1}
    return {0: "background", **dict(sorted(single.items()))}


def structures_to_score(labels: Sequence[int] | None, regions: bool | Mapping[str, Sequence[int]], spec: LabelSpec | None,
                gt_dir: Path, dataset: str | Path | None) -> tuple[tuple[Structure, ...] | None, dict[int, str]]:
    """What to score, and key -> name."""
    if regions:
        if labels is not None:
            raise InputError("--labels and --regions cannot be combined (--regions scores every region)")
        if isinstance(regions, Mapping):
            table = {str(k): tuple(int(v) for v in vals) for k, vals in regions.items()}
            if not table or any(not vals or min(vals) <= 0 for vals in table.values()):
                raise InputError(f"regions: need one or more regions of label values > 0, got {dict(regions)!r}")
        else:
            where = dataset if dataset is not None else find_dataset_json(gt_dir)
            if spec is None:
                raise InputError(f"--regions: no dataset.json in {gt_dir} or its two parents; pass --dataset")
            if spec.regions is None:
                raise InputError(f"--regions: {where} defines no region labels (nnU-Net v2 lists the values of a "
                                 "region, e.g. \"whole_tumor\": [1, 2, 3], with \"regions_class_order\")")
            table = dict(spec.regions)
        structures = tuple(Structure(i, name, vals) for i, (name, vals) in enumerate(table.items(), start=1))
        return structures, {s.key: s.name for s in structures}
    names = load_label_names(gt_dir, dataset) if spec is not None else {}
    if labels is not None:
        wanted = sorted({int(k) for k in labels})
        if not wanted or any(k < 0 for k in wanted):
            raise InputError(f"--labels: need one or more labels >= 0, got {list(labels)}")
    elif spec is not None:
        wanted = sorted(spec.label_values - {0})
    else:
        return None, names
    return tuple(Structure(k, names.get(k, f"label_{k}"), (k,)) for k in wanted), names


def match_cases(pred_dir: Path, gt_dir: Path) -> dict[str, tuple[Path, Path]]:
    for flag, folder in (("PRED_DIR", pred_dir), ("GT_DIR", gt_dir)):
        if not folder.is_dir():
            raise InputError(f"{flag} {folder}: not a directory")
    preds, gts = find_cases(pred_dir), find_cases(gt_dir)
    problems: list[str] = []
    if not gts:
        problems.append(f"{gt_dir}: no ground-truth NIfTI files (*.nii, *.nii.gz)")
    problems += [f"{case}: no prediction in {pred_dir} for ground truth {gts[case]}" for case in sorted(set(gts) - set(preds))]
    problems += [f"{case}: prediction {preds[case]} has no ground truth in {gt_dir}" for case in sorted(set(preds) - set(gts))]
    pairs = {case: (preds[case], gts[case]) for case in sorted(set(preds) & set(gts))}
    for case, (pred, gt) in pairs.items():
        problems += _geometry_problems(case, pred, gt)
    if problems:
        raise InputError(f"cannot evaluate {pred_dir} against {gt_dir}: {len(problems)} problem(s)", problems)
    return pairs


def _geometry_problems(case: str, pred: Path, gt: Path) -> list[str]:
    try:
        p_img, g_img = nib.load(str(pred)), nib.load(str(gt))
    except Exception as exc:  # nibabel raises several types for unreadable files
        return [f"{case}: cannot read {pred} or {gt} as NIfTI ({type(exc).__name__}: {exc})"]
    p_shape, g_shape = spatial_shape(p_img.shape), spatial_shape(g_img.shape)
    if p_shape != g_shape:
        return [f"{case}: prediction {pred} has shape {p_shape}, ground truth {gt} has shape {g_shape}"]
    diff = float(np.max(np.abs(np.asarray(p_img.affine) - np.asarray(g_img.affine))))
    if diff > AFFINE_TOLERANCE:
        return [f"{case}: prediction {pred} affine differs from ground truth {gt} by up to {diff:.3g} "
                f"(tolerance {AFFINE_TOLERANCE})"]
    return []


def find_image_dir(gt_dir: Path, image_dir: str | Path | None) -> Path | None:
    if image_dir is not None:
        return Path(image_dir)
    guess = gt_dir.parent / gt_dir.name.replace("labels", "images")
    return guess if guess != gt_dir and guess.is_dir() else None


def image_for(images: Path | None, case: str) -> Path | None:
    if images is None:
        return None
    for name in (f"{case}.nii.gz", f"{case}.nii", f"{case}_0000.nii.gz", f"{case}_0000.nii"):
        if (images / name).is_file():
            return images / name
    return None
