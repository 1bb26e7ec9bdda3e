"""Lesion-wise metrics: hand-checked cases, matching, size bins, BraTS scores, and equality with panoptica."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medseg.metrics.lesion import (
    BRATS_WORST_DISTANCE_MM,
    label_lesions,
    lesion_metrics,
    match_lesions,
    size_bin_names,
    summarise_lesions,
)

SHAPE = (24, 24, 16)


def _blank() -> np.ndarray:
    return np.zeros(SHAPE, dtype=np.uint8)


def _statuses(result) -> list[str]:
    return [les.status for les in result.lesions]


def test_two_lesions_touching_at_a_corner():
    # two 3x3x3 cubes meeting at one corner voxel pair: one lesion with full (26) connectivity,
    # two with face (6) connectivity; an exact prediction matches each with Dice 1, HD95 0
    gt = _blank()
    gt[2:5, 2:5, 2:5] = 1
    gt[5:8, 5:8, 5:8] = 1
    assert label_lesions(gt)[1] == 1 and label_lesions(gt, connectivity=1)[1] == 2
    full = lesion_metrics(gt, gt)
    assert _statuses(full) == ["TP"] and full.lesions[0].ref_volume_mm3 == 54.0
    faces = lesion_metrics(gt, gt, connectivity=1)
    assert _statuses(faces) == ["TP", "TP"]
    assert [les.dice for les in faces.lesions] == [1.0, 1.0] and [les.hd95 for les in faces.lesions] == [0.0, 0.0]


def test_two_touching_reference_lesions_merged_by_the_prediction():
    # face connectivity: reference lesions A (3x3x3 = 27) and B (3x3x3 = 27) touch at a corner,
    # the prediction covers both plus the two corner-adjacent bridging voxels, as one component
    # of 56 voxels. IoU(A, P) = 27/56 < 0.5, so neither is matched: 2 FN and 1 FP.
    gt = _blank()
    gt[2:5, 2:5, 2:5] = 1
    gt[5:8, 5:8, 5:8] = 1
    pred = gt.copy()
    pred[4, 5, 4] = pred[5, 5, 4] = 1  # bridge the corner through faces
    assert label_lesions(pred, connectivity=1)[1] == 1
    result = lesion_metrics(pred, gt, connectivity=1)
    assert (result.tp, result.fn, result.fp) == (0, 2, 1)


def test_split_prediction_matches_one_half_only():
    # reference 6x4x4 = 96 voxels; the prediction keeps x-slices 0-2 (48 voxels) and 4-5 (32 voxels)
    # with slice 3 missing: IoU = 48/96 = 0.5 (admissible, >=) and 32/96 = 1/3 (not).
    # -> TP with Dice 2*48/(96+48) = 2/3, the other half is a FP; no FN.
    gt = _blank()
    gt[4:10, 4:8, 4:8] = 1
    pred = gt.copy()
    pred[7] = 0
    result = lesion_metrics(pred, gt)
    assert (result.tp, result.fp, result.fn) == (1, 1, 0)
    tp = result.lesions[0]
    assert tp.iou == 0.5 and tp.dice == pytest.approx(2 / 3)
    assert result.lesions[1].pred_volume_mm3 == 32.0
    # BraTS case score: (2/3 + 0) / 2 lesions; HD95 (hd95_tp + 374) / 2
    assert result.lesion_dice == pytest.approx(1 / 3)
    assert result.lesion_hd95 == pytest.approx((tp.hd95 + BRATS_WORST_DISTANCE_MM) / 2)


def test_missed_small_lesion_and_recall_by_size():
    # big lesion 5x5x5 = 125 voxels at spacing 1x1x2 mm -> 250 mm^3 (bin 100-1000), found exactly;
    # small lesion 2x2x1 = 4 voxels -> 8 mm^3 (bin <10), missed.
    gt = _blank()
    gt[2:7, 2:7, 2:7] = 1
    gt[15:17, 15:17, 12] = 1
    pred = gt.copy()
    pred[15:17, 15:17, 12] = 0
    result = lesion_metrics(pred, gt, spacing=(1.0, 1.0, 2.0))
    assert _statuses(result) == ["TP", "FN"]
    assert [les.ref_volume_mm3 for les in result.lesions] == [250.0, 8.0]
    # lesion-wise Dice (1 + 0) / 2, HD95 (0 + 374) / 2
    assert result.lesion_dice == 0.5 and result.lesion_hd95 == BRATS_WORST_DISTANCE_MM / 2
    summary = summarise_lesions([result])
    bins = {b["bin"]: b for b in summary["recall_by_size"]}
    assert bins["<10"] == {"bin": "<10", "min_mm3": 0.0, "max_mm3": 10.0, "lesions": 1, "detected": 0, "recall": 0.0}
    assert bins["100-1000"]["recall"] == 1.0 and bins["1000-10000"]["recall"] is None
    # pooled counts: TP 1, FN 1, FP 0 -> precision 1, recall 1/2, F1 2/(2+1)
    assert (summary["precision"], summary["recall"]) == (1.0, 0.5)
    assert summary["f1"] == pytest.approx(2 / 3)


def test_spurious_lesion_on_an_empty_reference():
    # nothing to find, one 2x2x2 blob predicted: one FP; lesion-wise Dice 0, HD95 = worst distance
    pred = _blank()
    pred[3:5, 3:5, 3:5] = 1
    result = lesion_metrics(pred, _blank(), worst_distance=100.0)
    assert _statuses(result) == ["FP"] and result.lesions[0].volume_mm3 == 8.0
    assert (result.lesion_dice, result.lesion_hd95) == (0.0, 100.0)
    summary = summarise_lesions([result])
    assert (summary["tp"], summary["fp"], summary["fn"]) == (0, 1, 0)
    assert summary["precision"] == 0.0 and summary["recall"] is None and summary["f1"] == 0.0


def test_no_lesion_anywhere_is_a_perfect_case():
    result = lesion_metrics(_blank(), _blank())
    assert result.lesions == () and (result.lesion_dice, result.lesion_hd95) == (1.0, 0.0)
    summary = summarise_lesions([result])
    assert summary["f1"] is None and summary["lesion_dice"] == 1.0


def test_matching_is_one_to_one_and_maximises_iou():
    # greedy by row would give ref 0 -> pred 0 (0.6) and leave ref 1 unmatched; the optimum pairs
    # ref 0 -> pred 1 (0.55) and ref 1 -> pred 0 (0.58)
    iou = np.array([[0.6, 0.55], [0.58, 0.0]])
    assert match_lesions(iou, 0.5) == [(0, 1), (1, 0)]
    assert match_lesions(iou, 0.59) == [(0, 0)]
    assert match_lesions(np.zeros((0, 3)), 0.5) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"iou_threshold": 0.0}, r"iou_threshold must be in \(0, 1\], got 0.0", id="threshold"),
        pytest.param({"connectivity": 4}, r"connectivity must be in \[1, 3\] for 3D masks, got 4", id="connectivity"),
        pytest.param({"worst_distance": -1.0}, r"worst_distance must be a finite distance >= 0 mm, got -1.0", id="worst"),
        pytest.param({"convention": "itk"}, r"convention must be one of .* got 'itk'", id="convention"),
    ],
)
def test_bad_arguments_name_the_parameter(kwargs, message):
    gt = _blank()
    gt[1:3, 1:3, 1:3] = 1
    with pytest.raises(ValueError, match=message):
        lesion_metrics(gt, gt, **kwargs)


def test_size_bins_are_named_and_validated():
    assert size_bin_names() == ["<10", "10-100", "100-1000", "1000-10000", ">=10000"]
    assert size_bin_names([50]) == ["<50", ">=50"]
    with pytest.raises(ValueError, match=r"size_bins must be increasing .* got \[100.0, 10.0\]"):
        size_bin_names([100.0, 10.0])


def _random_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Several blobs of various sizes; the prediction shifts, erodes, drops and adds some."""
    rng = np.random.default_rng(seed)
    gt, pred = np.zeros((40, 36, 24), np.uint8), np.zeros((40, 36, 24), np.uint8)
    zz, yy, xx = np.mgrid[:40, :36, :24]
    for _ in range(7):
        c = rng.uniform([4, 4, 4], [36, 32, 20])
        r = rng.uniform(1.0, 5.0)
        blob = (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + ((xx - c[2]) * 1.3) ** 2 <= r * r
        gt[blob] = 1
        fate = rng.uniform()
        if fate < 0.7:
            shift = rng.integers(-1, 2, size=3)
            r2 = r * rng.uniform(0.7, 1.2)
            pred[(zz - c[0] - shift[0]) ** 2 + (yy - c[1] - shift[1]) ** 2 + ((xx - c[2] - shift[2]) * 1.3) ** 2
                 <= r2 * r2] = 1
    for _ in range(2):  # spurious blobs
        c = rng.uniform([4, 4, 4], [36, 32, 20])
        pred[(zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= 2.0] = 1
    return pred, gt


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_panoptica(seed):
    pytest.importorskip("panoptica")
    from panoptica import (
        ConnectedComponentsInstanceApproximator,
        InputType,
        MaxBipartiteMatching,
        Metric,
        Panoptica_Evaluator,
    )
    from panoptica.utils.citation_reminder import disable_citation_reminder

    disable_citation_reminder()
    spacing = (1.0, 1.5, 2.0)
    pred, gt = _random_case(seed)
    evaluator = Panoptica_Evaluator(
        expected_input=InputType.SEMANTIC, instance_approximator=ConnectedComponentsInstanceApproximator(),
        instance_matcher=MaxBipartiteMatching(), instance_metrics=[Metric.DSC, Metric.IOU, Metric.HD95],
        global_metrics=[Metric.DSC], log_times=False, verbose=False)
    ref = evaluator.evaluate(pred, gt, voxelspacing=spacing)["ungrouped"]
    ours = lesion_metrics(pred, gt, spacing, convention="medpy")  # panoptica's HD95: pooled, cross-eroded edges
    assert ours.tp > 0 and ours.fp > 0 and ours.fn > 0, "the random case must exercise every status"
    assert (ours.tp, ours.fp, ours.fn) == (ref.tp, ref.fp, ref.fn)
    assert summarise_lesions([ours])["f1"] == pytest.approx(ref.rq)
    theirs = ref.to_dict(output_individual_instance_metrics=True)["reference_instances"]
    matched_theirs = sorted((d["volume"], d["sq_dsc"], d["sq_hd95"]) for d in theirs if d["is_matched"])
    matched_ours = sorted((les.ref_volume_mm3, les.dice, les.hd95) for les in ours.lesions if les.status == "TP")
    assert len(matched_ours) == len(matched_theirs)
    for a, b in zip(matched_ours, matched_theirs, strict=True):
        assert a == pytest.approx(b, rel=1e-6)  # distances: float32 EDT in medseg
    assert sorted(les.ref_volume_mm3 for les in ours.lesions if les.status != "FP") == sorted(
        d["volume"] for d in theirs)
    assert math.isclose(np.mean([x[1] for x in matched_ours]), ref.sq_dsc)
