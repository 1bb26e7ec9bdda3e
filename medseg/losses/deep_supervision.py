"""Deep-supervision / multi-scale wrapper: one loss applied to several decoder outputs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.loss import _Loss

from medseg.losses.base import check_choice, check_range

__all__ = ["DeepSupervisionLoss", "downsample_target"]

WEIGHT_MODES = ("exp", "same", "two")
TARGET_MODES = ("nearest", "max_pool")


def downsample_target(target: torch.Tensor, size: Sequence[int], mode: str = "nearest", num_classes: int = 0) -> torch.Tensor:
    """Resize a segmentation target to ``size`` without interpolating label values.

    Args:
        target: ``(B, 1, *spatial)`` class indices or ``(B, C, *spatial)`` one-hot.
        size: output spatial size.
        mode: ``"nearest"`` (``nearest-exact`` sampling, keeps label indices or one-hot as is) or
            ``"max_pool"`` (one-hot, then adaptive max-pooling: a class present anywhere in a cell
            is marked present, so small structures survive; returns ``(B, C, *size)`` multi-hot).
        num_classes: ``C``, needed to one-hot a label-index target in ``"max_pool"`` mode.
    """
    size = tuple(int(s) for s in size)
    if tuple(target.shape[2:]) == size:
        return target
    if mode == "nearest":
        src = target if torch.is_floating_point(target) else target.float()
        out = F.interpolate(src, size=size, mode="nearest-exact")
        return out if torch.is_floating_point(target) else out.to(target.dtype)
    if target.shape[1] == 1 and num_classes > 1:
        target = F.one_hot(target[:, 0].long(), num_classes).movedim(-1, 1)
    pool = {1: F.adaptive_max_pool1d, 2: F.adaptive_max_pool2d, 3: F.adaptive_max_pool3d}[len(size)]
    return pool(target.float(), size)


class DeepSupervisionLoss(_Loss):
    """Weighted sum of a loss over deep-supervision outputs at decreasing resolutions.

    Formula: ``L = sum_l w_l L(input_l, down_l(target))``, ``w_l`` normalised to sum 1 by default.

    Reference: Lee C.-Y. et al. (2015) Deeply-Supervised Nets. AISTATS 2015. arXiv:1409.5185;
    weights 1, 1/2, 1/4, ... as in nnU-Net (Isensee et al. 2021, Nature Methods).

    Convention: ``weight_mode`` and ``weights`` as ``monai.losses.DeepSupervisionLoss``
    (``"exp"``: ``max(0.5^l, 1/16)``; ``"same"``: 1; ``"two"``: 1, 0.5, 0.5, ...); targets are
    resampled with ``nearest-exact`` like MONAI, never linearly. Differences: weights are
    normalised to sum 1 unless ``normalize_weights=False`` (MONAI does not normalise);
    ``weights`` shorter than the outputs is an error (MONAI silently falls back to
    ``weight_mode``); ``"max_pool"`` target mode; distance maps are passed through (nearest).

    Args:
        loss: the loss applied at every level (e.g. :class:`DiceCELoss`).
        weight_mode: ``"exp"``, ``"same"`` or ``"two"``.
        weights: explicit non-negative weights, one per output (overrides ``weight_mode``).
        normalize_weights: divide the weights by their sum.
        target_mode: ``"nearest"`` or ``"max_pool"`` (see :func:`downsample_target`).
    """

    def __init__(
        self,
        loss: nn.Module,
        weight_mode: str = "exp",
        weights: Sequence[float] | None = None,
        normalize_weights: bool = True,
        target_mode: str = "nearest",
    ) -> None:
        super().__init__()
        if not isinstance(loss, nn.Module):
            raise ValueError(f"loss must be a loss module, got {type(loss).__name__}")
        self.loss = loss
        self.weight_mode = check_choice("weight_mode", weight_mode, WEIGHT_MODES)
        self.weights = None if weights is None else [check_range("weights", w, 0.0) for w in weights]
        if self.weights is not None and (not self.weights or sum(self.weights) <= 0):
            raise ValueError(f"weights must be non-empty with a positive sum, got {weights!r}")
        self.normalize_weights = bool(normalize_weights)
        self.target_mode = check_choice("target_mode", target_mode, TARGET_MODES)
        self.uses_distance_map = bool(getattr(loss, "uses_distance_map", False))

    def get_weights(self, levels: int) -> list[float]:
        """Weights of ``levels`` outputs (normalised if ``normalize_weights``)."""
        if self.weights is not None:
            if len(self.weights) < levels:
                raise ValueError(f"weights has {len(self.weights)} values but there are {levels} outputs")
            w = self.weights[:levels]
        elif self.weight_mode == "same":
            w = [1.0] * levels
        elif self.weight_mode == "two":
            w = [1.0] + [0.5] * (levels - 1)
        else:
            w = [max(0.5**level, 0.0625) for level in range(levels)]
        total = sum(w)
        return [x / total for x in w] if self.normalize_weights else list(w)

    def forward(
        self,
        input: torch.Tensor | Sequence[torch.Tensor],
        target: torch.Tensor,
        distance_map: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Args:
            input: ``(B, C, *spatial)`` logits, or a sequence of them (full resolution first, as
                MONAI's ``DynUNet`` deep-supervision heads after unbinding).
            target: ``(B, 1, *spatial)`` class indices or ``(B, C, *spatial)`` one-hot at full resolution.
            distance_map: ``(B, C, *spatial)`` for a wrapped loss with ``uses_distance_map``.
        """
        outputs = [input] if isinstance(input, torch.Tensor) else list(input)
        if not outputs:
            raise ValueError("input must be a tensor or a non-empty sequence of tensors")
        weights = self.get_weights(len(outputs))
        total: torch.Tensor | None = None
        for w, out in zip(weights, outputs, strict=True):
            size = out.shape[2:]
            t = downsample_target(target, size, self.target_mode, int(out.shape[1]))
            if self.uses_distance_map:
                dm = None if distance_map is None else downsample_target(distance_map, size, "nearest")
                value = self.loss(out, t, distance_map=dm)
            else:
                value = self.loss(out, t)
            total = w * value if total is None else total + w * value
        return total  # type: ignore[return-value]
