"""One test per row of the empty-mask policy table (medseg.metrics.policy), in every convention."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medseg.metrics import EMPTY_POLICY, binary_metrics, compute_metrics, default_worst_distance
from medseg.metrics.policy import empty_mask_values, resolve_worst_distance

SHAPE = (10, 12, 8)
SPACING = (1.0, 2.0, 3.0)
# image diagonal in mm: sqrt(10^2 + 24^2 + 24^2) = sqrt(1252)
DIAGONAL = math.sqrt(10**2 + 24**2 + 24**2)
CONVENTIONS = ["monai", "medpy", "surface_distance"]


def _blob():
    m = np.zeros(SHAPE, bool)
    m[3:6, 4:7, 2:5] = True
    return m


def test_policy_table_has_the_three_empty_rows():
    assert set(EMPTY_POLICY) == {"both_empty", "gt_empty", "pred_empty"}


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_row_both_empty_is_a_perfect_score(convention):
    empty = np.zeros(SHAPE, bool)
    m = binary_metrics(empty, empty, SPACING, convention=convention)
    assert m.situation == "both_empty"
    assert (m.dice, m.iou, m.hd, m.hd95, m.assd, m.nsd) == (1.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_row_gt_empty_false_positive_is_worst(convention):
    m = binary_metrics(_blob(), np.zeros(SHAPE, bool), SPACING, convention=convention)
    assert m.situation == "gt_empty"
    assert (m.dice, m.iou, m.nsd) == (0.0, 0.0, 0.0)
    assert m.hd == m.hd95 == m.assd == pytest.approx(DIAGONAL)


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_row_pred_empty_miss_is_worst(convention):
    m = binary_metrics(np.zeros(SHAPE, bool), _blob(), SPACING, convention=convention)
    assert m.situation == "pred_empty"
    assert (m.dice, m.iou, m.nsd) == (0.0, 0.0, 0.0)
    assert m.hd == m.hd95 == m.assd == pytest.approx(DIAGONAL)
    assert m.gt_voxels == 27 and m.pred_voxels == 0


def test_row_both_present_uses_the_formulas():
    # identical masks: Dice 1 and all distances 0
    m = binary_metrics(_blob(), _blob(), SPACING)
    assert m.situation == "both_present"
    assert (m.dice, m.iou, m.hd, m.hd95, m.assd, m.nsd) == (1.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def test_worst_distance_is_configurable_and_bounds_every_real_distance():
    m = binary_metrics(np.zeros(SHAPE, bool), _blob(), SPACING, worst_distance=373.0)
    assert m.hd95 == 373.0 and m.worst_distance == 373.0
    # two opposite corner voxels: the largest distance inside the image is still below the diagonal
    a, b = np.zeros(SHAPE, bool), np.zeros(SHAPE, bool)
    a[0, 0, 0], b[-1, -1, -1] = True, True
    assert binary_metrics(a, b, SPACING).hd < default_worst_distance(SHAPE, SPACING)


def test_nan_worst_distance_is_an_explicit_opt_in():
    m = binary_metrics(np.zeros(SHAPE, bool), _blob(), SPACING, worst_distance=float("nan"))
    assert math.isnan(m.hd95) and m.situation == "pred_empty"


def test_negative_worst_distance_is_rejected():
    with pytest.raises(ValueError, match=r"worst_distance must be >= 0.*-1"):
        resolve_worst_distance(-1.0, SHAPE, SPACING)


def test_unknown_situation_is_rejected():
    with pytest.raises(ValueError, match="situation must be one of.*'nope'"):
        empty_mask_values("nope", 1.0)


def test_label_map_absent_class_follows_policy():
    gt = np.zeros(SHAPE, np.uint8)
    gt[_blob()] = 1
    pred = np.zeros(SHAPE, np.uint8)
    pred[_blob()] = 2  # class 1 missed, class 2 hallucinated, class 3 absent in both
    out = compute_metrics(pred, gt, SPACING, labels=[1, 2, 3])
    assert [out[k].situation for k in (1, 2, 3)] == ["pred_empty", "gt_empty", "both_empty"]
    assert out[1].hd95 == out[2].hd95 == pytest.approx(DIAGONAL)
    assert out[3].dice == 1.0 and out[3].hd95 == 0.0
