"""Segmentation metrics in mm (Dice, IoU, HD, HD95, ASSD, NSD) with one empty-mask policy.

Bottom layer: numpy, scipy, edt and MONAI only. See :mod:`medseg.metrics.segmentation` for the
formulas and the selectable HD95 conventions, and :mod:`medseg.metrics.policy` for the
empty-mask policy table.
"""

from __future__ import annotations

from medseg.metrics.policy import (
    EMPTY_POLICY,
    SITUATIONS,
    classify_situation,
    default_worst_distance,
    empty_mask_values,
)
from medseg.metrics.segmentation import (
    CONVENTIONS,
    METRIC_NAMES,
    ClassMetrics,
    binary_metrics,
    check_spacing,
    compute_metrics,
)

__all__ = [
    "CONVENTIONS",
    "EMPTY_POLICY",
    "METRIC_NAMES",
    "SITUATIONS",
    "ClassMetrics",
    "binary_metrics",
    "check_spacing",
    "classify_situation",
    "compute_metrics",
    "default_worst_distance",
    "empty_mask_values",
]
