"""The empty-mask policy: what every metric returns when the ground truth or the prediction is empty.

This module is the single place where the policy is written down; every metric in
:mod:`medseg.metrics` (and therefore every report, summary and training handler) applies it.

Empty-mask policy table (``W`` = worst-case distance, default: the image diagonal in mm,
``sqrt(sum((shape_i * spacing_i)^2))``; configurable through ``worst_distance``):

==============  ===============  ==========  ====  ====  =====  =====  =====  =====
situation       GT               prediction  Dice  IoU   HD     HD95   ASSD   NSD
==============  ===============  ==========  ====  ====  =====  =====  =====  =====
``both_empty``  empty            empty       1     1     0      0      0      1
``gt_empty``    empty            not empty   0     0     W      W      W      0
``pred_empty``  not empty        empty       0     0     W      W      W      0
``both_present`` not empty       not empty   formula (see :mod:`medseg.metrics.segmentation`)
==============  ===============  ==========  ====  ====  =====  =====  =====  =====

Why: a missed structure (``pred_empty``) or a hallucinated one (``gt_empty``) must never look
good, and it must never disappear from a mean as a NaN (MONAI's ``compute_hausdorff_distance``
returns NaN/inf there and ``DiceMetric(ignore_empty=True)`` drops false positives on empty GT).
``W`` is larger than any distance that can occur inside the image, so a miss is always the
worst value of the column. Correct rejection (``both_empty``) is a perfect score.
Every summary counts how many (case, class) pairs fell into each situation.

Convention: passing ``worst_distance=float("nan")`` is the one explicit way to get NaN for
one-empty distances (MONAI's behaviour); the situation counts still report them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = [
    "SITUATIONS",
    "EMPTY_POLICY",
    "classify_situation",
    "default_worst_distance",
    "empty_mask_values",
    "resolve_worst_distance",
]

#: The four (GT, prediction) situations, in report order.
SITUATIONS: tuple[str, ...] = ("both_present", "both_empty", "gt_empty", "pred_empty")

#: Metric values per empty situation; the string ``"worst"`` stands for the worst-case distance.
EMPTY_POLICY: dict[str, dict[str, float | str]] = {
    "both_empty": {"dice": 1.0, "iou": 1.0, "hd": 0.0, "hd95": 0.0, "assd": 0.0, "nsd": 1.0},
    "gt_empty": {"dice": 0.0, "iou": 0.0, "hd": "worst", "hd95": "worst", "assd": "worst", "nsd": 0.0},
    "pred_empty": {"dice": 0.0, "iou": 0.0, "hd": "worst", "hd95": "worst", "assd": "worst", "nsd": 0.0},
}


def classify_situation(gt_voxels: int, pred_voxels: int) -> str:
    """Name the empty-mask situation of one (case, class) pair from its voxel counts."""
    if gt_voxels == 0:
        return "both_empty" if pred_voxels == 0 else "gt_empty"
    return "pred_empty" if pred_voxels == 0 else "both_present"


def default_worst_distance(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """The image diagonal in mm, ``sqrt(sum((shape_i * spacing_i)^2))``: an upper bound on any distance."""
    return float(math.sqrt(sum((float(n) * float(s)) ** 2 for n, s in zip(shape, spacing, strict=True))))


def resolve_worst_distance(worst_distance: float | None, shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Return ``worst_distance`` validated, or the image diagonal when it is ``None``."""
    if worst_distance is None:
        return default_worst_distance(shape, spacing)
    value = float(worst_distance)
    if not math.isnan(value) and value < 0:
        raise ValueError(f"worst_distance must be >= 0 (or NaN to opt into NaN), got {worst_distance!r}")
    return value


def empty_mask_values(situation: str, worst_distance: float) -> dict[str, float]:
    """All metric values for an empty situation (``both_empty``, ``gt_empty`` or ``pred_empty``)."""
    try:
        row = EMPTY_POLICY[situation]
    except KeyError:
        raise ValueError(f"situation must be one of {sorted(EMPTY_POLICY)}, got {situation!r}") from None
    return {name: (worst_distance if value == "worst" else float(value)) for name, value in row.items()}
