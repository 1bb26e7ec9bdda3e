"""Compound losses: Dice + cross-entropy, Dice + focal, and a general weighted sum of losses."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.loss import _Loss

from medseg.losses.base import (
    REDUCTIONS,
    check_choice,
    check_range,
    per_class_sum_at_labels,
    prepare_inputs,
    reduce_loss,
)
from medseg.losses.dice import DiceLoss

__all__ = ["DiceCELoss", "DiceFocalLoss", "WeightedSumLoss"]

_HALF = (torch.float16, torch.bfloat16)


def _float_logits(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in _HALF else x


def _dense_target(target: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """``(B, C, *spatial)`` float target from a one-hot or a ``(B, 1, *spatial)`` label map."""
    if target.shape[1] == num_classes:
        return target.to(dtype)
    lab = target[:, 0].long()
    return F.one_hot(lab, num_classes).movedim(-1, 1).to(dtype)


class _DiceCompound(_Loss):
    """Dice part shared by :class:`DiceCELoss` and :class:`DiceFocalLoss`."""

    uses_distance_map = False

    def _build_dice(self, dice_kwargs: dict, lambda_dice: float, weight) -> None:
        self.lambda_dice = check_range("lambda_dice", lambda_dice, 0.0)
        self.dice = DiceLoss(reduction="none", weight=weight, **dice_kwargs)
        self.include_background = self.dice.include_background
        self.to_onehot_y = self.dice.to_onehot_y
        self.sigmoid = self.dice.sigmoid
        self.softmax = self.dice.softmax
        self.batch = self.dice.batch

    def _combine(self, dice: torch.Tensor, other: torch.Tensor, lam: float, other_mean: torch.Tensor) -> torch.Tensor:
        if self.reduction == "mean":
            return self.lambda_dice * dice.mean() + lam * other_mean
        return reduce_loss(self.lambda_dice * dice + lam * other, self.reduction)


class DiceCELoss(_DiceCompound):
    """Weighted sum of :class:`DiceLoss` and cross-entropy on the logits.

    Formula: ``L = lambda_dice * Dice + lambda_ce * CE``; CE is softmax cross-entropy over all
    ``C`` channels (label-index or one-hot/soft targets), or binary cross-entropy with logits per
    channel when ``C == 1`` or ``sigmoid=True``.

    References: Milletari et al. (2016) V-Net, 3DV; Isensee F. et al. (2021) nnU-Net, Nature
    Methods 18:203-211 (Dice + CE as the default segmentation loss).

    Convention: as ``monai.losses.DiceCELoss`` (CE ignores ``include_background``; ``weight`` is
    the CE class weight and the Dice class weight, without the background for Dice when it is
    excluded; ``"mean"`` is the CE mean of ``torch.nn.CrossEntropyLoss``), except: with
    ``sigmoid=True`` and ``C > 1`` we use per-channel BCE (MONAI uses softmax CE);
    ``reduction="none"`` returns ``(B, C')`` = Dice terms + ``lambda_ce`` times the per-sample CE
    mean (MONAI has no ``"none"``), and ``"sum"`` is the sum of that tensor (MONAI sums CE over
    voxels).

    Args:
        lambda_dice: weight of the Dice term, >= 0.
        lambda_ce: weight of the cross-entropy term, >= 0.
        label_smoothing: CE label smoothing in [0, 1].
        weight: per-class weights ``(C,)`` for CE (and Dice), non-negative.
        Other arguments: see :class:`DiceLoss`.
    """

    def __init__(
        self,
        include_background: bool = True,
        to_onehot_y: bool = False,
        sigmoid: bool = False,
        softmax: bool = False,
        other_act: Callable | None = None,
        squared_pred: bool = False,
        jaccard: bool = False,
        reduction: str = "mean",
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        batch: bool = False,
        weight: Sequence[float] | torch.Tensor | None = None,
        lambda_dice: float = 1.0,
        lambda_ce: float = 1.0,
        label_smoothing: float = 0.0,
    ) -> None:
        ce_w = None if weight is None else torch.as_tensor(weight, dtype=torch.float32).flatten()
        dice_w = ce_w[1:] if (ce_w is not None and not include_background and ce_w.numel() > 1) else ce_w
        kwargs = dict(
            include_background=include_background, to_onehot_y=to_onehot_y, sigmoid=sigmoid, softmax=softmax,
            other_act=other_act, squared_pred=squared_pred, jaccard=jaccard, smooth_nr=smooth_nr,
            smooth_dr=smooth_dr, batch=batch,
        )
        super().__init__(reduction=check_choice("reduction", reduction, REDUCTIONS))
        self._build_dice(kwargs, lambda_dice, dice_w)
        self.lambda_ce = check_range("lambda_ce", lambda_ce, 0.0)
        self.label_smoothing = check_range("label_smoothing", label_smoothing, 0.0, 1.0)
        self.register_buffer("ce_weight", ce_w)
        self.ce_weight: torch.Tensor | None

    def ce_terms(self, input: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample CE ``(B,)`` and the batch CE mean (weighted as ``torch.nn.CrossEntropyLoss``)."""
        x = _float_logits(input)
        b, c = x.shape[:2]
        w = None if self.ce_weight is None else self.ce_weight.to(x)
        if c == 1 or self.sigmoid:
            t = _dense_target(target, c, x.dtype)
            pw = None if w is None else w.reshape(-1, *([1] * (x.ndim - 2)))
            per_voxel = F.binary_cross_entropy_with_logits(x, t, pos_weight=pw, reduction="none")
            return per_voxel.reshape(b, -1).mean(1), per_voxel.mean()
        if target.shape[1] == c:
            per_voxel = F.cross_entropy(
                x, target.to(x.dtype), weight=w, reduction="none", label_smoothing=self.label_smoothing
            )
            return per_voxel.reshape(b, -1).mean(1), per_voxel.mean()
        lab = target[:, 0].long()
        per_voxel = F.cross_entropy(x, lab, weight=w, reduction="none", label_smoothing=self.label_smoothing)
        if w is None:
            return per_voxel.reshape(b, -1).mean(1), per_voxel.mean()
        wy = w[lab].reshape(b, -1).sum(1)
        sums = per_voxel.reshape(b, -1).sum(1)
        return sums / wy, sums.sum() / wy.sum()

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input: ``(B, C, *spatial)`` float logits.
            target: ``(B, 1, *spatial)`` class indices or ``(B, C, *spatial)`` one-hot / soft labels.

        Returns:
            scalar, or ``(B, C')`` with ``reduction="none"``.
        """
        dice = self.dice.per_class(input, target)
        per_sample, mean = self.ce_terms(input, target)
        other = per_sample.mean(0, keepdim=True) if self.batch else per_sample
        return self._combine(dice, other.unsqueeze(1), self.lambda_ce, mean)


class DiceFocalLoss(_DiceCompound):
    """Weighted sum of :class:`DiceLoss` and the focal loss on the logits.

    Formula: ``L = lambda_dice * Dice + lambda_focal * FL``, ``FL = -alpha_t (1 - p_t)^gamma log p_t``
    per voxel and class; ``p_t`` from a softmax when ``softmax=True`` (multi-class focal loss,
    only the true class contributes), else from a per-channel sigmoid.

    The original papers:
        Lin T.-Y., Goyal P., Girshick R., He K., Dollar P. (2017) Focal Loss for Dense Object
        Detection. ICCV 2017. arXiv:1708.02002. Zhu W. et al. (2019) AnatomyNet. Med. Phys. 46(2).

    Convention: with ``sigmoid=True`` (or no softmax) this equals ``monai.losses.DiceFocalLoss``
    (``alpha`` weighs positives, ``1 - alpha`` negatives; ``weight`` scales both terms per class).
    With ``softmax=True`` we use the softmax focal loss over all channels, then drop the
    background term if excluded, where MONAI's DiceFocalLoss uses a sigmoid focal loss (and
    MONAI's ``FocalLoss(use_softmax=True)`` re-normalises the softmax without the background);
    ``alpha`` then weighs the foreground classes and ``1 - alpha`` the background. Per-class focal
    terms are voxel means; ``"none"`` is ``(B, C')`` and ``"sum"`` its sum (MONAI sums voxels).

    Args:
        gamma: focusing exponent, >= 0.
        alpha: class balance in [0, 1], or None.
        lambda_dice: weight of the Dice term, >= 0.
        lambda_focal: weight of the focal term, >= 0.
        weight: per-class weights (``C'`` values) or a scalar, non-negative.
        Other arguments: see :class:`DiceLoss`.
    """

    def __init__(
        self,
        include_background: bool = True,
        to_onehot_y: bool = False,
        sigmoid: bool = False,
        softmax: bool = False,
        other_act: Callable | None = None,
        squared_pred: bool = False,
        jaccard: bool = False,
        reduction: str = "mean",
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        batch: bool = False,
        gamma: float = 2.0,
        weight: Sequence[float] | float | torch.Tensor | None = None,
        lambda_dice: float = 1.0,
        lambda_focal: float = 1.0,
        alpha: float | None = None,
    ) -> None:
        kwargs = dict(
            include_background=include_background, to_onehot_y=to_onehot_y, sigmoid=sigmoid, softmax=softmax,
            other_act=other_act, squared_pred=squared_pred, jaccard=jaccard, smooth_nr=smooth_nr,
            smooth_dr=smooth_dr, batch=batch,
        )
        super().__init__(reduction=check_choice("reduction", reduction, REDUCTIONS))
        self._build_dice(kwargs, lambda_dice, weight)
        self.gamma = check_range("gamma", gamma, 0.0)
        self.alpha = None if alpha is None else check_range("alpha", alpha, 0.0, 1.0)
        self.lambda_focal = check_range("lambda_focal", lambda_focal, 0.0)

    def focal_terms(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``(B, C')`` (``(1, C')`` if ``batch``) voxel-mean focal loss per class."""
        x = _float_logits(input)
        b, c = x.shape[:2]
        prep = prepare_inputs(
            x, target, include_background=self.include_background, to_onehot_y=self.to_onehot_y,
            apply_activation=False,
        )
        n = x[0, 0].numel()
        if self.softmax and c > 1:
            logp = torch.log_softmax(x, 1).reshape(b, c, -1)
            if prep.labels is not None:
                lp = logp.gather(1, prep.labels.long().unsqueeze(1)).squeeze(1)
                fl = -(1.0 - lp.exp()).pow(self.gamma) * lp
                if self.alpha is not None:
                    fl = fl * torch.where(prep.labels == 0, 1.0 - self.alpha, self.alpha)
                per = per_class_sum_at_labels(fl, prep.labels, c) / n
            else:
                t = prep.dense.reshape(b, c, -1)  # type: ignore[union-attr]
                fl = -(1.0 - logp.exp()).pow(self.gamma) * logp * t
                if self.alpha is not None:
                    fac = torch.full((c, 1), self.alpha, dtype=x.dtype, device=x.device)
                    fac[0] = 1.0 - self.alpha
                    fl = fl * fac
                per = fl.mean(-1)
        else:
            t = prep.dense if prep.dense is not None else _dense_target(target, c, x.dtype)
            xf, tf = x.reshape(b, c, -1), t.reshape(b, c, -1)
            bce = xf - xf * tf - F.logsigmoid(xf)
            fl = torch.exp(F.logsigmoid(-xf * (tf * 2.0 - 1.0)) * self.gamma) * bce
            if self.alpha is not None:
                fl = fl * (tf * self.alpha + (1.0 - tf) * (1.0 - self.alpha))
            per = fl.mean(-1)
        per = per[:, prep.first :]
        if self.dice.class_weight is not None:
            per = per * self.dice.class_weight.to(per)
        return per.mean(0, keepdim=True) if self.batch else per

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input: ``(B, C, *spatial)`` float logits.
            target: ``(B, 1, *spatial)`` class indices or ``(B, C, *spatial)`` one-hot labels.

        Returns:
            scalar, or ``(B, C')`` with ``reduction="none"``.
        """
        dice = self.dice.per_class(input, target)
        focal = self.focal_terms(input, target)
        return self._combine(dice, focal, self.lambda_focal, focal.mean())


class WeightedSumLoss(_Loss):
    """Weighted sum of named losses, with weights a schedule may change between iterations.

    Formula: ``L = sum_k w_k L_k(input, target[, distance_map])``.

    Each term keeps its own arguments and reduction (use the same reduction everywhere; with
    ``"none"`` the ``(B, C')`` terms must broadcast). A term whose weight is 0 is skipped.
    ``distance_map`` is passed to the terms with ``uses_distance_map``; ``uses_distance_map``
    is True when any term uses it. :meth:`set_weights` is how
    :class:`medseg.handlers.loss_schedule.LossWeightSchedule` changes the weights.

    Args:
        losses: ``{name: loss}``, or a sequence (names ``"term0"``, ``"term1"``, ...).
        weights: ``{name: weight}`` or a sequence in the same order, non-negative; default all 1.

    Example:
        >>> WeightedSumLoss({"region": GeneralizedDiceLoss(softmax=True, to_onehot_y=True),
        ...                  "boundary": BoundaryLoss(softmax=True)}, {"region": 1.0, "boundary": 0.01})
    """

    def __init__(
        self,
        losses: Mapping[str, nn.Module] | Sequence[nn.Module],
        weights: Mapping[str, float] | Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        items = dict(losses) if isinstance(losses, Mapping) else {f"term{i}": m for i, m in enumerate(losses)}
        if not items or any(not isinstance(m, nn.Module) for m in items.values()):
            raise ValueError(f"losses must be a non-empty mapping or sequence of loss modules, got {losses!r}")
        self.losses = nn.ModuleDict(items)
        self.uses_distance_map = any(getattr(m, "uses_distance_map", False) for m in items.values())
        self._weights: dict[str, float] = dict.fromkeys(items, 1.0)
        if weights is not None:
            if not isinstance(weights, Mapping):
                weights = list(weights)
                if len(weights) != len(items):
                    raise ValueError(f"weights must have {len(items)} values (one per loss), got {weights!r}")
                weights = dict(zip(items, weights, strict=True))
            self.set_weights(weights)

    @property
    def weights(self) -> dict[str, float]:
        """Current ``{name: weight}`` (a copy)."""
        return dict(self._weights)

    def set_weights(self, weights: Mapping[str, float] | None = None, **named: float) -> None:
        """Replace some weights; names must be existing terms, values non-negative finite numbers."""
        new = {**(weights or {}), **named}
        for name, value in new.items():
            if name not in self._weights:
                raise ValueError(f"unknown loss term {name!r}; terms are {', '.join(self._weights)}")
            self._weights[name] = check_range(f"weights[{name!r}]", value, 0.0, float("inf"), high_open=True)

    def forward(
        self, input: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor, distance_map: torch.Tensor | None = None
    ) -> torch.Tensor:
        """
        Args:
            input: ``(B, C, *spatial)`` float logits (what every term expects).
            target: ``(B, 1, *spatial)`` class indices or ``(B, C, *spatial)`` one-hot labels.
            distance_map: ``(B, C, *spatial)`` signed distance maps for the terms that use them.
        """
        total: torch.Tensor | None = None
        for name, loss in self.losses.items():
            w = self._weights[name]
            if w == 0.0:
                continue
            if getattr(loss, "uses_distance_map", False):
                value = loss(input, target, distance_map=distance_map)
            else:
                value = loss(input, target)
            total = w * value if total is None else total + w * value
        if total is None:  # every weight is 0
            ref = input if isinstance(input, torch.Tensor) else input[0]
            return ref.sum() * 0.0
        return total
