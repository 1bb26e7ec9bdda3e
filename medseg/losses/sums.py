"""Per-class sums of probabilities and targets, the core of every region loss.

``class_sums`` turns a :class:`medseg.losses.base.PreparedInputs` into ``(B, C')`` sums
``tp = sum(p*g)``, ``sp = sum(p^a)``, ``sg = sum(g^a)``. Label-index targets are *never* expanded
to a one-hot tensor: per-class sums are masked sums, one class at a time, and softmax + sums share
one fused autograd function (gather + bincount forward, scatter backward) whose backward writes
the logits' gradient in a single buffer; that is where the memory saving over MONAI's losses
comes from. Contractions run outside autocast, in float32 for half-precision inputs.
"""

from __future__ import annotations

import torch

from medseg.losses.base import PreparedInputs, activate

__all__ = [
    "class_sums",
    "dot_per_class",
    "label_counts",
    "per_class_sum_at_labels",
    "true_class_sums",
]


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
        sp = dot_per_class(pk, pk) if squared else pk.sum(-1)
    else:
        assert prep.dense is not None
        pk, gk = prep.probs[:, first:], prep.dense[:, first:]
        tp = dot_per_class(pk, gk)
        sp = dot_per_class(pk, pk) if squared else _flat(pk).sum(-1)
        sg = dot_per_class(gk, gk) if squared else _flat(gk).sum(-1)
    if batch:
        tp, sp, sg = tp.sum(0, keepdim=True), sp.sum(0, keepdim=True), sg.sum(0, keepdim=True)
    return tp, sp, sg


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], x.shape[1], -1)


def dot_per_class(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(B, C)`` sum over voxels of ``a * b`` (``(B, C, *spatial)``), without a product tensor.

    Runs outside autocast (which would otherwise evaluate the contraction in fp16/bf16).
    """
    with torch.autocast(device_type=a.device.type, enabled=False):
        return torch.einsum("bcn,bcn->bc", _flat(a), _flat(b.to(a.dtype)))


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
        sp = dot_per_class(pf, pf) if squared else pf.sum(-1)
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
