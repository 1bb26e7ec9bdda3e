"""Shared machinery of every medseg loss: argument checks, input preparation, class sums, reduction.

Shape notation: ``(B, C, *spatial)``; ``B`` batch, ``C`` channels (classes, background included
unless stated), ``N`` the number of voxels of one sample.

Input preparation (:func:`prepare_inputs`) is the only place where activations, label-index /
one-hot handling and background removal happen. Label-index targets are *never* expanded to a
one-hot tensor on the Dice-family path: per-class sums are masked sums, one class at a time,
and softmax + sums share one fused autograd function (gather + bincount forward, scatter backward)
whose backward writes the logits' gradient in a single buffer; that is where the memory saving over MONAI's losses comes from.

Reduction contract (:func:`reduce_loss`), shared by all losses: each loss first computes a
``(B, C')`` tensor of per-sample, per-class terms (``C'`` = classes kept after background
removal; ``(1, C')`` when ``batch=True`` pools the batch); ``reduction="none"`` returns it,
``"mean"`` is its mean and ``"sum"`` its sum.

Precision: half-precision inputs (fp16/bf16, e.g. under ``torch.autocast``) are activated and
summed in float32; float64 inputs stay float64. Sums over label indices are masked per class (no one-hot).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch.nn.modules.loss import _Loss

__all__ = [
    "REDUCTIONS",
    "SegLoss",
    "PreparedInputs",
    "activate",
    "check_activation",
    "check_choice",
    "check_range",
    "class_sums",
    "dot_per_class",
    "prepare_inputs",
    "reduce_loss",
]

REDUCTIONS = ("none", "mean", "sum")
_HALF = (torch.float16, torch.bfloat16)


def check_range(
    name: str,
    value: float,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``float(value)`` or raise ``ValueError`` naming the parameter, the range and the value."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    bad_low = low is not None and (v <= low if low_open else v < low)
    bad_high = high is not None and (v >= high if high_open else v > high)
    if bad_low or bad_high or v != v:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        rng = f"{'(' if low_open or low is None else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"
        raise ValueError(f"{name} must be in {rng}, got {value!r}")
    return v


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    """Return ``str(value)`` lower-cased or raise ``ValueError`` listing the valid choices."""
    v = str(getattr(value, "value", value)).lower()
    if v not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return v


def check_activation(sigmoid: bool, softmax: bool, other_act: Callable | None) -> None:
    """Raise ``ValueError`` unless at most one of ``sigmoid``/``softmax``/``other_act`` is set."""
    if other_act is not None and not callable(other_act):
        raise ValueError(f"other_act must be None or a callable, got {type(other_act).__name__}")
    if int(bool(sigmoid)) + int(bool(softmax)) + int(other_act is not None) > 1:
        raise ValueError(
            "sigmoid, softmax and other_act are mutually exclusive; got "
            f"sigmoid={sigmoid}, softmax={softmax}, other_act={other_act!r}"
        )


class PreparedInputs:
    """What :func:`prepare_inputs` hands to a loss.

    Attributes:
        probs: ``(B, C, *spatial)`` float probabilities after the activation, *all* channels
            (background included); float32 for half-precision inputs. Computed on first access
            when the softmax is deferred (see ``softmax_logits``).
        labels: ``(B, N)`` int64 class indices in ``[0, C)`` when the target was a label map that
            is used as such (``to_onehot_y`` with ``C > 1``), else ``None``.
        dense: ``(B, C, *spatial)`` float target (one-hot or soft) otherwise, else ``None``.
        first: first channel the loss keeps: 0, or 1 when the background is excluded.
        softmax_logits: the logits when the activation is a softmax whose evaluation is deferred
            to a fused kernel (label-index targets), else ``None``.
    """

    def __init__(
        self,
        probs: torch.Tensor | None,
        labels: torch.Tensor | None,
        dense: torch.Tensor | None,
        first: int,
        softmax_logits: torch.Tensor | None = None,
    ) -> None:
        self._probs = probs
        self.labels = labels
        self.dense = dense
        self.first = first
        self.softmax_logits = softmax_logits

    @property
    def probs(self) -> torch.Tensor:
        """Probabilities ``(B, C, *spatial)`` (softmax evaluated here when it was deferred)."""
        if self._probs is None:
            assert self.softmax_logits is not None
            self._probs = activate(self.softmax_logits, softmax=True)
        return self._probs

    @property
    def shape(self) -> torch.Size:
        """Shape ``(B, C, *spatial)`` of the prediction."""
        return (self._probs if self._probs is not None else self.softmax_logits).shape  # type: ignore[union-attr]

    @property
    def num_classes(self) -> int:
        """Number of channels ``C`` of the prediction (background included)."""
        return int(self.shape[1])


def activate(
    input: torch.Tensor, sigmoid: bool = False, softmax: bool = False, other_act: Callable | None = None
) -> torch.Tensor:
    """Apply the configured activation; half-precision logits are activated in float32."""
    if softmax:
        if input.shape[1] == 1:
            warnings.warn("single channel prediction, `softmax=True` ignored.", stacklevel=3)
        else:
            return torch.softmax(input, 1, dtype=torch.float32 if input.dtype in _HALF else None)
    if input.dtype in _HALF:
        input = input.float()
    if sigmoid:
        return torch.sigmoid(input)
    if other_act is not None:
        return other_act(input)
    return input


def prepare_inputs(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    include_background: bool = True,
    to_onehot_y: bool = False,
    sigmoid: bool = False,
    softmax: bool = False,
    other_act: Callable | None = None,
    apply_activation: bool = True,
) -> PreparedInputs:
    """Activation, target interpretation and background selection, shared by all losses.

    Args:
        input: ``(B, C, *spatial)`` float logits (or probabilities when no activation is set).
        target: ``(B, 1, *spatial)`` class indices in ``[0, C)`` (any dtype) when ``to_onehot_y``,
            or ``(B, C, *spatial)`` one-hot / soft labels in ``[0, 1]``. A ``C``-channel target is
            accepted as one-hot even when ``to_onehot_y=True``.
        apply_activation: False when the caller has already activated ``input``.

    Raises:
        ValueError: wrong number of dimensions, spatial shapes that differ, a channel count that
            matches neither 1 nor ``C``, or label indices outside ``[0, C)``.
    """
    if input.ndim < 3:
        raise ValueError(f"input must be (B, C, *spatial) with at least one spatial dim, got shape {tuple(input.shape)}")
    if target.ndim != input.ndim:
        raise ValueError(
            f"target must have the same number of dims as input: input {tuple(input.shape)}, target "
            f"{tuple(target.shape)} (label maps are (B, 1, *spatial))"
        )
    if target.shape[0] != input.shape[0] or target.shape[2:] != input.shape[2:]:
        raise ValueError(
            f"input and target batch/spatial shapes differ: input {tuple(input.shape)}, target {tuple(target.shape)}"
        )
    n = int(input.shape[1])
    if to_onehot_y and n == 1:
        warnings.warn("single channel prediction, `to_onehot_y=True` ignored.", stacklevel=3)
    if not include_background and n == 1:
        warnings.warn("single channel prediction, `include_background=False` ignored.", stacklevel=3)
    first = 1 if (not include_background and n > 1) else 0
    if apply_activation and softmax and n > 1 and target.shape[1] == 1 and to_onehot_y:
        return PreparedInputs(None, _check_labels(target, n), None, first, softmax_logits=input)
    probs = activate(input, sigmoid, softmax, other_act) if apply_activation else input
    if probs.dtype in _HALF:
        probs = probs.float()
    if target.shape[1] == n:
        dense = target if torch.is_floating_point(target) else target.to(probs.dtype)
        return PreparedInputs(probs, None, dense.to(probs.dtype), first)
    if target.shape[1] != 1 or not to_onehot_y:
        hint = " (set to_onehot_y=True for a label-index target?)" if target.shape[1] == 1 else ""
        raise ValueError(
            f"target must have 1 (label indices) or {n} (one-hot) channels: input {tuple(input.shape)}, "
            f"target {tuple(target.shape)}{hint}"
        )
    return PreparedInputs(probs, _check_labels(target, n), None, first)


def _check_labels(target: torch.Tensor, n: int) -> torch.Tensor:
    """``(B, N)`` int64 labels of a ``(B, 1, *spatial)`` target, checked to lie in ``[0, n)``."""
    labels = target.reshape(target.shape[0], -1)
    if torch.is_floating_point(labels) or labels.dtype == torch.bool:
        labels = labels.long()
    lo, hi = torch.aminmax(labels)
    if int(lo) < 0 or int(hi) >= n:
        raise ValueError(f"target label indices must be in [0, {n - 1}] for {n} channels, found [{int(lo)}, {int(hi)}]")
    return labels.long()


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], x.shape[1], -1)


def dot_per_class(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(B, C)`` sum over voxels of ``a * b`` (``(B, C, *spatial)``), without a product tensor.

    Runs outside autocast (which would otherwise evaluate the contraction in fp16/bf16).
    """
    with torch.autocast(device_type=a.device.type, enabled=False):
        return torch.einsum("bcn,bcn->bc", _flat(a), _flat(b.to(a.dtype)))


_dot = dot_per_class


def label_counts(labels: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """``(B, C)`` voxel counts per class of a ``(B, N)`` label-index tensor."""
    b = labels.shape[0]
    bins = (labels.long() + torch.arange(b, device=labels.device).unsqueeze(1) * num_classes).reshape(-1)
    return torch.bincount(bins, minlength=b * num_classes).reshape(b, num_classes).to(dtype)


def per_class_sum_at_labels(values: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(B, C)``: for each class c, the sum of ``values`` (``(B, N)``) over voxels labelled c."""
    zero = values.new_zeros(())
    return torch.stack([torch.where(labels == k, values, zero).sum(-1) for k in range(num_classes)], 1)


def true_class_sums(pf: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``(B, C)`` ``tp_c = sum_i p_c(i) [y_i == c]`` of ``(B, C, N)`` probabilities, one class at a time."""
    zero = pf.new_zeros(())
    return torch.stack([torch.where(labels == k, pf[:, k], zero).sum(-1) for k in range(pf.shape[1])], 1)


class _SoftmaxLabelSums(torch.autograd.Function):
    """Fused ``softmax`` + per-class ``tp = sum(p * [y == c])`` and ``sp = sum(p^a)`` for label targets.

    Saves only the probabilities; the backward pass writes the logits' gradient into one buffer
    (no one-hot, no product tensors): ``dL/dp = gsp * a p^(a-1) + gtp[y] [c == y]``, then the
    softmax Jacobian ``dx = p * (dL/dp - sum_c p dL/dp)`` in place.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor, squared: bool):  # type: ignore[override]
        probs = activate(logits, softmax=True)
        b, c = probs.shape[:2]
        pf = probs.reshape(b, c, -1)
        lab = labels.long().unsqueeze(1)  # (B, 1, N)
        bins = (lab[:, 0] + torch.arange(b, device=lab.device).unsqueeze(1) * c).reshape(-1)
        p_true = pf.gather(1, lab).reshape(-1)
        tp = torch.bincount(bins, weights=p_true, minlength=b * c).reshape(b, c).to(probs.dtype)
        sp = _dot(pf, pf) if squared else pf.sum(-1)
        ctx.save_for_backward(probs, lab)
        ctx.squared = squared
        ctx.in_dtype = logits.dtype
        return tp, sp

    @staticmethod
    def backward(ctx, g_tp: torch.Tensor | None, g_sp: torch.Tensor | None):  # type: ignore[override]
        probs, lab = ctx.saved_tensors
        b, c = probs.shape[:2]
        pf = probs.reshape(b, c, -1)
        g_tp = pf.new_zeros(b, c) if g_tp is None else g_tp
        g_sp = pf.new_zeros(b, c) if g_sp is None else g_sp
        if ctx.squared:
            grad = pf * (2.0 * g_sp).unsqueeze(-1)
        else:
            grad = g_sp.unsqueeze(-1).expand_as(pf).contiguous()
        grad.scatter_add_(1, lab, g_tp.gather(1, lab[:, 0]).unsqueeze(1))
        dot = torch.zeros_like(pf[:, 0])
        for k in range(c):  # sum_c p_c dL/dp_c without a (B, C, N) temporary
            dot.addcmul_(pf[:, k], grad[:, k])
        grad.sub_(dot.unsqueeze(1)).mul_(pf)
        return grad.reshape(probs.shape).to(ctx.in_dtype), None, None

def class_sums(
    prep: PreparedInputs, squared: bool = False, batch: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-class ``tp = sum(p*g)``, ``sp = sum(p^a)`` and ``sg = sum(g^a)`` (``a = 2`` if squared).

    Returns three ``(B, C')`` tensors, or ``(1, C')`` with ``batch=True`` (sums pooled over the
    batch). From these, ``fp = sum(p*(1-g)) = sp - tp`` and ``fn = sum((1-p)*g) = sg - tp`` when
    ``a = 1``. Label-index targets never build a one-hot tensor.
    """
    first, c = prep.first, prep.num_classes
    if prep.softmax_logits is not None and prep.labels is not None:
        tp, sp = _SoftmaxLabelSums.apply(prep.softmax_logits, prep.labels, squared)
        sg = label_counts(prep.labels, c, tp.dtype)
        tp, sp, sg = tp[:, first:], sp[:, first:], sg[:, first:]
    elif prep.labels is not None:
        p = prep.probs
        pf = _flat(p)
        tp = true_class_sums(pf, prep.labels)[:, first:]
        sg = label_counts(prep.labels, c, p.dtype)[:, first:]  # g in {0, 1}: g^2 == g
        pk = pf[:, first:]
        sp = _dot(pk, pk) if squared else pk.sum(-1)
    else:
        assert prep.dense is not None
        pk, gk = prep.probs[:, first:], prep.dense[:, first:]
        tp = _dot(pk, gk)
        sp = _dot(pk, pk) if squared else _flat(pk).sum(-1)
        sg = _dot(gk, gk) if squared else _flat(gk).sum(-1)
    if batch:
        tp, sp, sg = tp.sum(0, keepdim=True), sp.sum(0, keepdim=True), sg.sum(0, keepdim=True)
    return tp, sp, sg


def reduce_loss(per_class: torch.Tensor, reduction: str) -> torch.Tensor:
    """Apply the shared reduction contract to a ``(B, C')`` (or ``(1, C')``) tensor of loss terms.

    ``"none"`` returns it unchanged, ``"mean"`` its mean, ``"sum"`` its sum.
    """
    if reduction == "mean":
        return per_class.mean()
    if reduction == "sum":
        return per_class.sum()
    if reduction == "none":
        return per_class
    raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}; got {reduction!r}")


class SegLoss(_Loss):
    """Base of the medseg region losses: MONAI's common arguments, validated once.

    Args:
        include_background: if False, channel 0 (background) is left out of the loss.
        to_onehot_y: the target holds class indices ``(B, 1, *spatial)``; it is used as such
            (per-class masked sums), never expanded to one-hot.
        sigmoid: apply a sigmoid to ``input`` (multi-label).
        softmax: apply a softmax over channels to ``input`` (multi-class).
        other_act: any other activation callable; at most one of the three may be set.
        reduction: ``"none"`` (``(B, C')`` per-class terms), ``"mean"`` or ``"sum"``.
        batch: pool the per-class sums over the batch before the ratio (``(1, C')`` terms).
    """

    uses_distance_map = False

    def __init__(
        self,
        include_background: bool = True,
        to_onehot_y: bool = False,
        sigmoid: bool = False,
        softmax: bool = False,
        other_act: Callable | None = None,
        reduction: str = "mean",
        batch: bool = False,
    ) -> None:
        reduction = check_choice("reduction", reduction, REDUCTIONS)
        super().__init__(reduction=reduction)
        check_activation(sigmoid, softmax, other_act)
        self.include_background = bool(include_background)
        self.to_onehot_y = bool(to_onehot_y)
        self.sigmoid = bool(sigmoid)
        self.softmax = bool(softmax)
        self.other_act = other_act
        self.batch = bool(batch)

    def prepare(self, input: torch.Tensor, target: torch.Tensor) -> PreparedInputs:
        """Run :func:`prepare_inputs` with this loss's settings."""
        return prepare_inputs(
            input,
            target,
            include_background=self.include_background,
            to_onehot_y=self.to_onehot_y,
            sigmoid=self.sigmoid,
            softmax=self.softmax,
            other_act=self.other_act,
        )
