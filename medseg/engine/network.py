"""The segmentation network: MONAI's residual 3D U-Net, built from plain config values."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import UNet

__all__ = ["build_network", "resolve_device"]


def build_network(num_classes: int, in_channels: int = 1, channels: Sequence[int] = (16, 32, 64, 128),
                  strides: Sequence[int] = (2, 2, 2), num_res_units: int = 1, dropout: float = 0.0) -> UNet:
    """A 3D U-Net returning logits of shape (B, num_classes, *spatial).

    Spatial sizes must be divisible by the product of ``strides`` (8 for the default).
    """
    if len(strides) != len(channels) - 1:
        raise ValueError(f"strides needs len(channels) - 1 = {len(channels) - 1} entries, got {len(strides)}")
    return UNet(spatial_dims=3, in_channels=in_channels, out_channels=num_classes, channels=tuple(channels),
                strides=tuple(strides), num_res_units=num_res_units, dropout=dropout, norm="instance")


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cpu``/``cuda``/``cuda:N`` as given."""
    from medseg.errors import InputError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {name}: CUDA is not available on this machine (use --device cpu or auto)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise InputError(f"--device: unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
