"""Properties every loss must have: gradients, minimum at the truth, monotonicity, precision, shapes."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import medseg.errors as ml_errors
import medseg.losses as ml
from medseg.losses import LOSSES, create_loss
from medseg.transforms import signed_distance_map

C = 3
NAMES = [n for n in LOSSES.names if n not in ("weighted_sum", "deep_supervision")] + ["weighted_sum", "deep_supervision"]


def _make(name: str, **kw) -> torch.nn.Module:
    if name == "weighted_sum":
        return create_loss(name, terms={"dice": 1.0, "boundary_only": 0.1}, **kw)
    return create_loss(name, **kw)


def _labels(shape=(2, 1, 6, 5), seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    y = torch.zeros(shape, dtype=torch.int64)
    y[..., 1:4, 1:4] = 1
    y[..., 2:3, 2:4] = 2
    return y if seed == 0 else torch.randint(0, C, shape, generator=g)


def _call(loss, x, y):
    if getattr(loss, "uses_distance_map", False):
        dm = torch.stack([torch.from_numpy(signed_distance_map(t, C)) for t in y]).to(x.dtype)
        return loss(x, y, distance_map=dm)
    return loss(x, y)


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_float64(name):
    loss = _make(name)
    y = _labels((1, 1, 4, 3))
    x = torch.randn(1, C, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: _call(loss, a, y), (x,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("cls", [ml.DiceLoss, ml.GeneralizedDiceLoss, ml.TverskyLoss, ml.FocalTverskyLoss, ml.DiceCELoss])
def test_gradcheck_sigmoid_onehot(cls):
    y = torch.nn.functional.one_hot(_labels((1, 1, 4, 3))[:, 0], C).movedim(-1, 1).double()
    x = torch.randn(1, C, 4, 3, dtype=torch.float64, requires_grad=True)
    loss = cls(sigmoid=True)
    assert torch.autograd.gradcheck(lambda a: loss(a, y), (x,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_perfect_prediction_is_the_minimum(name):
    loss = _make(name)
    y = _labels()
    perfect = 30.0 * torch.nn.functional.one_hot(y[:, 0], C).movedim(-1, 1).float()
    best = float(_call(loss, perfect, y))
    g = torch.Generator().manual_seed(3)
    for _ in range(5):
        noisy = perfect + 20.0 * torch.randn(perfect.shape, generator=g)
        assert float(_call(loss, noisy, y)) >= best - 1e-6


@settings(max_examples=8, deadline=None)
@given(st.integers(0, 7), st.integers(1, 8))
def test_loss_increases_as_overlap_decreases(start, removed):
    # prediction = ground truth minus `removed` foreground voxels: less overlap, larger loss
    y = torch.zeros(1, 1, 4, 4, dtype=torch.int64)
    y.view(-1)[start : start + 8] = 1
    onehot = torch.nn.functional.one_hot(y[:, 0], 2).movedim(-1, 1).float()
    for loss in (ml.DiceLoss(), ml.GeneralizedDiceLoss(), ml.TverskyLoss(alpha=0.3, beta=0.7), ml.FocalTverskyLoss()):
        values = []
        for r in range(removed + 1):
            pred = onehot.clone()
            fg = pred[0, 1].view(-1)
            idx = (fg > 0).nonzero().flatten()[:r]
            fg[idx] = 0.0
            pred[0, 0].view(-1)[idx] = 1.0
            values.append(float(loss(pred, onehot)))
        assert all(b > a for a, b in zip(values, values[1:], strict=False)), (type(loss).__name__, values)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_sums_in_float32(name, dtype):
    loss = _make(name)
    y = _labels(seed=1)
    x = torch.randn(2, C, 6, 5)
    ref = float(_call(loss, x, y))
    with torch.autocast("cpu", dtype=dtype):
        xh = x.to(dtype).requires_grad_(True)
        value = _call(loss, xh, y)
    assert value.dtype == torch.float32
    value.backward()
    assert torch.isfinite(xh.grad.float()).all()
    assert abs(float(value) - ref) < 2e-2


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("case", ["empty_gt", "empty_pred"])
def test_empty_masks_give_finite_loss_and_gradients(name, case):
    loss = _make(name)
    y = torch.zeros(2, 1, 6, 5, dtype=torch.int64) if case == "empty_gt" else _labels()
    x = torch.full((2, C, 6, 5), -30.0)
    x[:, 0] = 30.0  # everything predicted background: empty foreground prediction
    x.requires_grad_(True)
    value = _call(loss, x, y)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name", [n for n in NAMES if n != "deep_supervision"])
@pytest.mark.parametrize("bg", [True, False])
def test_reduction_none_is_batch_by_class(name, bg):
    if name == "boundary" and bg:  # region term with background, boundary term without: shapes differ
        with pytest.raises(ml_errors.InputError, match="reduction='none' needs the same classes"):
            _make(name, reduction="none", include_background=bg)
        return
    loss = _make(name, reduction="none", include_background=bg)
    value = _call(loss, torch.randn(2, C, 6, 5), _labels())
    assert value.shape == (2, C if bg else C - 1)
    mean = _call(_make(name, include_background=bg), torch.randn(2, C, 6, 5), _labels())
    assert mean.ndim == 0
