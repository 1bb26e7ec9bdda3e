"""Training only the decoder and the head for the first epochs (``medseg train --freeze-encoder-epochs N``).

The encoder, defined per network:

- MONAI ``UNet`` (recursive ``down -> SkipConnection(inner) -> up``): every ``down`` block and the
  bottom block (the innermost layer, no skip around it). The decoder is every ``up`` block, the top
  one being the head.
- MONAI ``DynUNet``: ``input_block``, ``downsamples`` and ``bottleneck``. The decoder is
  ``upsamples``, ``output_block`` and the deep-supervision heads.

During epochs ``1..N`` the encoder's parameters have ``requires_grad=False`` (no gradient, so AdamW
neither steps nor decays them); from epoch ``N + 1`` they train again. Normalisation statistics of a
``batch``-norm encoder still follow the new data (the layers stay in training mode).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from ignite.engine import Events

from medseg.errors import InputError

__all__ = ["encoder_modules", "FreezeEncoder"]

logger = logging.getLogger(__name__)


def encoder_modules(network: torch.nn.Module) -> list[torch.nn.Module]:
    """The encoder blocks of a MONAI ``UNet`` or ``DynUNet`` (see the module docstring)."""
    from monai.networks.layers import SkipConnection
    from monai.networks.nets import DynUNet, UNet

    if isinstance(network, DynUNet):
        return [network.input_block, *network.downsamples, network.bottleneck]
    if isinstance(network, UNet):
        blocks: list[torch.nn.Module] = []
        level: torch.nn.Module = network.model
        while True:
            children = list(level.children())
            if len(children) == 3 and isinstance(children[1], SkipConnection):
                blocks.append(children[0])
                level = children[1].submodule
            else:
                blocks.append(level)  # the bottom block
                return blocks
    raise InputError(f"--freeze-encoder-epochs: no encoder defined for {type(network).__name__} (UNet or DynUNet)")


class FreezeEncoder:
    """Ignite handler: the encoder of ``network`` is frozen during epochs ``1..epochs``.

    Args:
        network: the (unwrapped) network being trained.
        epochs: number of leading epochs with a frozen encoder (0: never).
    """

    def __init__(self, network: torch.nn.Module, epochs: int) -> None:
        if epochs < 0:
            raise InputError(f"--freeze-encoder-epochs must be >= 0, got {epochs}")
        self.epochs = epochs
        self.params = [p for m in encoder_modules(network) for p in m.parameters()]
        self.frozen: bool | None = None

    def attach(self, engine: Any) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Any) -> None:
        frozen = engine.state.epoch <= self.epochs
        if frozen != self.frozen:
            for p in self.params:
                p.requires_grad_(not frozen)
            self.frozen = frozen
            logger.info("epoch %d: encoder %s (%d tensors)", engine.state.epoch, "frozen" if frozen else "trains",
                        len(self.params))
