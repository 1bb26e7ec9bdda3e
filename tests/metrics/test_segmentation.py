"""Hand-checkable values, input layouts and argument validation of medseg.metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medseg.metrics import binary_metrics, check_spacing, compute_metrics


def _line(n, lo, hi):
    m = np.zeros(n, bool)
    m[lo:hi] = True
    return m


@pytest.mark.parametrize(
    ("pred", "gt", "dice", "iou"),
    [
        # 4 of 6 voxels overlap: pred 4 voxels, gt 6 voxels -> Dice 2*4/10 = 0.8, IoU 4/6
        pytest.param(_line(10, 2, 6), _line(10, 1, 7), 0.8, 4 / 6, id="nested"),
        # 2 overlap of 4 and 4 -> Dice 2*2/8 = 0.5, IoU 2/6
        pytest.param(_line(10, 0, 4), _line(10, 2, 6), 0.5, 2 / 6, id="half"),
        pytest.param(_line(10, 0, 3), _line(10, 5, 8), 0.0, 0.0, id="disjoint"),
    ],
)
def test_dice_iou_by_hand(pred, gt, dice, iou):
    m = binary_metrics(pred, gt)
    assert m.dice == pytest.approx(dice)
    assert m.iou == pytest.approx(iou)


def test_cube_shifted_one_voxel_diagonally_is_sqrt3_at_unit_spacing():
    gt = np.zeros((12, 12, 12), bool)
    gt[3:8, 3:8, 3:8] = True
    pred = np.roll(gt, (1, 1, 1), axis=(0, 1, 2))
    # the far corner voxel of each cube is sqrt(1+1+1) from the other cube's nearest edge voxel
    assert binary_metrics(pred, gt).hd == pytest.approx(math.sqrt(3))


def test_spacing_scales_distances():
    gt = np.zeros((12, 12, 12), bool)
    gt[3:8, 3:8, 3:8] = True
    pred = np.roll(gt, 2, axis=2)
    # shift of 2 voxels along an axis of 2.5 mm -> 5 mm
    assert binary_metrics(pred, gt, (1.0, 1.0, 2.5)).hd == pytest.approx(5.0)


def test_torch_tensors_accepted():
    gt = torch.zeros(8, 8, 8)
    gt[2:5, 2:5, 2:5] = 1
    assert binary_metrics(gt, gt).dice == 1.0


def test_label_map_default_labels_are_present_nonzero_labels():
    gt = np.zeros((6, 6, 6), np.int16)
    gt[1:3, 1:3, 1:3] = 4
    pred = np.zeros_like(gt)
    pred[3:5, 3:5, 3:5] = 2
    assert sorted(compute_metrics(pred, gt)) == [2, 4]


def test_one_hot_labels_must_index_channels():
    x = np.zeros((3, 4, 4, 4))
    with pytest.raises(ValueError, match=r"labels must index the 3 one-hot channels, got \[5\]"):
        compute_metrics(x, x, labels=[1, 5], one_hot=True)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"convention": "itk"}, r"convention must be one of .* got 'itk'", id="convention"),
        pytest.param({"percentile": 101}, r"percentile must be in \[0, 100\], got 101", id="percentile"),
        pytest.param({"nsd_tolerance": -1}, r"nsd_tolerance must be .* got -1", id="tolerance"),
        pytest.param({"spacing": (1.0, 0.0, 1.0)}, r"spacing values must be finite and > 0", id="spacing_zero"),
        pytest.param({"spacing": (1.0, 1.0)}, r"spacing must have one value per spatial axis \(3\)", id="spacing_len"),
    ],
)
def test_bad_arguments_name_parameter_and_value(kwargs, match):
    m = np.ones((4, 4, 4), bool)
    with pytest.raises(ValueError, match=match):
        binary_metrics(m, m, **kwargs)


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"same shape, got \(4, 4\) and \(4, 5\)"):
        compute_metrics(np.zeros((4, 4)), np.zeros((4, 5)))


def test_check_spacing_isotropic_number():
    assert check_spacing(0.5, 3) == (0.5, 0.5, 0.5)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    convention=st.sampled_from(["monai", "medpy", "surface_distance"]),
)
def test_perfect_prediction_is_the_optimum(seed, convention):
    rng = np.random.default_rng(seed)
    gt = rng.random((9, 10, 8)) > 0.6
    noisy = gt ^ (rng.random(gt.shape) > 0.9)
    perfect = binary_metrics(gt, gt, (1.0, 1.5, 2.0), convention=convention)
    other = binary_metrics(noisy, gt, (1.0, 1.5, 2.0), convention=convention)
    assert perfect.dice == 1.0 and perfect.hd95 == 0.0 and perfect.nsd == 1.0
    assert other.dice <= perfect.dice and other.hd >= perfect.hd and other.assd >= perfect.assd
    assert other.hd95 <= other.hd + 1e-9 and other.nsd <= 1.0


@pytest.mark.parametrize("density", [0.002, 0.5], ids=["sparse_kdtree", "dense_edt"])
def test_nearest_distances_equal_scipy_edt(density):
    from scipy.ndimage import distance_transform_edt

    from medseg.metrics.surface import nearest_distances

    rng = np.random.default_rng(3)
    source = rng.random((20, 18, 16)) < density
    target = rng.random((20, 18, 16)) < density
    target[0, 0, 0] = True
    spacing = (0.7, 1.1, 2.3)
    expected = distance_transform_edt(~target, sampling=spacing)[source]
    np.testing.assert_allclose(nearest_distances(source, target, spacing), expected, rtol=1e-6, atol=1e-5)
