"""The segmentation networks: MONAI ``DynUNet`` (planned default) and the residual ``UNet``, built from a plan."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import DynUNet, UNet

from medseg.plan.planner import NetworkPlan, Plan

__all__ = ["build_network", "build_dynunet", "network_from_plan", "planned_network", "resolve_device"]


def build_network(num_classes: int, in_channels: int = 1, channels: Sequence[int] = (16, 32, 64, 128),
                  strides: Sequence[int | Sequence[int]] = (2, 2, 2), num_res_units: int = 1,
                  dropout: float = 0.0, norm: str = "instance") -> UNet:
    """A residual 3D U-Net returning logits of shape (B, num_classes, *spatial).

    ``strides``: one per down-sampling level, an int or an (x, y, z) triple. Spatial sizes must be
    divisible by the product of the strides along each axis (8 for the default).
    """
    if len(strides) != len(channels) - 1:
        raise ValueError(f"strides needs len(channels) - 1 = {len(channels) - 1} entries, got {len(strides)}")
    return UNet(spatial_dims=3, in_channels=in_channels, out_channels=num_classes, channels=tuple(channels),
                strides=tuple(strides), num_res_units=num_res_units, dropout=dropout, norm=norm)


def build_dynunet(num_classes: int, in_channels: int, kernels: Sequence[Sequence[int]],
                  strides: Sequence[Sequence[int]], filters: Sequence[int], deep_supervision: bool = False,
                  deep_supr_num: int = 1) -> DynUNet:
    """MONAI ``DynUNet`` (nnU-Net's topology: per-axis kernels and strides, instance norm, leaky ReLU).

    In training mode with ``deep_supervision`` it returns ``(B, 1 + deep_supr_num, C, *spatial)``
    (every head upsampled to full size); in eval mode the full-resolution logits ``(B, C, *spatial)``.
    """
    return DynUNet(spatial_dims=3, in_channels=in_channels, out_channels=num_classes,
                   kernel_size=[list(k) for k in kernels], strides=[list(s) for s in strides],
                   upsample_kernel_size=[list(s) for s in strides[1:]], filters=list(filters),
                   norm_name=("INSTANCE", {"affine": True}), deep_supervision=deep_supervision,
                   deep_supr_num=deep_supr_num, res_block=False)


def network_from_plan(net: NetworkPlan, in_channels: int, out_channels: int) -> torch.nn.Module:
    """The network a plan describes (``dynunet`` or ``unet``)."""
    if net.name == "unet":
        strides = [tuple(s) for s in net.strides[1:]]
        return build_network(out_channels, in_channels, net.filters, strides, net.num_res_units, norm=net.norm)
    return build_dynunet(out_channels, in_channels, net.kernels, net.strides, net.filters,
                         net.deep_supervision, net.deep_supr_num)


def planned_network(plan: Plan) -> torch.nn.Module:
    """The network of ``plan`` with its input channels and outputs (for bundle configs)."""
    return network_from_plan(plan.network, plan.in_channels, plan.out_channels)


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
