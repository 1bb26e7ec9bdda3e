"""Shared machinery of every medseg loss: argument checks, input preparation, reduction, :class:`SegLoss`.

Shape notation: ``(B, C, *spatial)``; ``B`` batch, ``C`` channels (classes, background included
unless stated), ``C'`` the classes a loss keeps (``C - 1`` without the background), ``N`` the
number of voxels of one sample.

Input preparation (:func:`prepare_inputs`) is the only place where activations, label-index /
one-hot handling and background removal happen; :mod:`medseg.losses.sums` turns its result
into per-class sums without a one-hot tensor.

Reduction contract (:func:`reduce_loss`), shared by all losses: each loss computes a ``(B, C')``
tensor of per-sample, per-class terms (``(1, C')`` when ``batch=True`` pools the batch) in
:meth:`SegLoss.per_class`; ``reduction="none"`` returns it, ``"mean"`` is its mean and ``"sum"``
its sum.

Precision: half-precision inputs (fp16/bf16, e.g. under ``torch.autocast``) are activated and
summed in float32 (:func:`upcast_half`); float64 inputs stay float64.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch.nn.modules.loss import _Loss

__all__ = [
    "REDUCTIONS",
    "SegLoss",
    "PreparedInputs",
    "activate",
    "check_activation",
    "check_choice",
    "check_range",
    "prepare_inputs",
    "reduce_loss",
    "upcast_half",
]

REDUCTIONS = ("none", "mean", "sum")
_HALF = (torch.float16, torch.bfloat16)


def upcast_half(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 when it is float16/bfloat16, else ``x`` itself."""
    return x.float() if x.dtype in _HALF else x


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

    def dense_target(self) -> torch.Tensor:
        """``(B, C, *spatial)`` float target: ``dense``, or the label indices expanded to one-hot."""
        if self.dense is not None:
            return self.dense
        src = self._probs if self._probs is not None else self.softmax_logits
        dtype = torch.float32 if src.dtype in _HALF else src.dtype  # type: ignore[union-attr]
        onehot = F.one_hot(self.labels, self.num_classes).transpose(1, 2)  # type: ignore[arg-type]
        return onehot.reshape(self.shape).to(dtype)


def activate(
    input: torch.Tensor, sigmoid: bool = False, softmax: bool = False, other_act: Callable | None = None
) -> torch.Tensor:
    """Apply the configured activation; half-precision logits are activated in float32."""
    if softmax:
        if input.shape[1] == 1:
            warnings.warn("single channel prediction, `softmax=True` ignored.", stacklevel=3)
        else:
            return torch.softmax(input, 1, dtype=torch.float32 if input.dtype in _HALF else None)
    input = upcast_half(input)
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
    probs = upcast_half(probs)
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


class _ConstructorSignature:
    """``cls.__signature__`` of a :class:`SegLoss` subclass: what ``cls(...)`` accepts.

    A subclass lists only its own arguments and passes ``**kwargs`` on to its parent; the
    signature joins both (the parent's first), so that ``inspect.signature(DiceLoss)``, the loss
    registry's argument check and ``help()`` show every accepted argument. Instances have no
    ``__signature__`` (``inspect.signature(loss)`` stays that of ``forward``).
    """

    def __get__(self, obj: Any, cls: type) -> inspect.Signature:
        if obj is not None:
            raise AttributeError("__signature__")
        own = list(inspect.signature(cls.__init__).parameters.values())[1:]
        if not any(p.kind is p.VAR_KEYWORD for p in own):
            return inspect.Signature(own)
        extra = {p.name: p for p in own if p.kind is not p.VAR_KEYWORD}
        dropped = () if getattr(cls, "smoothed", True) else ("smooth_nr", "smooth_dr")
        inherited = inspect.signature(cls.__mro__[1]).parameters.values()
        params = [extra.pop(p.name, p) for p in inherited if p.name not in dropped] + list(extra.values())
        return inspect.Signature([p.replace(kind=p.KEYWORD_ONLY) for p in params])


class SegLoss(_Loss):
    """Base of the medseg losses: MONAI's common arguments, validated once; ``forward`` reduces :meth:`per_class`.

    A subclass implements :meth:`per_class` (its ``(B, C')`` terms) and takes only its own
    arguments, passing the others on with ``**kwargs``.

    Args:
        include_background: if False, channel 0 (background) is left out of the loss.
        to_onehot_y: the target holds class indices ``(B, 1, *spatial)``; it is used as such
            (per-class masked sums), never expanded to one-hot.
        sigmoid: apply a sigmoid to ``input`` (multi-label).
        softmax: apply a softmax over channels to ``input`` (multi-class).
        other_act: any other activation callable; at most one of the three may be set.
        reduction: ``"none"`` (``(B, C')`` per-class terms), ``"mean"`` or ``"sum"``.
        batch: pool over the batch before the per-class terms (``(1, C')`` terms).
        smooth_nr: added to the numerator of a ratio loss, >= 0.
        smooth_dr: added to the denominator of a ratio loss, >= 0 (keeps empty-vs-empty finite).
            Losses that are not ratios (``smoothed = False``) take neither.
    """

    uses_distance_map: ClassVar[bool] = False
    smoothed: ClassVar[bool] = True
    __signature__ = _ConstructorSignature()

    def __init__(
        self,
        include_background: bool = True,
        to_onehot_y: bool = False,
        sigmoid: bool = False,
        softmax: bool = False,
        other_act: Callable | None = None,
        reduction: str = "mean",
        batch: bool = False,
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
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
        if self.smoothed:
            self.smooth_nr = check_range("smooth_nr", smooth_nr, 0.0)
            self.smooth_dr = check_range("smooth_dr", smooth_dr, 0.0)
        elif (smooth_nr, smooth_dr) != (1e-5, 1e-5):
            raise ValueError(f"{type(self).__name__} is not a ratio loss and takes no smooth_nr/smooth_dr")

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

    def per_class(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``(B, C')`` (``(1, C')`` with ``batch``) loss terms before the reduction."""
        raise NotImplementedError(f"{type(self).__name__} must implement per_class")

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input: ``(B, C, *spatial)`` float logits, or probabilities when no activation is set.
            target: ``(B, 1, *spatial)`` class indices (``to_onehot_y=True``) or
                ``(B, C, *spatial)`` one-hot / soft labels in [0, 1].

        Returns:
            scalar, or the ``(B, C')`` terms of :meth:`per_class` with ``reduction="none"``.
        """
        return reduce_loss(self.per_class(input, target), self.reduction)
