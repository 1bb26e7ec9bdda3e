"""Compound losses: Dice + cross-entropy, Dice + focal, and a general weighted sum of losses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.loss import _Loss

from medseg.losses.base import PreparedInputs, check_range, reduce_loss, upcast_half
from medseg.losses.cross_entropy import cross_entropy_sums
from medseg.losses.dice import DiceLoss, apply_class_weight, class_weight_tensor
from medseg.losses.sums import per_class_sum_at_labels

__all__ = ["DiceCELoss", "DiceFocalLoss", "WeightedSumLoss"]


class DiceCELoss(DiceLoss):
    """Weighted sum of :class:`DiceLoss` and cross-entropy on the logits.

    Formula: ``L = lambda_dice * Dice + lambda_ce * CE``; CE is softmax cross-entropy over all
    ``C`` channels (label-index or one-hot/soft targets), or binary cross-entropy with logits per
    channel when ``C == 1`` or ``sigmoid=True`` (see :class:`medseg.losses.CrossEntropyLoss`).

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
        *,
        weight: Sequence[float] | torch.Tensor | None = None,
        lambda_dice: float = 1.0,
        lambda_ce: float = 1.0,
        label_smoothing: float = 0.0,
        **kwargs: Any,
    ) -> None:
        ce_w = class_weight_tensor(weight)
        no_bg = not kwargs.get("include_background", True)
        super().__init__(weight=ce_w[1:] if (ce_w is not None and no_bg and ce_w.numel() > 1) else ce_w, **kwargs)
        self.lambda_dice = check_range("lambda_dice", lambda_dice, 0.0)
        self.lambda_ce = check_range("lambda_ce", lambda_ce, 0.0)
        self.label_smoothing = check_range("label_smoothing", label_smoothing, 0.0, 1.0)
        self.register_buffer("ce_weight", ce_w)
        self.ce_weight: torch.Tensor | None

    def ce_terms(
        self, input: torch.Tensor, prep: PreparedInputs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample CE ``(B,)`` and the batch CE mean (weighted as ``torch.nn.CrossEntropyLoss``)."""
        binary = self.sigmoid or prep.num_classes == 1
        sums, z = cross_entropy_sums(upcast_half(input), prep, self.ce_weight, self.label_smoothing, binary)
        return sums.sum(1) / z, sums.sum() / z.sum()

    def per_class(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``(B, C')`` Dice terms + ``lambda_ce`` times the per-sample CE, before the reduction."""
        return self._terms(input, target)[0]

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """:meth:`SegLoss.forward`; ``"mean"`` uses the batch CE mean (as torch, with class weights)."""
        terms, dice, ce_mean = self._terms(input, target)
        if self.reduction == "mean":
            return self.lambda_dice * dice.mean() + self.lambda_ce * ce_mean
        return reduce_loss(terms, self.reduction)

    def _terms(self, input: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        prep = self.prepare(input, target)
        dice = self.dice_terms(prep)
        per_sample, mean = self.ce_terms(input, prep)
        ce = per_sample.mean(0, keepdim=True) if self.batch else per_sample
        return self.lambda_dice * dice + self.lambda_ce * ce.unsqueeze(1), dice, mean


class DiceFocalLoss(DiceLoss):
    """Weighted sum of :class:`DiceLoss` and the focal loss on the logits.

    Formula: ``L = lambda_dice * Dice + lambda_focal * FL``, ``FL = -alpha_t (1 - p_t)^gamma log p_t``
    per voxel and class; ``p_t`` from a softmax when ``softmax=True`` (multi-class focal loss,
    only the true class contributes), else from a per-channel sigmoid.

    The original papers:
        Lin T.-Y., Goyal P., Girshick R., He K., Dollar P. (2017) Focal Loss for Dense Object
        Detection. ICCV 2017. arXiv:1708.02002. Zhu W. et al. (2019) AnatomyNet. Med. Phys. 46(2).

    Convention: with ``sigmoid=True`` (or no softmax) this equals ``monai.losses.DiceFocalLoss``
    (``alpha`` weighs positives, ``1 - alpha`` negatives; ``weight`` scales both terms per class,
    the Dice term only while more than one class channel remains, as MONAI).
    With ``softmax=True`` we use the softmax focal loss over all channels, then drop the
    background term if excluded, where MONAI's DiceFocalLoss uses a sigmoid focal loss (and
    MONAI's ``FocalLoss(use_softmax=True)`` re-normalises the softmax without the background);
    ``alpha`` then weighs the foreground classes and ``1 - alpha`` the background. The focal term
    of a class is its mean over the voxels, so ``"none"`` is ``(B, C')`` (MONAI returns the
    per-voxel focal terms plus the Dice terms, ``(B, C', *spatial)``, whose spatial mean is ours)
    and ``"sum"`` is the sum of that tensor, as MONAI, whose ``"sum"`` also averages the focal
    loss over space before summing over samples and classes.

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
        *,
        gamma: float = 2.0,
        alpha: float | None = None,
        lambda_dice: float = 1.0,
        lambda_focal: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.gamma = check_range("gamma", gamma, 0.0)
        self.alpha = None if alpha is None else check_range("alpha", alpha, 0.0, 1.0)
        self.lambda_dice = check_range("lambda_dice", lambda_dice, 0.0)
        self.lambda_focal = check_range("lambda_focal", lambda_focal, 0.0)

    def per_class(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``(B, C')`` Dice + focal terms before the reduction."""
        prep = self.prepare(input, target)
        return self.lambda_dice * self.dice_terms(prep) + self.lambda_focal * self.focal_terms(input, prep)

    def focal_terms(self, input: torch.Tensor, prep: PreparedInputs) -> torch.Tensor:
        """``(B, C')`` (``(1, C')`` if ``batch``) voxel-mean focal loss per class."""
        x = upcast_half(input)
        b, c = x.shape[:2]
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
                t = prep.dense_target().reshape(b, c, -1)
                fl = -(1.0 - logp.exp()).pow(self.gamma) * logp * t
                if self.alpha is not None:
                    fac = torch.full((c, 1), self.alpha, dtype=x.dtype, device=x.device)
                    fac[0] = 1.0 - self.alpha
                    fl = fl * fac
                per = fl.mean(-1)
        else:
            xf, tf = x.reshape(b, c, -1), prep.dense_target().reshape(b, c, -1).to(x.dtype)
            bce = xf - xf * tf - F.logsigmoid(xf)
            fl = torch.exp(F.logsigmoid(-xf * (tf * 2.0 - 1.0)) * self.gamma) * bce
            if self.alpha is not None:
                fl = fl * (tf * self.alpha + (1.0 - tf) * (1.0 - self.alpha))
            per = fl.mean(-1)
        per = apply_class_weight(per[:, prep.first :], self.class_weight)
        return per.mean(0, keepdim=True) if self.batch else per


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
