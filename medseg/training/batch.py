"""Batch preparation for MONAI engines, including losses that take a signed distance map."""

from __future__ import annotations

from typing import Any

import torch
from monai.engines.utils import PrepareBatch
from monai.utils import CommonKeys

__all__ = ["PrepareBatchWithDistanceMap", "DistanceMapLossAdapter", "DeepSupervisionHeads"]


class PrepareBatchWithDistanceMap(PrepareBatch):
    """Return ``(image, (label, distance_map))`` so the loss receives the cached distance map.

    Args:
        distance_map_key: batch key of the (B, C, *spatial) signed distance map.
    """

    def __init__(self, distance_map_key: str = "dist") -> None:
        self.distance_map_key = distance_map_key

    def __call__(self, batchdata: dict[str, torch.Tensor], device: str | torch.device | None = None,
                 non_blocking: bool = False, **kwargs: Any) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        def move(key: str) -> torch.Tensor:
            return batchdata[key].to(device=device, non_blocking=non_blocking, **kwargs)

        return move(CommonKeys.IMAGE), (move(CommonKeys.LABEL), move(self.distance_map_key))


class DistanceMapLossAdapter(torch.nn.Module):
    """Call ``loss(pred, label, distance_map=dist)`` for targets packed as ``(label, dist)``."""

    def __init__(self, loss: torch.nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, input: torch.Tensor, target: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        label, dist = target
        return self.loss(input, label, distance_map=dist)


class DeepSupervisionHeads(torch.nn.Module):
    """Feed a deep-supervision loss the heads of a network that stacks them on dim 1.

    MONAI's ``DynUNet`` returns ``(B, 1 + heads, C, *spatial)`` in training mode with deep
    supervision (every head upsampled to full size) and ``(B, C, *spatial)`` otherwise; the wrapped
    loss (a :class:`medseg.losses.DeepSupervisionLoss`) receives the list of heads, full resolution
    first, or the single output.
    """

    def __init__(self, loss: torch.nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, input: torch.Tensor, target: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        outputs = list(torch.unbind(input, dim=1)) if input.ndim == target.ndim + 1 else [input]
        return self.loss(outputs, target, **kwargs)
