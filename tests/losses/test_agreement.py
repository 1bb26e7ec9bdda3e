"""Our losses equal MONAI's wherever the definitions coincide (to 1e-5) over a configuration grid."""

from __future__ import annotations

import itertools

import monai.losses as ml
import pytest
import torch

import medseg.losses as ours

C = 3


def _data(ndim: int, onehot: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    spatial = (6, 5) if ndim == 2 else (5, 4, 3)
    x = torch.randn(2, C, *spatial, generator=g)
    lab = torch.randint(0, C, (2, 1, *spatial), generator=g)
    lab.view(2, -1)[:, :C] = torch.arange(C)  # every class present in every sample
    if onehot:
        lab = torch.nn.functional.one_hot(lab[:, 0], C).movedim(-1, 1).float()
    return x, lab


GRID = list(itertools.product((2, 3), ("sigmoid", "softmax"), (True, False), (True, False), (False, True)))
IDS = [f"{d}d-{a}-bg{int(b)}-batch{int(bt)}-{'onehot' if oh else 'index'}" for d, a, b, bt, oh in GRID]


def _kw(act: str, bg: bool, batch: bool, onehot: bool) -> dict:
    return dict(include_background=bg, to_onehot_y=not onehot, batch=batch, **{act: True})


@pytest.mark.parametrize("squared", [False, True], ids=["plain", "squared"])
@pytest.mark.parametrize("ndim,act,bg,batch,onehot", GRID, ids=IDS)
def test_dice_matches_monai(ndim, act, bg, batch, onehot, squared):
    x, y = _data(ndim, onehot)
    kw = _kw(act, bg, batch, onehot)
    a = ours.DiceLoss(squared_pred=squared, reduction="none", **kw)(x, y)
    b = ml.DiceLoss(squared_pred=squared, reduction="none", **kw)(x, y)
    torch.testing.assert_close(a, b.reshape(a.shape), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        ours.DiceLoss(squared_pred=squared, **kw)(x, y), ml.DiceLoss(squared_pred=squared, **kw)(x, y), atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("w_type", ["square", "simple", "uniform"])
@pytest.mark.parametrize("ndim,act,bg,batch,onehot", GRID, ids=IDS)
def test_generalized_dice_matches_monai(ndim, act, bg, batch, onehot, w_type):
    x, y = _data(ndim, onehot)
    kw = _kw(act, bg, batch, onehot)
    a = ours.GeneralizedDiceLoss(w_type=w_type, normalize_weights=False, **kw)(x, y)
    b = ml.GeneralizedDiceLoss(w_type=w_type, **kw)(x, y)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    # "none": the mean over classes of our (B, C') shares is MONAI's per-sample value
    a_none = ours.GeneralizedDiceLoss(w_type=w_type, normalize_weights=False, reduction="none", **kw)(x, y)
    b_none = ml.GeneralizedDiceLoss(w_type=w_type, reduction="none", **kw)(x, y)
    torch.testing.assert_close(a_none.mean(1), b_none.reshape(-1), atol=1e-5, rtol=0)


@pytest.mark.parametrize("ndim,act,bg,batch,onehot", GRID, ids=IDS)
def test_tversky_and_focal_tversky_at_gamma_1_match_monai(ndim, act, bg, batch, onehot):
    x, y = _data(ndim, onehot)
    kw = _kw(act, bg, batch, onehot)
    ref = ml.TverskyLoss(alpha=0.3, beta=0.7, reduction="none", **kw)(x, y)
    a = ours.TverskyLoss(alpha=0.3, beta=0.7, reduction="none", **kw)(x, y)
    f = ours.FocalTverskyLoss(alpha=0.3, beta=0.7, gamma=1.0, reduction="none", **kw)(x, y)
    torch.testing.assert_close(a, ref.reshape(a.shape), atol=1e-5, rtol=0)
    torch.testing.assert_close(f, ref.reshape(a.shape), atol=1e-5, rtol=0)


SOFTMAX_GRID = [g for g in GRID if g[1] == "softmax"]


@pytest.mark.parametrize("squared", [False, True], ids=["plain", "squared"])
@pytest.mark.parametrize("ndim,act,bg,batch,onehot", SOFTMAX_GRID, ids=[i for g, i in zip(GRID, IDS, strict=True) if g[1] == "softmax"])
def test_dice_ce_matches_monai(ndim, act, bg, batch, onehot, squared):
    x, y = _data(ndim, onehot)
    kw = _kw(act, bg, batch, onehot)
    w = torch.tensor([0.5, 1.0, 2.0])
    for extra in ({}, {"weight": w, "lambda_ce": 0.7, "label_smoothing": 0.1}):
        a = ours.DiceCELoss(squared_pred=squared, **kw, **extra)(x, y)
        b = ml.DiceCELoss(squared_pred=squared, **kw, **extra)(x, y)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_dice_ce_single_channel_bce_matches_monai():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(2, 1, 5, 6, generator=g), (torch.rand(2, 1, 5, 6, generator=g) > 0.5).float()
    torch.testing.assert_close(ours.DiceCELoss(sigmoid=True)(x, y), ml.DiceCELoss(sigmoid=True)(x, y), atol=1e-5, rtol=0)


SIGMOID_GRID = [g for g in GRID if g[1] == "sigmoid"]


@pytest.mark.parametrize("ndim,act,bg,batch,onehot", SIGMOID_GRID, ids=[i for g, i in zip(GRID, IDS, strict=True) if g[1] == "sigmoid"])
def test_dice_focal_sigmoid_matches_monai(ndim, act, bg, batch, onehot):
    x, y = _data(ndim, onehot)
    kw = _kw(act, bg, batch, onehot)
    for extra in ({}, {"gamma": 1.5, "alpha": 0.25, "lambda_focal": 0.5}):
        a = ours.DiceFocalLoss(**kw, **extra)(x, y)
        b = ml.DiceFocalLoss(**kw, **extra)(x, y)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", ["exp", "same", "two"])
@pytest.mark.parametrize("ndim", [2, 3])
def test_deep_supervision_matches_monai(mode, ndim):
    g = torch.Generator().manual_seed(2)
    full = (8, 8) if ndim == 2 else (8, 8, 4)
    sizes = [full, tuple(s // 2 for s in full), tuple(max(s // 4, 1) for s in full)]
    outs = [torch.randn(2, C, *s, generator=g) for s in sizes]
    y = torch.randint(0, C, (2, 1, *full), generator=g).float()
    a = ours.DeepSupervisionLoss(ours.DiceCELoss(to_onehot_y=True, softmax=True), weight_mode=mode, normalize_weights=False)
    b = ml.DeepSupervisionLoss(ml.DiceCELoss(to_onehot_y=True, softmax=True), weight_mode=mode)
    torch.testing.assert_close(a(outs, y), b(outs, y), atol=1e-5, rtol=0)
    # normalised weights (our default) divide by their sum
    w = a.get_weights(3)
    an = ours.DeepSupervisionLoss(ours.DiceCELoss(to_onehot_y=True, softmax=True), weight_mode=mode)
    torch.testing.assert_close(an(outs, y), b(outs, y) / sum(w), atol=1e-5, rtol=0)
