"""Lesion-wise evaluation: connected components matched one-to-one, detection counts and per-lesion metrics in mm.

A *lesion* is one connected component of a binary class (or region) mask.

Convention: connectivity is **full** by default (26-neighbourhood in 3D, 8 in 2D: voxels sharing a
face, an edge or a corner belong to the same lesion), as in panoptica's default connected-components
approximator (``cc3d``) and the BraTS 2023 lesion-wise metric; ``connectivity=1`` gives faces only
(6 in 3D).

Matching (panoptica's ``MaxBipartiteMatching``, its default ``IOU`` metric and 0.5 threshold):
a reference lesion ``r`` and a predicted lesion ``p`` may be paired when ``IoU(r, p) >= iou_threshold``
(non-strict, as panoptica); among the admissible pairs a maximum-weight bipartite matching
(``scipy.optimize.linear_sum_assignment``, weight = IoU) makes the pairing one-to-one. Matched
pairs are true positives (TP), unmatched reference lesions false negatives (FN), unmatched predicted
lesions false positives (FP). With the 0.5 threshold a reference lesion split in two halves of a
prediction is matched at most once, and two touching lesions merged into one prediction
count as one TP and one FN.

Per lesion (TP): Dice and HD95 between the reference lesion and its matched predicted lesion alone,
with :func:`medseg.metrics.binary_metrics` (distances in mm from ``spacing``; ``convention``
selects the HD95 definition, ``"medpy"`` reproduces panoptica's HD95). FN and FP lesions get
Dice 0 and HD95 = ``worst_distance``.

Per case, BraTS 2023 style (Saluja et al., BraTS 2023 lesion-wise metrics,
github.com/rachitsaluja/BraTS-2023-Metrics)::

    lesion_dice = sum(Dice of TP) / (TP + FN + FP)
    lesion_hd95 = (sum(HD95 of TP) + worst_distance * (FN + FP)) / (TP + FN + FP)

with ``worst_distance`` = 374 mm by default (BraTS: just above the diagonal of its 240x240x155 1 mm
grid); a case without lesions in either mask scores 1 and 0. Convention: BraTS itself matches a
prediction to a dilated reference lesion on any overlap and drops lesions below a size threshold;
medseg keeps every lesion and matches with IoU as panoptica.

Detection per class (pooled over cases): precision = TP / (TP + FP), recall = TP / (TP + FN),
F1 = 2 TP / (2 TP + FP + FN) (panoptica's recognition quality ``rq``); ``None`` when undefined.
Recall by size: reference lesions binned by volume in mm^3 (edges :data:`DEFAULT_SIZE_BINS_MM3`,
configurable), recall = detected / lesions in each bin.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from medseg.metrics.segmentation import CONVENTIONS, binary_metrics, check_spacing
from medseg.metrics.surface import bounding_box

__all__ = [
    "BRATS_WORST_DISTANCE_MM",
    "DEFAULT_SIZE_BINS_MM3",
    "LESION_STATUSES",
    "MATCH_IOU_THRESHOLD",
    "Lesion",
    "LesionResult",
    "label_lesions",
    "lesion_metrics",
    "match_lesions",
    "size_bin_names",
    "summarise_lesions",
]

#: HD95 of a missed or spurious lesion in BraTS 2023's lesion-wise ranking (mm).
BRATS_WORST_DISTANCE_MM = 374.0
#: panoptica's default matching threshold (IoU, compared with ``>=``).
MATCH_IOU_THRESHOLD = 0.5
#: Edges (mm^3) of the lesion-size bins: < 10, 10-100, 100-1000, 1000-10000, >= 10000.
DEFAULT_SIZE_BINS_MM3: tuple[float, ...] = (10.0, 100.0, 1000.0, 10000.0)
#: Status of a lesion row: matched reference lesion, missed reference lesion, spurious prediction.
LESION_STATUSES: tuple[str, ...] = ("TP", "FN", "FP")


@dataclass(frozen=True)
class Lesion:
    """One reference lesion (TP or FN) or one unmatched predicted lesion (FP).

    ``ref_id`` / ``pred_id``: 1-based component index in the reference / prediction (``None`` when
    absent); volumes in mm^3; ``volume_mm3`` is the reference volume for TP/FN and the predicted
    volume for FP. Dice/IoU/HD95 compare the two matched components alone (0 / 0 / worst otherwise).
    """

    status: str
    ref_id: int | None
    pred_id: int | None
    ref_volume_mm3: float
    pred_volume_mm3: float
    iou: float
    dice: float
    hd95: float

    @property
    def volume_mm3(self) -> float:
        return self.pred_volume_mm3 if self.status == "FP" else self.ref_volume_mm3

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "volume_mm3": self.volume_mm3}


@dataclass(frozen=True)
class LesionResult:
    """Lesions of one case and one class: reference lesions in component order, then the FPs."""

    lesions: tuple[Lesion, ...] = field(default_factory=tuple)
    worst_distance: float = BRATS_WORST_DISTANCE_MM

    def count(self, status: str) -> int:
        return sum(les.status == status for les in self.lesions)

    @property
    def tp(self) -> int:
        return self.count("TP")

    @property
    def fp(self) -> int:
        return self.count("FP")

    @property
    def fn(self) -> int:
        return self.count("FN")

    @property
    def lesion_dice(self) -> float:
        """BraTS lesion-wise Dice of the case (1 when there is no lesion at all)."""
        if not self.lesions:
            return 1.0
        return float(sum(les.dice for les in self.lesions) / len(self.lesions))

    @property
    def lesion_hd95(self) -> float:
        """BraTS lesion-wise HD95 of the case in mm (0 when there is no lesion at all)."""
        if not self.lesions:
            return 0.0
        return float(sum(les.hd95 for les in self.lesions) / len(self.lesions))


def label_lesions(mask: np.ndarray, connectivity: int | None = None) -> tuple[np.ndarray, int]:
    """Connected components of a binary mask: ``(labels, n)``, labels 1..n in scan order, 0 = background.

    Args:
        mask: array ``(*spatial)``, nonzero = foreground.
        connectivity: 1 (faces) .. ``ndim`` (full, default): scipy's ``generate_binary_structure`` rank.
    """
    mask = np.asarray(mask) != 0
    rank = mask.ndim if connectivity is None else int(connectivity)
    if not 1 <= rank <= max(mask.ndim, 1):
        raise ValueError(f"connectivity must be in [1, {mask.ndim}] for {mask.ndim}D masks, got {connectivity!r}")
    labels, n = ndimage.label(mask, structure=ndimage.generate_binary_structure(mask.ndim, rank))
    return labels, int(n)


def match_lesions(iou: np.ndarray, iou_threshold: float = MATCH_IOU_THRESHOLD) -> list[tuple[int, int]]:
    """One-to-one pairs ``(ref_index, pred_index)`` (0-based) maximising the summed IoU of admissible pairs.

    Args:
        iou: float array ``(n_ref, n_pred)`` of IoU between every reference and predicted lesion.
        iou_threshold: a pair is admissible when ``iou >= iou_threshold`` (in ``(0, 1]``).
    """
    if not 0.0 < float(iou_threshold) <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold!r}")
    if iou.size == 0:
        return []
    admissible = iou >= iou_threshold
    rows, cols = linear_sum_assignment(np.where(admissible, iou, 0.0), maximize=True)
    return sorted((int(r), int(c)) for r, c in zip(rows, cols, strict=True) if admissible[r, c])


def lesion_metrics(
    pred: Any,
    gt: Any,
    spacing: Sequence[float] | float | None = None,
    *,
    connectivity: int | None = None,
    iou_threshold: float = MATCH_IOU_THRESHOLD,
    convention: str = "monai",
    percentile: float = 95.0,
    worst_distance: float = BRATS_WORST_DISTANCE_MM,
) -> LesionResult:
    """Lesion-wise matching and metrics of one binary mask pair (see the module docstring).

    Args:
        pred: array ``(*spatial)``, nonzero = predicted foreground of one class or region.
        gt: array ``(*spatial)``, same shape, reference foreground.
        spacing: mm per voxel along each spatial axis (``None``: 1 mm).
        connectivity: lesion connectivity, 1 (faces) .. ndim (full, default).
        iou_threshold: matching threshold on IoU (``>=``), in (0, 1].
        convention: HD95 convention of :func:`medseg.metrics.binary_metrics`.
        percentile: percentile of the per-lesion Hausdorff distance.
        worst_distance: HD95 (mm) of a FN or FP lesion, >= 0.

    Returns:
        :class:`LesionResult` with one :class:`Lesion` per reference lesion (component order), then
        one per unmatched predicted lesion.
    """
    p, g = np.asarray(pred) != 0, np.asarray(gt) != 0
    if p.shape != g.shape:
        raise ValueError(f"pred and gt must have the same shape, got {p.shape} and {g.shape}")
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {list(CONVENTIONS)}, got {convention!r}")
    if not (math.isfinite(float(worst_distance)) and float(worst_distance) >= 0):
        raise ValueError(f"worst_distance must be a finite distance >= 0 mm, got {worst_distance!r}")
    if not 0.0 < float(iou_threshold) <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold!r}")
    sp = check_spacing(spacing, p.ndim)
    worst = float(worst_distance)
    box = bounding_box(p | g)
    if box is None:
        return LesionResult((), worst)
    p, g = p[box], g[box]
    ref_lab, n_ref = label_lesions(g, connectivity)
    pred_lab, n_pred = label_lesions(p, connectivity)
    voxel_mm3 = float(np.prod(sp))
    ref_size = np.bincount(ref_lab.ravel(), minlength=n_ref + 1)[1:]
    pred_size = np.bincount(pred_lab.ravel(), minlength=n_pred + 1)[1:]
    both = (ref_lab > 0) & (pred_lab > 0)
    pair_code = (ref_lab[both].astype(np.int64) - 1) * n_pred + (pred_lab[both].astype(np.int64) - 1)
    inter = np.bincount(pair_code, minlength=n_ref * n_pred).reshape(n_ref, n_pred).astype(np.float64)
    iou = inter / np.maximum(ref_size[:, None] + pred_size[None, :] - inter, 1)
    pairs = dict(match_lesions(iou, iou_threshold))
    ref_boxes, pred_boxes = ndimage.find_objects(ref_lab), ndimage.find_objects(pred_lab)

    lesions: list[Lesion] = []
    for r in range(n_ref):
        ref_mm3 = float(ref_size[r]) * voxel_mm3
        q = pairs.get(r)
        if q is None:
            lesions.append(Lesion("FN", r + 1, None, ref_mm3, 0.0, 0.0, 0.0, worst))
            continue
        crop = _union_box(ref_boxes[r], pred_boxes[q])
        m = binary_metrics(pred_lab[crop] == q + 1, ref_lab[crop] == r + 1, sp, convention=convention,
                           percentile=percentile, worst_distance=worst, label=r + 1)
        lesions.append(Lesion("TP", r + 1, q + 1, ref_mm3, float(pred_size[q]) * voxel_mm3,
                              float(iou[r, q]), m.dice, float(m.hd95 if m.hd95 is not None else worst)))
    matched = set(pairs.values())
    for q in range(n_pred):
        if q not in matched:
            lesions.append(Lesion("FP", None, q + 1, 0.0, float(pred_size[q]) * voxel_mm3, 0.0, 0.0, worst))
    return LesionResult(tuple(lesions), worst)


def size_bin_names(edges: Sequence[float] = DEFAULT_SIZE_BINS_MM3) -> list[str]:
    """Names of the bins defined by increasing ``edges`` (mm^3): ``"<10"``, ``"10-100"``, ..., ``">=10000"``."""
    e = _check_edges(edges)
    if not e:
        return ["all"]
    names = [f"<{_g(e[0])}"] + [f"{_g(a)}-{_g(b)}" for a, b in zip(e[:-1], e[1:], strict=True)]
    return names + [f">={_g(e[-1])}"]


def summarise_lesions(results: Iterable[LesionResult], size_bins: Sequence[float] = DEFAULT_SIZE_BINS_MM3,
                      ) -> dict[str, Any]:
    """Detection and lesion-wise scores of one class over cases (one :class:`LesionResult` per case).

    Returns a JSON-friendly dict: ``tp``, ``fp``, ``fn``, ``precision``, ``recall``, ``f1`` (pooled
    lesion counts; ``None`` when undefined), ``lesion_dice`` / ``lesion_hd95`` (mean over cases of the
    BraTS case scores), ``matched_dice`` / ``matched_hd95`` (mean over TP lesions; ``None`` without
    TP), ``recall_by_size`` (one entry per size bin: ``bin``, ``min_mm3``, ``max_mm3``, ``lesions``,
    ``detected``, ``recall``) and ``n_cases``.
    """
    edges = _check_edges(size_bins)
    results = list(results)
    lesions = [les for res in results for les in res.lesions]
    tp, fp, fn = (sum(les.status == s for les in lesions) for s in ("TP", "FP", "FN"))
    matched = [les for les in lesions if les.status == "TP"]
    reference = [les for les in lesions if les.status in ("TP", "FN")]
    bounds = [0.0, *edges, math.inf]
    by_size = []
    for name, lo, hi in zip(size_bin_names(edges), bounds[:-1], bounds[1:], strict=True):
        inside = [les for les in reference if lo <= les.ref_volume_mm3 < hi]
        found = sum(les.status == "TP" for les in inside)
        by_size.append({"bin": name, "min_mm3": lo, "max_mm3": None if math.isinf(hi) else hi,
                        "lesions": len(inside), "detected": found,
                        "recall": found / len(inside) if inside else None})
    return {
        "tp": tp, "fp": fp, "fn": fn,
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / (tp + fn) if tp + fn else None,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None,
        "lesion_dice": float(np.mean([r.lesion_dice for r in results])) if results else None,
        "lesion_hd95": float(np.mean([r.lesion_hd95 for r in results])) if results else None,
        "matched_dice": float(np.mean([les.dice for les in matched])) if matched else None,
        "matched_hd95": float(np.mean([les.hd95 for les in matched])) if matched else None,
        "recall_by_size": by_size,
        "n_cases": len(results),
    }


def _union_box(a: tuple[slice, ...], b: tuple[slice, ...]) -> tuple[slice, ...]:
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b, strict=True))


def _check_edges(edges: Sequence[float]) -> list[float]:
    e = [float(x) for x in edges]
    if any(not (math.isfinite(x) and x > 0) for x in e) or any(b <= a for a, b in zip(e[:-1], e[1:], strict=False)):
        raise ValueError(f"size_bins must be increasing finite volumes > 0 mm^3, got {list(edges)!r}")
    return e


def _g(x: float) -> str:
    return f"{x:g}"
