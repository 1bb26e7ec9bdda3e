"""Soft Dice (V-Net) and Generalized Dice (Sudre et al. 2017) losses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from medseg.losses.base import PreparedInputs, SegLoss, check_choice
from medseg.losses.sums import class_sums

__all__ = ["DiceLoss", "GeneralizedDiceLoss", "apply_class_weight", "class_weight_tensor", "generalized_dice_weights"]

W_TYPES = ("square", "simple", "uniform")


class DiceLoss(SegLoss):
    """Soft Dice loss, per sample (or pooled over the batch) and per class.

    Formula: ``L_c = 1 - (2 sum(p*g) + s_nr) / (sum(p^a) + sum(g^a) + s_dr)``, ``a = 2`` with
    ``squared_pred`` (V-Net) else ``a = 1``; Jaccard variant
    ``1 - (2 sum(p*g) + s_nr) / (2 (sum(p^a) + sum(g^a) - sum(p*g)) + s_dr)``.

    The original papers:
        Milletari F., Navab N., Ahmadi S.-A. (2016) V-Net: Fully Convolutional Neural Networks for
        Volumetric Medical Image Segmentation. 3DV 2016. arXiv:1606.04797.

    Convention: same arguments and values as ``monai.losses.DiceLoss`` (``soft_label=False``,
    no ``ignore_index``); ``squared_pred`` squares both prediction and target in the
    denominator. ``reduction="none"`` returns ``(B, C')`` (``(1, C')`` with ``batch=True``),
    where MONAI returns ``(B, C', 1, ...)``. ``weight`` multiplies the per-class terms; as in
    MONAI it is not applied (nor checked) when a single class channel remains (``C' == 1``).

    Args:
        squared_pred: V-Net squared denominator (``a = 2``) instead of the plain one.
        jaccard: soft Jaccard (IoU) instead of Dice.
        weight: per-class weights (length ``C'``, non-negative) or a scalar; None for none.
        Other arguments (``smooth_nr``, ``smooth_dr``, ...): see :class:`medseg.losses.base.SegLoss`.

    Example:
        >>> loss = DiceLoss(to_onehot_y=True, softmax=True)
        >>> loss(torch.randn(2, 3, 8, 8, 8), torch.randint(0, 3, (2, 1, 8, 8, 8)))
    """

    def __init__(
        self,
        *,
        squared_pred: bool = False,
        jaccard: bool = False,
        weight: Sequence[float] | float | torch.Tensor | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.squared_pred = bool(squared_pred)
        self.jaccard = bool(jaccard)
        self.register_buffer("class_weight", class_weight_tensor(weight))
        self.class_weight: torch.Tensor | None

    def per_class(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``(B, C')`` (``(1, C')`` if ``batch``) Dice loss terms before the reduction."""
        return self.dice_terms(self.prepare(input, target))

    def dice_terms(self, prep: PreparedInputs) -> torch.Tensor:
        """:meth:`per_class` of inputs already prepared by :meth:`prepare`."""
        tp, sp, sg = class_sums(prep, self.squared_pred, self.batch)
        union = sp + sg
        if self.jaccard:
            union = 2.0 * (union - tp)
        f = 1.0 - (2.0 * tp + self.smooth_nr) / (union + self.smooth_dr)
        return apply_class_weight(f, self.class_weight) if f.shape[1] > 1 else f


def class_weight_tensor(weight: Sequence[float] | float | torch.Tensor | None) -> torch.Tensor | None:
    """Validated float32 class weights (1D) from per-class values or a scalar; None stays None."""
    if weight is None:
        return None
    w = torch.as_tensor(weight, dtype=torch.float32).flatten()
    if w.numel() == 0 or bool((w < 0).any()):
        raise ValueError(f"weight must be non-negative per-class values or a scalar, got {weight!r}")
    return w


def apply_class_weight(terms: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """``terms`` ``(B, C')`` times the class weights (one value, or ``C'`` values); None: unchanged."""
    if weight is None:
        return terms
    if weight.numel() not in (1, terms.shape[1]):
        raise ValueError(
            f"weight has {weight.numel()} values but the loss has {terms.shape[1]} classes "
            "(without the background when include_background=False)"
        )
    return terms * weight.to(terms)


def generalized_dice_weights(
    target_sums: torch.Tensor, w_type: str = "square", normalize: bool = True
) -> torch.Tensor:
    """Class weights of the Generalized Dice loss from ``(B, C)`` target volumes ``sum(g)``.

    Rule, per row (a sample, or the pooled batch):

    ===================================  ==================================================
    class present (``sum(g) > 0``)       ``1 / sum(g)^2`` (square), ``1 / sum(g)`` (simple)
    class absent, some class present     the largest weight of the present classes
    no class present                     every class weight 1 (uniform)
    ===================================  ==================================================

    A class absent from the ground truth thus still penalises false positives, as heavily as the
    rarest present class; nothing is infinite. With ``normalize`` the row is divided by its sum
    (the ratio is invariant to a common scale, except through the smoothing constants).
    """
    sg = target_sums.detach()
    if w_type == "uniform":
        w = torch.ones_like(sg)
    else:
        present = sg > 0
        safe = torch.where(present, sg, torch.ones_like(sg))
        w = safe.reciprocal() if w_type == "simple" else safe.square().reciprocal()
        w = torch.where(present, w, torch.zeros_like(w))
        row_max = w.amax(dim=1, keepdim=True)
        w = torch.where(present, w, row_max.expand_as(w))
        w = torch.where(row_max > 0, w, torch.ones_like(w))
    if normalize:
        w = w / w.sum(dim=1, keepdim=True)
    return w


class GeneralizedDiceLoss(SegLoss):
    """Generalized Dice loss: class-weighted sums pooled into one ratio per sample.

    Formula: ``L = 1 - (2 sum_c w_c sum(p_c g_c) + s_nr) / (sum_c w_c (sum(p_c) + sum(g_c)) + s_dr)``,
    ``w_c = 1 / (sum g_c)^2`` (square), ``1 / sum g_c`` (simple) or 1 (uniform); the weights
    multiply the numerator and denominator sums *before* the ratio, so they do not cancel.

    The original paper:
        Sudre C.H., Li W., Vercauteren T., Ourselin S., Cardoso M.J. (2017) Generalised Dice
        Overlap as a Deep Learning Loss Function for Highly Unbalanced Segmentations. DLMIA 2017.
        arXiv:1707.03237.

    Convention: absent classes follow :func:`generalized_dice_weights` (as MONAI, except that
    a sample with *no* class present gets uniform weights where MONAI's weights all become 0,
    which makes its loss 0 whatever the prediction). With ``normalize_weights=True`` (default)
    the weights sum to 1 per sample, so ``s_nr``/``s_dr`` stay negligible; MONAI uses raw
    ``1/(sum g)^2`` (about 1e-10 for a 1e5-voxel class), which lets its 1e-5 smoothing terms
    dominate; set ``normalize_weights=False`` to reproduce MONAI exactly.
    ``reduction="none"`` returns ``(B, C')`` class shares scaled so that their mean over the
    classes is the sample's loss: ``"mean"`` equals MONAI's, ``"sum"`` is ``C'`` times MONAI's.

    Args:
        w_type: ``"square"``, ``"simple"`` or ``"uniform"``.
        normalize_weights: divide the weights of a sample by their sum.
        Other arguments (``smooth_nr``, ``smooth_dr``, ...): see :class:`medseg.losses.base.SegLoss`.
    """

    def __init__(self, *, w_type: str = "square", normalize_weights: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.w_type = check_choice("w_type", w_type, W_TYPES)
        self.normalize_weights = bool(normalize_weights)

    def per_class(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``(B, C')`` class shares (mean over classes = the sample's loss) before the reduction."""
        tp, sp, sg = class_sums(self.prepare(input, target), False, self.batch)
        w = generalized_dice_weights(sg, self.w_type, self.normalize_weights)
        union = sp + sg
        denom = (w * union).sum(1, keepdim=True) + self.smooth_dr
        n = tp.shape[1]
        # 1 - (2 sum w tp + s_nr) / denom == sum_c [w_c (union_c - 2 tp_c) + (s_dr - s_nr) / n] / denom
        share = (w * (union - 2.0 * tp) + (self.smooth_dr - self.smooth_nr) / n) / denom
        return share * n
