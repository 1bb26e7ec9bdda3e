"""CrossEntropyLoss ('ce') against torch's cross-entropy and the CE part of MONAI's DiceCELoss."""

from __future__ import annotations

import itertools
import math

import monai.losses as ml
import pytest
import torch
import torch.nn.functional as F

import medseg.losses as ours
from medseg.errors import InputError
from medseg.losses import create_loss

C = 3
W = torch.tensor([0.5, 1.0, 2.0])


def _data(ndim: int = 3, seed: int = 0, b: int = 2):
    g = torch.Generator().manual_seed(seed)
    spatial = (6, 5) if ndim == 2 else (5, 4, 3)
    x = torch.randn(b, C, *spatial, generator=g)
    y = torch.randint(0, C, (b, 1, *spatial), generator=g)
    return x, y


def _onehot(y: torch.Tensor) -> torch.Tensor:
    return F.one_hot(y[:, 0], C).movedim(-1, 1).float()


GRID = list(itertools.product((2, 3), ("index", "onehot"), (False, True), (0.0, 0.1)))
IDS = [f"{d}d-{t}-{'w' if w else 'now'}-ls{s}" for d, t, w, s in GRID]


@pytest.mark.parametrize("ndim,target,weighted,smoothing", GRID, ids=IDS)
def test_mean_equals_torch_cross_entropy(ndim, target, weighted, smoothing):
    x, y = _data(ndim)
    w = W if weighted else None
    ref_target = y[:, 0] if target == "index" else _onehot(y)
    ref = F.cross_entropy(x, ref_target, weight=w, label_smoothing=smoothing)
    t = y if target == "index" else _onehot(y)
    loss = ours.CrossEntropyLoss(to_onehot_y=target == "index", softmax=True, weight=w, label_smoothing=smoothing)
    torch.testing.assert_close(loss(x, t), ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("weighted,smoothing", [(False, 0.0), (True, 0.0), (True, 0.2)], ids=["plain", "w", "w-ls"])
def test_equals_monai_dice_ce_cross_entropy_part(weighted, smoothing):
    x, y = _data()
    kw = dict(to_onehot_y=True, softmax=True, label_smoothing=smoothing, **({"weight": W} if weighted else {}))
    theirs = ml.DiceCELoss(lambda_dice=0.0, **kw)(x, y)
    torch.testing.assert_close(ours.CrossEntropyLoss(**kw)(x, y), theirs, atol=1e-6, rtol=0)
    # and our DiceCELoss shares the same cross-entropy
    torch.testing.assert_close(ours.DiceCELoss(lambda_dice=0.0, **kw)(x, y), theirs, atol=1e-6, rtol=0)


def test_single_channel_is_binary_cross_entropy_as_monai():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(2, 1, 5, 6, generator=g), (torch.rand(2, 1, 5, 6, generator=g) > 0.5).float()
    theirs = ml.DiceCELoss(sigmoid=True, lambda_dice=0.0, weight=torch.tensor([3.0]))(x, y)
    torch.testing.assert_close(ours.CrossEntropyLoss(sigmoid=True, weight=[3.0])(x, y), theirs, atol=1e-6, rtol=0)


def test_sigmoid_is_per_channel_bce_with_pos_weight():
    x, y = _data(2)
    ref = F.binary_cross_entropy_with_logits(x, _onehot(y), pos_weight=W.reshape(-1, 1, 1))
    loss = ours.CrossEntropyLoss(to_onehot_y=True, sigmoid=True, weight=W)
    torch.testing.assert_close(loss(x, y), ref, atol=1e-6, rtol=0)
    # "none": the voxel mean of each channel's BCE
    per = F.binary_cross_entropy_with_logits(x, _onehot(y), pos_weight=W.reshape(-1, 1, 1), reduction="none")
    none = ours.CrossEntropyLoss(to_onehot_y=True, sigmoid=True, weight=W, reduction="none")(x, y)
    torch.testing.assert_close(none, per.flatten(2).mean(-1), atol=1e-6, rtol=0)


def test_hand_checked_value():
    # equal logits for 2 classes: p = 1/2 for every voxel, CE = ln 2 whatever the labels;
    # logits (ln 3, 0) on a voxel of class 0: p0 = 3/4, CE = ln(4/3)
    y = torch.tensor([[[0, 1, 1, 0]]])
    assert float(ours.CrossEntropyLoss(to_onehot_y=True)(torch.zeros(1, 2, 4), y)) == pytest.approx(math.log(2))
    x = torch.tensor([[[math.log(3.0)], [0.0]]])
    assert float(ours.CrossEntropyLoss(to_onehot_y=True)(x, torch.zeros(1, 1, 1))) == pytest.approx(math.log(4 / 3))


def test_reduction_none_rows_are_the_samples_cross_entropy():
    x, y = _data(b=3)
    none = ours.CrossEntropyLoss(to_onehot_y=True, reduction="none")(x, y)
    assert none.shape == (3, C)
    per_sample = torch.stack([F.cross_entropy(x[i : i + 1], y[i : i + 1, 0]) for i in range(3)])
    torch.testing.assert_close(none.mean(1), per_sample, atol=1e-6, rtol=0)
    # "sum" is the sum of the (B, C') tensor: B * C' times the mean
    total = ours.CrossEntropyLoss(to_onehot_y=True, reduction="sum")(x, y)
    torch.testing.assert_close(total, 3 * C * F.cross_entropy(x, y[:, 0]), atol=1e-5, rtol=0)
    pooled = ours.CrossEntropyLoss(to_onehot_y=True, reduction="none", batch=True)(x, y)
    torch.testing.assert_close(pooled, none.mean(0, keepdim=True), atol=1e-6, rtol=0)


@pytest.mark.parametrize("target", ["index", "onehot"])
def test_without_background_voxels_of_class_0_contribute_nothing(target):
    # the voxel terms of background-labelled voxels are dropped; the mean still divides by all voxels
    x, y = _data()
    per_voxel = F.cross_entropy(x, y[:, 0], reduction="none")
    expected = per_voxel[y[:, 0] != 0].sum() / per_voxel.numel()
    t = y if target == "index" else _onehot(y)
    loss = ours.CrossEntropyLoss(to_onehot_y=target == "index", include_background=False)
    torch.testing.assert_close(loss(x, t), expected, atol=1e-6, rtol=0)
    none = ours.CrossEntropyLoss(to_onehot_y=target == "index", include_background=False, reduction="none")(x, t)
    assert none.shape == (2, C - 1)


def test_engine_call_with_float_label_maps():
    # the training engine calls loss(logits (B, C, *spatial), label (B, 1, *spatial)) with float labels
    x, y = _data()
    loss = create_loss("ce")
    assert isinstance(loss, ours.CrossEntropyLoss) and loss.to_onehot_y and loss.softmax
    torch.testing.assert_close(loss(x, y.float()), F.cross_entropy(x, y[:, 0]), atol=1e-6, rtol=0)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"other_act must be None for CrossEntropyLoss \(it takes logits\)"):
        ours.CrossEntropyLoss(other_act=torch.tanh)
    with pytest.raises(ValueError, match=r"CrossEntropyLoss is not a ratio loss and takes no smooth_nr/smooth_dr"):
        ours.CrossEntropyLoss(smooth_nr=0.0)
    with pytest.raises(InputError, match=r"loss 'ce' does not accept argument\(s\) smooth_dr; accepted: include_bac"):
        create_loss("ce", smooth_dr=1.0)
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\], got 2"):
        ours.CrossEntropyLoss(label_smoothing=2)
    x, y = _data()
    with pytest.raises(ValueError, match=r"weight has 2 values but the input has 3 channels"):
        ours.CrossEntropyLoss(to_onehot_y=True, weight=[1.0, 2.0])(x, y)
    with pytest.raises(ValueError, match=r"set to_onehot_y=True"):
        ours.CrossEntropyLoss()(x, y)
