"""MONAI conventions at the edges (one class channel, "sum"/"none" of DiceFocalLoss) and constructor signatures."""

from __future__ import annotations

import inspect

import monai.losses as ml
import pytest
import torch

import medseg.losses as ours


def _binary(channels: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, channels, 5, 6, generator=g)
    y = torch.randint(0, 2, (2, 1, 5, 6), generator=g)
    return x, y


@pytest.mark.parametrize("weight", [2.0, [3.0]], ids=["scalar", "one_value"])
@pytest.mark.parametrize("case", ["one_channel_sigmoid", "two_channels_no_background"])
def test_dice_weight_is_skipped_for_a_single_class_channel_as_monai(case, weight):
    x, y = _binary(1 if case == "one_channel_sigmoid" else 2)
    kw = dict(sigmoid=True) if case == "one_channel_sigmoid" else dict(softmax=True, to_onehot_y=True,
                                                                        include_background=False)
    target = y.float() if case == "one_channel_sigmoid" else y
    mine = ours.DiceLoss(weight=weight, **kw)(x, target)
    torch.testing.assert_close(mine, ml.DiceLoss(weight=weight, **kw)(x, target), atol=1e-6, rtol=0)
    torch.testing.assert_close(mine, ours.DiceLoss(**kw)(x, target), atol=0, rtol=0)  # weight not applied


def test_dice_weight_still_applies_with_several_class_channels():
    # 2 kept channels: weight (1, 3) multiplies the per-class terms
    x, y = _binary(2)
    plain = ours.DiceLoss(softmax=True, to_onehot_y=True, reduction="none")(x, y)
    weighted = ours.DiceLoss(softmax=True, to_onehot_y=True, reduction="none", weight=[1.0, 3.0])(x, y)
    torch.testing.assert_close(weighted, plain * torch.tensor([1.0, 3.0]))
    with pytest.raises(ValueError, match=r"weight has 3 values but the loss has 2 classes"):
        ours.DiceLoss(softmax=True, to_onehot_y=True, weight=[1.0, 2.0, 3.0])(x, y)


def test_dice_ce_binary_without_background_matches_monai():
    # Dice keeps one channel (its weight [0.8] is skipped), CE uses both class weights
    x, y = _binary(2, seed=4)
    kw = dict(softmax=True, to_onehot_y=True, include_background=False, weight=torch.tensor([0.2, 0.8]))
    torch.testing.assert_close(ours.DiceCELoss(**kw)(x, y), ml.DiceCELoss(**kw)(x, y), atol=1e-6, rtol=0)


@pytest.mark.parametrize("bg", [True, False], ids=["bg", "nobg"])
def test_dice_focal_sum_and_none_follow_monai(bg):
    # MONAI's "sum" averages the focal loss over space, then sums over samples and classes; its
    # "none" keeps per-voxel focal terms (B, C', *spatial), whose spatial mean is our (B, C')
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(2, 3, 5, 4, generator=g), torch.randint(0, 3, (2, 1, 5, 4), generator=g)
    kw = dict(to_onehot_y=True, sigmoid=True, include_background=bg, gamma=1.5, alpha=0.25,
              weight=[1.0, 2.0, 3.0][0 if bg else 1 :])
    total = ours.DiceFocalLoss(reduction="sum", **kw)(x, y)
    torch.testing.assert_close(total, ml.DiceFocalLoss(reduction="sum", **kw)(x, y), atol=1e-5, rtol=0)
    none = ours.DiceFocalLoss(reduction="none", **kw)(x, y)
    theirs = ml.DiceFocalLoss(reduction="none", **kw)(x, y)
    assert theirs.shape == (2, none.shape[1], 5, 4)
    torch.testing.assert_close(none, theirs.flatten(2).mean(-1), atol=1e-5, rtol=0)


def test_constructor_signatures_list_inherited_arguments():
    # subclasses declare their own arguments only; the signature shows what the constructor accepts
    dice = list(inspect.signature(ours.DiceLoss).parameters)
    assert dice[:3] == ["include_background", "to_onehot_y", "sigmoid"]
    assert {"smooth_nr", "smooth_dr", "squared_pred", "jaccard", "weight", "batch"} <= set(dice)
    boundary = inspect.signature(ours.BoundaryLoss).parameters
    assert boundary["include_background"].default is False and "smooth_nr" not in boundary
    assert inspect.signature(ours.FocalTverskyLoss).parameters["alpha"].default == 0.3
    assert "lambda_ce" in inspect.signature(ours.DiceCELoss).parameters
    # an instance keeps the signature of its call, not of the constructor
    assert "include_background" not in inspect.signature(ours.DiceLoss()).parameters


def test_losses_without_a_ratio_refuse_smoothing():
    with pytest.raises(ValueError, match=r"BoundaryLoss is not a ratio loss and takes no smooth_nr/smooth_dr"):
        ours.BoundaryLoss(smooth_dr=0.1)
    with pytest.raises(ValueError, match=r"smooth_nr must be in \[0, inf\), got -1"):
        ours.TverskyLoss(smooth_nr=-1)
