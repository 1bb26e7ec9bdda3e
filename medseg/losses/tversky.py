"""Tversky (Salehi et al. 2017) and Focal Tversky (Abraham & Khan 2019) losses."""

from __future__ import annotations

from typing import Any

import torch

from medseg.losses.base import SegLoss, check_range
from medseg.losses.sums import class_sums

__all__ = ["FocalTverskyLoss", "TverskyLoss"]


class TverskyLoss(SegLoss):
    """Tversky loss, per sample (or pooled over the batch) and per class.

    Formula: ``L_c = 1 - (TP + s_nr) / (TP + alpha FP + beta FN + s_dr)`` with ``TP = sum(p*g)``,
    ``FP = sum(p*(1-g))``, ``FN = sum((1-p)*g)``.

    The original paper:
        Salehi S.S.M., Erdogmus D., Gholipour A. (2017) Tversky Loss Function for Image
        Segmentation Using 3D Fully Convolutional Deep Networks. MLMI 2017. arXiv:1706.05721.

    Convention: ``alpha`` weighs false positives and ``beta`` false negatives, as in Salehi et al.
    and ``monai.losses.TverskyLoss`` (same argument names and values). ``alpha = beta = 0.5``
    is the Dice loss; ``beta > alpha`` favours recall (small lesions).

    Args:
        alpha: weight of false positives, >= 0.
        beta: weight of false negatives, >= 0.
        Other arguments (``smooth_nr``, ``smooth_dr``, ...): see :class:`medseg.losses.base.SegLoss`.
    """

    def __init__(self, *, alpha: float = 0.5, beta: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.alpha = check_range("alpha", alpha, 0.0)
        self.beta = check_range("beta", beta, 0.0)

    def tversky_index(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``(B, C')`` (``(1, C')`` if ``batch``) smoothed Tversky index per class."""
        tp, sp, sg = class_sums(self.prepare(input, target), False, self.batch)
        denom = tp + self.alpha * (sp - tp) + self.beta * (sg - tp) + self.smooth_dr
        return (tp + self.smooth_nr) / denom

    def per_class(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``(B, C')`` loss terms before the reduction."""
        return 1.0 - self.tversky_index(input, target)


class FocalTverskyLoss(TverskyLoss):
    """Focal Tversky loss: the Tversky loss of each class raised to ``1/gamma`` before averaging.

    Formula: ``L_c = (1 - TI_c)^(1/gamma)``, ``TI_c`` the Tversky index of :class:`TverskyLoss`;
    the reduction then averages (or sums) the per-class terms.

    The original paper:
        Abraham N., Khan N.M. (2019) A Novel Focal Tversky Loss Function with Improved Attention
        U-Net for Lesion Segmentation. ISBI 2019. arXiv:1810.07842.

    Convention: the paper's ``gamma`` (4/3 there, range [1, 3]) is applied as the exponent
    ``1/gamma``, per class, *before* averaging over classes (some code applies ``gamma`` itself,
    or the exponent after averaging). The paper writes ``TI = TP / (TP + alpha FN + beta FP)``
    (its alpha weighs false *negatives*); here, as in :class:`TverskyLoss` and MONAI, ``alpha``
    weighs false positives and ``beta`` false negatives, so the paper's ``alpha = 0.7,
    beta = 0.3`` is our default ``alpha = 0.3, beta = 0.7``. With ``gamma = 1`` this equals
    :class:`TverskyLoss` (and ``monai.losses.TverskyLoss``). For ``gamma > 1`` the base
    ``1 - TI`` is clamped at 1e-7 so that an exactly perfect prediction has a finite gradient.

    Args:
        gamma: focal parameter, > 0; exponent ``1/gamma``.
        alpha: weight of false positives, >= 0.
        beta: weight of false negatives, >= 0.
        Other arguments: see :class:`TverskyLoss`.
    """

    def __init__(self, *, alpha: float = 0.3, beta: float = 0.7, gamma: float = 4.0 / 3.0, **kwargs: Any) -> None:
        super().__init__(alpha=alpha, beta=beta, **kwargs)
        self.gamma = check_range("gamma", gamma, 0.0, low_open=True)

    def per_class(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``(B, C')`` focal Tversky terms before the reduction."""
        base = 1.0 - self.tversky_index(input, target)
        if self.gamma == 1.0:
            return base
        if self.gamma > 1.0:
            base = base.clamp_min(1e-7)
        return base.clamp_min(0.0).pow(1.0 / self.gamma)
