"""Cross-entropy on logits as a medseg loss, and the per-class cross-entropy sums it shares with DiceCELoss."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from medseg.losses.base import PreparedInputs, SegLoss, check_range, prepare_inputs, upcast_half
from medseg.losses.dice import class_weight_tensor
from medseg.losses.sums import dot_per_class, label_counts, per_class_sum_at_labels

__all__ = ["CrossEntropyLoss", "cross_entropy_sums"]


class CrossEntropyLoss(SegLoss):
    """Cross-entropy on logits: softmax cross-entropy over the channels, or per-channel binary cross-entropy.

    Formula: ``L = -(1/Z) sum_i sum_c w_c q_c(i) log p_c(i)``, ``p = softmax(x)``,
    ``q = (1 - eps) g + eps / C`` (label smoothing ``eps``), ``Z = sum_i w_{y_i}`` for label-index
    targets with class weights, else the voxel count. Binary (``sigmoid=True`` or ``C == 1``):
    ``L = mean over voxels and channels of -(w_c g log s(x) + (1 - g) log(1 - s(x)))``.

    References: Long J., Shelhamer E., Darrell T. (2015) Fully Convolutional Networks for
    Semantic Segmentation. CVPR 2015. arXiv:1411.4038 (per-voxel softmax cross-entropy);
    Szegedy C. et al. (2016) Rethinking the Inception Architecture for Computer Vision.
    CVPR 2016. arXiv:1512.00567 (label smoothing).

    Convention: the input is always logits. ``"mean"`` equals ``torch.nn.CrossEntropyLoss``
    (``weight``, ``label_smoothing``; weights normalise label-index targets, not one-hot ones) and
    the CE part of ``monai.losses.DiceCELoss``; binary mode equals ``torch.nn.BCEWithLogitsLoss``
    with ``weight`` as ``pos_weight`` (MONAI's DiceCELoss uses it only when ``C == 1``; with
    ``sigmoid=True`` and ``C > 1`` it uses softmax CE). ``softmax`` is implied and accepted for
    MONAI compatibility; ``other_act`` is refused. ``label_smoothing`` applies to softmax CE only.
    ``include_background=False`` drops the background terms ``-w_0 q_0 log p_0`` (binary: channel 0)
    while ``Z`` still counts every voxel: a foreground-only cross-entropy.

    ``reduction="none"`` returns ``(B, C')``: softmax, ``B C' S[b, c] / sum_b Z_b`` with ``S[b, c]``
    class ``c``'s sum of ``-w_c q_c log p_c`` over sample ``b``'s voxels, so that the mean over
    ``(B, C')`` is the ``"mean"`` and, without weights, the mean of row ``b`` is sample ``b``'s
    cross-entropy (the scaling of :class:`GeneralizedDiceLoss`); binary, the voxel mean of each
    channel's binary cross-entropy. ``"sum"`` is the sum of that tensor (``B C'`` times ``"mean"``,
    not torch's sum over voxels); ``batch=True`` averages the rows into ``(1, C')``.

    Args:
        weight: class weights, ``C`` values (background included) or a scalar, non-negative.
        label_smoothing: in [0, 1].
        Other arguments: see :class:`medseg.losses.base.SegLoss` (no ``smooth_nr``/``smooth_dr``).

    Example:
        >>> loss = CrossEntropyLoss(to_onehot_y=True)
        >>> loss(torch.randn(2, 3, 8, 8, 8), torch.randint(0, 3, (2, 1, 8, 8, 8)))
    """

    smoothed = False

    def __init__(
        self,
        *,
        weight: Sequence[float] | float | torch.Tensor | None = None,
        label_smoothing: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if self.other_act is not None:
            raise ValueError(
                f"other_act must be None for CrossEntropyLoss (it takes logits), got {self.other_act!r}"
            )
        self.label_smoothing = check_range("label_smoothing", label_smoothing, 0.0, 1.0)
        self.register_buffer("class_weight", class_weight_tensor(weight))
        self.class_weight: torch.Tensor | None

    def per_class(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``(B, C')`` (``(1, C')`` if ``batch``) cross-entropy terms before the reduction (see the class docstring)."""
        x = upcast_half(input)
        prep = prepare_inputs(
            x, target, include_background=self.include_background, to_onehot_y=self.to_onehot_y, apply_activation=False
        )
        binary = self.sigmoid or prep.num_classes == 1
        s, z = cross_entropy_sums(x, prep, self.class_weight, self.label_smoothing, binary)
        s = s[:, prep.first :]
        terms = s / x[0, 0].numel() if binary else s * (s.shape[0] * s.shape[1] / z.sum())
        return terms.mean(0, keepdim=True) if self.batch else terms


def cross_entropy_sums(
    logits: torch.Tensor,
    prep: PreparedInputs,
    weight: torch.Tensor | None,
    label_smoothing: float = 0.0,
    binary: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class sums of the per-voxel cross-entropy terms, ``(B, C)``, and their normalisers, ``(B,)``.

    Sample ``b``'s cross-entropy is ``S[b].sum() / Z[b]`` and ``torch.nn.CrossEntropyLoss``'s
    mean over the batch is ``S.sum() / Z.sum()``.

    Args:
        logits: ``(B, C, *spatial)`` float logits (float32 or float64).
        prep: the target as prepared by :func:`medseg.losses.base.prepare_inputs` (label indices
            or dense; all ``C`` channels are summed, ``prep.first`` is ignored).
        weight: class weights (``C`` values or one), or None.
        label_smoothing: softmax label smoothing ``eps`` in [0, 1].
        binary: per-channel binary cross-entropy with logits, ``weight`` as ``pos_weight``
            (``Z[b] = C N``); else softmax cross-entropy (``Z[b] = sum_i w_{y_i}`` for label indices
            with weights, else ``N``).
    """
    b, c = logits.shape[:2]
    n = logits[0, 0].numel()
    w = None if weight is None else weight.to(logits)
    if w is not None and w.numel() not in (1, c):
        raise ValueError(f"weight has {w.numel()} values but the input has {c} channels (background included)")
    full = torch.full((b,), float(n), dtype=logits.dtype, device=logits.device)
    if binary:
        pw = None if w is None else w.reshape(-1, 1)
        target = prep.dense_target().reshape(b, c, -1)
        per_voxel = F.binary_cross_entropy_with_logits(logits.reshape(b, c, -1), target, pos_weight=pw, reduction="none")
        return per_voxel.sum(-1), full * c
    logp = torch.log_softmax(logits.reshape(b, c, -1), 1)
    if prep.labels is not None:
        lab = prep.labels
        sums = -per_class_sum_at_labels(logp.gather(1, lab.unsqueeze(1)).squeeze(1), lab, c)
        if label_smoothing > 0.0:
            sums = (1.0 - label_smoothing) * sums - (label_smoothing / c) * logp.sum(-1)
        if w is None:
            return sums, full
        return sums * w, (label_counts(lab, c, logp.dtype) * w).sum(1)
    q = prep.dense_target().reshape(b, c, -1)
    if label_smoothing > 0.0:
        q = (1.0 - label_smoothing) * q + label_smoothing / c
    sums = -dot_per_class(logp, q)
    return (sums if w is None else sums * w), full
