"""Hand-derived values, stated differences from MONAI, registry, validation and bundle configs."""

from __future__ import annotations

import monai.losses as ml
import pytest
import torch
from monai.bundle import ConfigParser

import medseg.losses as ours
from medseg.errors import InputError
from medseg.losses import LOSSES, create_loss


def _bin(vals):
    """(1, 2, N) one-hot-style tensor with channel 1 = vals, channel 0 = 1 - vals."""
    v = torch.tensor(vals, dtype=torch.float64).view(1, 1, -1)
    return torch.cat([1 - v, v], 1)


def test_dice_four_of_six_overlap():
    # GT 6 voxels, prediction 6 voxels, 4 shared: Dice = 2*4/(6+6) = 2/3, loss 1/3
    g = _bin([1, 1, 1, 1, 1, 1, 0, 0, 0, 0])
    p = _bin([1, 1, 1, 1, 0, 0, 1, 1, 0, 0])
    loss = ours.DiceLoss(include_background=False, smooth_nr=0, smooth_dr=0)(p, g)
    assert float(loss) == pytest.approx(1 / 3)


def test_dice_squared_vs_plain_denominator():
    # p = 0.5 on the 4 GT voxels: tp = 2; plain 1 - 4/(2+4) = 1/3; squared 1 - 4/(1+4) = 1/5
    g, p = _bin([1, 1, 1, 1]), _bin([0.5, 0.5, 0.5, 0.5])
    kw = dict(include_background=False, smooth_nr=0, smooth_dr=0)
    assert float(ours.DiceLoss(**kw)(p, g)) == pytest.approx(1 / 3)
    assert float(ours.DiceLoss(squared_pred=True, **kw)(p, g)) == pytest.approx(1 / 5)


def test_tversky_alpha_weighs_false_positives():
    # tp = 2, fp = 1, fn = 2; alpha=0.3 (FP), beta=0.7 (FN): TI = 2 / (2 + 0.3 + 1.4) = 2/3.7
    g, p = _bin([1, 1, 1, 1, 0]), _bin([1, 1, 0, 0, 1])
    kw = dict(include_background=False, alpha=0.3, beta=0.7, smooth_nr=0, smooth_dr=0)
    assert float(ours.TverskyLoss(**kw)(p, g)) == pytest.approx(1 - 2 / 3.7)
    # focal: (1 - TI)^(1/gamma), gamma = 2 -> sqrt
    assert float(ours.FocalTverskyLoss(gamma=2.0, **kw)(p, g)) == pytest.approx((1 - 2 / 3.7) ** 0.5)


def test_generalized_dice_simple_weights():
    # class 0 volume 3, class 1 volume 1; simple weights 1/3, 1 (normalised: 1/4, 3/4)
    # tp: class 0 = 2 (voxels 0,1), class 1 = 0; unions: class 0 = 3+3, class 1 = 1+1
    # GDL = 1 - 2*(1/4*2 + 3/4*0) / (1/4*6 + 3/4*2) = 1 - 1/3 = 2/3
    g = _bin([0, 0, 0, 1])  # channel 0 = [1,1,1,0], channel 1 = [0,0,0,1]
    p = torch.tensor([[[1, 1, 0, 1], [0, 0, 1, 0]]], dtype=torch.float64)
    loss = ours.GeneralizedDiceLoss(w_type="simple", smooth_nr=0, smooth_dr=0)(p, g)
    assert float(loss) == pytest.approx(2 / 3)


def test_boundary_loss_single_voxel_with_spacing():
    # one foreground voxel in a 1x5 line, spacing 2 mm: map [4, 2, -2, 2, 4]; predicting exactly
    # that voxel gives mean(p * d) = -2 / 5
    y = torch.tensor([[[[0, 0, 1, 0, 0]]]])
    p = torch.cat([1 - y, y], 1).double()
    loss = ours.BoundaryLoss(to_onehot_y=True, spacing=2.0)(p, y)
    assert float(loss) == pytest.approx(-2 / 5)


def test_difference_generalized_dice_no_class_present():
    # no foreground anywhere, background excluded: MONAI's weights all become 0 and its loss is 0
    # whatever the prediction; ours falls back to uniform weights and penalises false positives
    y = torch.zeros(1, 1, 4, 4, dtype=torch.int64)
    x = torch.zeros(1, 2, 4, 4)
    x[:, 1] = 5.0  # confident false positive everywhere
    kw = dict(to_onehot_y=True, softmax=True, include_background=False)
    assert float(ml.GeneralizedDiceLoss(**kw)(x, y)) == pytest.approx(0.0)
    assert float(ours.GeneralizedDiceLoss(**kw)(x, y)) == pytest.approx(1.0, abs=1e-4)


def test_difference_generalized_dice_weight_normalisation():
    # raw 1/(sum g)^2 weights (~1e-8 here) let MONAI's 1e-5 smoothing dominate; normalised weights do not
    y = torch.zeros(1, 1, 40, 40, 40, dtype=torch.int64)
    y[..., :20, :, :] = 1
    x = torch.zeros(1, 2, 40, 40, 40)
    x[:, 1] = 4 * (y[:, 0].float() - 0.5) * 0  # uninformative prediction: p = 0.5 everywhere
    smooth = dict(smooth_nr=0, smooth_dr=0)
    exact = ours.GeneralizedDiceLoss(to_onehot_y=True, softmax=True, **smooth)(x, y)
    ours_v = ours.GeneralizedDiceLoss(to_onehot_y=True, softmax=True)(x, y)
    monai_v = ml.GeneralizedDiceLoss(to_onehot_y=True, softmax=True)(x, y)
    assert float(ours_v) == pytest.approx(float(exact), abs=1e-6)
    assert abs(float(monai_v) - float(exact)) > 1e-3


def test_difference_generalized_dice_sum_is_classes_times_monai():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 3, 5, 5, generator=g), torch.randint(0, 3, (2, 1, 5, 5), generator=g)
    y.view(2, -1)[:, :3] = torch.arange(3)
    a = ours.GeneralizedDiceLoss(to_onehot_y=True, softmax=True, normalize_weights=False, reduction="sum")(x, y)
    b = ml.GeneralizedDiceLoss(to_onehot_y=True, softmax=True, reduction="sum")(x, y)
    torch.testing.assert_close(a, 3 * b, atol=1e-5, rtol=0)


def test_difference_boundary_map_vs_monai():
    # at unit spacing our map equals MONAI's outside the object and MONAI's minus 1 inside
    y = torch.zeros(1, 1, 9, 9, dtype=torch.int64)
    y[..., 2:6, 3:7] = 1
    onehot = torch.nn.functional.one_hot(y[:, 0], 2).movedim(-1, 1).float()
    theirs = ml.BoundaryLoss().compute_distance_map(onehot)
    from medseg.transforms import signed_distance_map

    mine = torch.from_numpy(signed_distance_map(y[0], 2)).unsqueeze(0)
    inside = onehot > 0
    torch.testing.assert_close(mine[~inside], theirs[~inside])
    torch.testing.assert_close(mine[inside], theirs[inside] - 1)


def test_difference_dice_ce_sigmoid_uses_bce():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 3, 4, 4, generator=g), torch.randint(0, 3, (2, 1, 4, 4), generator=g)
    kw = dict(to_onehot_y=True, sigmoid=True, lambda_dice=0.0)
    onehot = torch.nn.functional.one_hot(y[:, 0], 3).movedim(-1, 1).float()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(x, onehot)
    torch.testing.assert_close(ours.DiceCELoss(**kw)(x, y), bce)
    ce = torch.nn.functional.cross_entropy(x, y[:, 0])
    torch.testing.assert_close(ml.DiceCELoss(**kw)(x, y), ce)


def test_difference_dice_focal_softmax_uses_softmax_focal():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 3, 4, 4, generator=g), torch.randint(0, 3, (2, 1, 4, 4), generator=g)
    ref = ml.FocalLoss(to_onehot_y=True, use_softmax=True, gamma=2.0)(x, y)
    mine = ours.DiceFocalLoss(to_onehot_y=True, softmax=True, lambda_dice=0.0)(x, y)
    torch.testing.assert_close(mine, ref, atol=1e-6, rtol=0)
    assert abs(float(ml.DiceFocalLoss(to_onehot_y=True, softmax=True, lambda_dice=0.0)(x, y)) - float(ref)) > 1e-3


REQUIRED = ["dice", "generalized_dice", "tversky", "focal_tversky", "boundary", "boundary_dice", "dice_ce", "dice_focal"]


def test_registry_names_and_engine_defaults():
    assert set(REQUIRED) <= set(LOSSES.names)
    loss = create_loss("dice")
    assert loss.to_onehot_y and loss.softmax
    assert create_loss("dice", sigmoid=True).softmax is False
    boundary = create_loss("boundary")
    assert boundary.uses_distance_map and set(boundary.weights) == {"region", "boundary"}
    assert not create_loss("dice_ce").uses_distance_map


@pytest.mark.parametrize(
    "name,kwargs,match",
    [
        ("nope", {}, r"unknown loss 'nope'; valid names: dice, "),
        ("dice", {"alpah": 1}, r"loss 'dice' does not accept argument\(s\) alpah; accepted: include_background"),
        ("tversky", {"alpha": -1}, r"loss 'tversky': alpha must be in \[0, inf\), got -1"),
        ("generalized_dice", {"w_type": "cube"}, r"w_type must be one of square, simple, uniform; got 'cube'"),
        ("dice", {"reduction": "avg"}, r"reduction must be one of none, mean, sum; got 'avg'"),
    ],
)
def test_create_loss_errors_name_the_problem(name, kwargs, match):
    with pytest.raises(InputError, match=match):
        create_loss(name, **kwargs)


def test_init_validation_messages():
    with pytest.raises(ValueError, match=r"gamma must be in \(0, inf\), got 0"):
        ours.FocalTverskyLoss(gamma=0)
    with pytest.raises(ValueError, match="sigmoid, softmax and other_act are mutually exclusive"):
        ours.DiceLoss(sigmoid=True, softmax=True)
    with pytest.raises(ValueError, match=r"kernel_size must be an odd integer >= 3, got 4"):
        ours.BoundaryDiceLoss(kernel_size=4)


def test_forward_shape_errors_have_hints():
    with pytest.raises(ValueError, match=r"set to_onehot_y=True"):
        ours.DiceLoss()(torch.randn(1, 3, 4, 4), torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match=r"label indices must be in \[0, 2\]"):
        ours.DiceLoss(to_onehot_y=True)(torch.randn(1, 3, 4, 4), torch.full((1, 1, 4, 4), 3))


@pytest.mark.parametrize("cls", [c for c in ours.__all__ if c.endswith("Loss") and c not in ("WeightedSumLoss", "DeepSupervisionLoss")])
def test_every_class_builds_from_a_bundle_config(cls):
    loss = ConfigParser({"loss": {"_target_": f"medseg.losses.{cls}", "softmax": True}}).get_parsed_content("loss")
    assert type(loss).__name__ == cls


def test_wrappers_build_from_a_bundle_config():
    cfg = {
        "region": {"_target_": "medseg.losses.GeneralizedDiceLoss", "softmax": True, "to_onehot_y": True},
        "boundary": {"_target_": "medseg.losses.BoundaryLoss", "softmax": True, "to_onehot_y": True},
        "sum": {"_target_": "medseg.losses.WeightedSumLoss", "losses": {"region": "@region", "boundary": "@boundary"},
                "weights": {"region": 1.0, "boundary": 0.01}},
        "ds": {"_target_": "medseg.losses.DeepSupervisionLoss", "loss": "@sum", "weights": [1, 0.5]},
    }
    ds = ConfigParser(cfg).get_parsed_content("ds")
    assert isinstance(ds, ours.DeepSupervisionLoss) and ds.uses_distance_map
    y = torch.randint(0, 2, (1, 1, 8, 8))
    value = ds([torch.randn(1, 2, 8, 8), torch.randn(1, 2, 4, 4)], y)
    assert torch.isfinite(value)


def test_deep_supervision_max_pool_keeps_small_structures():
    y = torch.zeros(1, 1, 8, 8, dtype=torch.int64)
    y[0, 0, 3, 3] = 1  # one voxel: nearest downsampling by 4 loses it, max-pooling keeps it
    from medseg.losses.deep_supervision import downsample_target

    assert downsample_target(y, (2, 2), "nearest").sum() == 0
    assert downsample_target(y, (2, 2), "max_pool", num_classes=2)[:, 1].sum() == 1
