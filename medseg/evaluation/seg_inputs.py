"""DICOM SEG as prediction or ground truth for ``medseg evaluate``, read as NIfTI label maps.

PRED and GT may each be a folder holding DICOM SEG files (``<case>.seg.dcm`` or ``<case>.dcm``, case
id = the name without that ending) or one such file, besides the NIfTI folders. Before pairing, every
SEG case is placed on the voxel grid of its counterpart (the NIfTI of the same case, or the grid the
two SEGs share) by :func:`medseg.io.dicom_seg_read.seg_on_grid`: nothing is resampled, and a SEG off
that grid is refused naming both files. Its segments become label values by name (the labels or
regions of ``dataset.json``; regions painted in their order, ``regions_class_order`` values), else by
segment number. The label maps go to a temporary folder that lives as long as the returned views.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from medseg.data.datalist import LabelSpec
from medseg.errors import InputError
from medseg.evaluation.case import spatial_shape
from medseg.evaluation.pairs import find_cases

__all__ = ["SegViews", "seg_views", "find_seg_cases", "seg_case_id"]

_SEG_ENDINGS = (".seg.dcm", ".dcm")


@dataclass
class SegViews:
    """The folders to evaluate in place of PRED and GT (the originals when neither holds DICOM SEG)."""

    pred: Path
    gt: Path
    tmp: Any = None


def seg_case_id(path: Path) -> str:
    name = path.name
    for ending in _SEG_ENDINGS:
        if name.lower().endswith(ending):
            return name[: -len(ending)]
    return name


def find_seg_cases(path: Path) -> dict[str, Path]:
    """``{case_id: file}`` of the DICOM SEG files in folder ``path`` (top level), or of ``path`` itself."""
    from medseg.io.dicom_seg_read import is_dicom_seg

    if path.is_file():
        return {seg_case_id(path): path} if is_dicom_seg(path) else {}
    if not path.is_dir():
        return {}
    files = sorted(f for f in path.iterdir() if f.is_file() and f.name.lower().endswith(".dcm"))
    return {seg_case_id(f): f for f in files if is_dicom_seg(f)}


def _label_map(stack: np.ndarray, labels: list[str], spec: LabelSpec | None) -> np.ndarray:
    from medseg.io.dicom_seg_read import paint_segments

    if spec is not None and spec.regions and all(name in spec.regions for name in labels):
        names = list(spec.regions)
        paint = spec.regions_class_order or tuple(max(spec.regions[n]) for n in names)
        order = sorted(range(len(labels)), key=lambda s: names.index(labels[s]))
        return paint_segments(stack[order], [paint[names.index(labels[s])] for s in order])
    by_name = {name: value for value, name in spec.names.items()} if spec is not None else {}
    return paint_segments(stack, [by_name.get(name, number) for number, name in enumerate(labels, start=1)])


def _pairing_problems(pred: Path, gt: Path, preds: set[str], gts: set[str]) -> None:
    problems = [f"{c}: no prediction in {pred} for ground truth in {gt}" for c in sorted(gts - preds)]
    problems += [f"{c}: prediction in {pred} has no ground truth in {gt}" for c in sorted(preds - gts)]
    if problems:
        raise InputError(f"cannot evaluate {pred} against {gt}: {len(problems)} problem(s)", problems)


def _grid(case: str, side: dict[str, Any], other: dict[str, Any]) -> tuple[np.ndarray, tuple[int, ...], str]:
    """Grid of ``case``: its NIfTI counterpart's, else the one its two SEGs share."""
    from medseg.io.dicom_seg_read import seg_grid

    if case in other["nifti"]:
        img = nib.load(str(other["nifti"][case]))
        return np.asarray(img.affine), spatial_shape(img.shape)[:3], str(other["nifti"][case])
    affine, shape = seg_grid([side["read"][case], other["read"][case]])
    return affine, shape, str(other["segs"][case])


def seg_views(pred: Path, gt: Path, spec: LabelSpec | None) -> SegViews:
    """Folders standing for ``pred`` and ``gt`` where every DICOM SEG case is a NIfTI label map.

    Raises:
        InputError: a case on one side only, or a SEG that does not lie on its counterpart's grid.
    """
    from medseg.io.dicom_seg_read import read_seg, seg_on_grid

    sides = {name: {"root": root, "segs": find_seg_cases(root),
                    "nifti": find_cases(root) if root.is_dir() else {}} for name, root in (("pred", pred), ("gt", gt))}
    if not sides["pred"]["segs"] and not sides["gt"]["segs"]:
        return SegViews(pred, gt)
    for side in sides.values():
        both = sorted(set(side["segs"]) & set(side["nifti"]))
        if both:
            raise InputError(f"{side['root']}: case(s) {', '.join(both)} given both as DICOM SEG and as NIfTI; keep one")
    _pairing_problems(pred, gt, set(sides["pred"]["segs"]) | set(sides["pred"]["nifti"]),
                      set(sides["gt"]["segs"]) | set(sides["gt"]["nifti"]))
    tmp = tempfile.TemporaryDirectory(prefix="medseg-seg-")
    views = {}
    for name, side in sides.items():
        side["read"] = {case: read_seg(path) for case, path in side["segs"].items()}
        views[name] = Path(tmp.name) / name if side["segs"] else side["root"]
    for name, side in sides.items():
        if not side["segs"]:
            continue
        views[name].mkdir()
        for path in side["nifti"].values():
            os.symlink(path.resolve(), views[name] / path.name)
        other = sides["gt" if name == "pred" else "pred"]
        for case, seg in side["read"].items():
            affine, shape, other_name = _grid(case, side, other)
            labels = _label_map(seg_on_grid(seg, affine, shape, other_name), seg.labels, spec)
            img = nib.Nifti1Image(labels, affine)
            img.set_qform(affine, code=1)
            img.set_sform(affine, code=1)
            nib.save(img, str(views[name] / f"{case}.nii.gz"))
    return SegViews(views["pred"], views["gt"], tmp)
