"""The plan: every data-dependent setting of a run, derived from the fingerprint and a compute budget.

Rules (in the spirit of nnU-Net v2's ExperimentPlanner; the thresholds are ours unless stated):

- **Target spacing**: the per-axis median of the case spacings. On anisotropic data (the coarsest
  axis more than 3x the finest, and fewer than a third of the voxels along it), the coarse axis
  takes the 10th percentile of its spacings instead, never finer than the other axes (nnU-Net's
  rule). On a CPU budget, a median resampled volume above ``ComputeBudget.volume_voxels`` is
  coarsened: the fine axes first, until the volume fits, so a sliding-window pass stays cheap.
- **Patch size**: the median resampled shape, shrunk (the axis with the largest extent in mm
  first, one pooling step at a time) until it fits ``ComputeBudget.patch_voxels``, then rounded to
  a multiple of each axis's total stride.
- **Network**: MONAI ``DynUNet`` on a GPU; on a CPU budget MONAI's residual ``UNet`` with the same
  per-axis strides (see :meth:`ComputeBudget.for_device`).
- **Topology**: an axis is pooled (stride 2) only while its feature map is at least
  8 voxels and its spacing is at most twice the finest current spacing, so a coarse axis is not
  pooled until the others have caught up; a kernel is 3 along an axis whose spacing is at most
  twice the finest, else 1. Filters double per level from ``base_filters`` up to ``max_filters``.
  Deep supervision (DynUNet) with three or more levels.
- **Batch**: ``ComputeBudget.batch_size`` (2: nnU-Net's minimum), ``samples_per_case`` patches per
  loaded case.
- **Normalisation per channel**: CT clips to the foreground 0.5-99.5 percentiles, then z-scores with
  the foreground mean and std of the whole dataset; other modalities z-score each case inside
  its nonzero mask.
- **Class sampling**: background weight 1; foreground class ``c`` gets ``1 + log10(f_max / f_c)``
  (capped at 4), ``f`` its voxel frequency, so rarer classes are centred in more patches.
- **Augmentation**: each training transform with its probability and range, from the spacing, patch and
  modality (:mod:`medseg.plan.augmentation`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medseg.data.datalist import Dataset, LabelSpec
from medseg.errors import InputError
from medseg.plan.augmentation import apply_overrides, plan_augmentation

__all__ = ["ChannelNorm", "NetworkPlan", "Plan", "ComputeBudget", "make_plan", "plan_dataset", "topology",
           "PLAN_FIELDS", "plan_from_dict", "ct_normalization"]

ANISOTROPY = 3.0
MIN_FEATURE = 4


@dataclass(frozen=True)
class ChannelNorm:
    """Intensity normalisation of one input channel: ``ct`` (clip + global z-score) or ``zscore`` (per case)."""

    scheme: str
    lower: float | None = None
    upper: float | None = None
    mean: float | None = None
    std: float | None = None


@dataclass(frozen=True)
class NetworkPlan:
    """Network topology. ``kernels`` / ``strides``: one (x, y, z) triple per level (first stride 1)."""

    name: str = "dynunet"
    filters: tuple[int, ...] = (16, 32, 64, 128)
    kernels: tuple[tuple[int, int, int], ...] = ((3, 3, 3),) * 4
    strides: tuple[tuple[int, int, int], ...] = ((1, 1, 1),) + ((2, 2, 2),) * 3
    deep_supervision: bool = True
    deep_supr_num: int = 2
    num_res_units: int = 1
    norm: str = "instance"  # residual UNet's normalisation: instance (planned) or batch (a bundle's network)

    @property
    def total_stride(self) -> tuple[int, int, int]:
        return tuple(int(np.prod([s[a] for s in self.strides])) for a in range(3))  # type: ignore[return-value]


@dataclass(frozen=True)
class ComputeBudget:
    """What a device trains at a useful speed: network, patch voxels, volume voxels (CPU only), filters, batch."""

    device: str
    network: str
    patch_voxels: int
    volume_voxels: int | None
    base_filters: int
    max_filters: int
    max_levels: int
    batch_size: int = 2
    samples_per_case: int = 2

    @classmethod
    def for_device(cls, device: str) -> ComputeBudget:
        """CPU: residual UNet, 64^3-voxel patches, 3M-voxel volumes, 16-128 filters; CUDA: DynUNet sized by
        the GPU's memory.

        On 2 CPU cores a DynUNet step (two convolutions at full resolution in the first encoder and
        the last decoder stage) costs about 7x the residual UNet's (strided first convolution) at
        the same patch, so the CPU budget plans the UNet with the same per-axis strides.
        """
        if device.startswith("cuda"):
            import torch

            gib = torch.cuda.get_device_properties(torch.device(device)).total_memory / 2**30
            side = 128 if gib >= 10 else 96  # nnU-Net's default 3d_fullres budget fits ~8-10 GiB
            return cls("cuda", network="dynunet", patch_voxels=side**3, volume_voxels=None, base_filters=32, max_filters=320,
                       max_levels=6, batch_size=2, samples_per_case=1)
        return cls("cpu", network="unet", patch_voxels=64**3, volume_voxels=3_000_000, base_filters=16, max_filters=128,
                   max_levels=5, batch_size=2, samples_per_case=2)


@dataclass(frozen=True)
class Plan:
    """The single definition of a run's data-dependent settings; serialised into config.json and plans.json."""

    spacing: tuple[float, float, float]
    patch_size: tuple[int, int, int]
    batch_size: int
    samples_per_case: int
    network: NetworkPlan
    normalization: tuple[ChannelNorm, ...]
    class_ratios: tuple[float, ...]
    label_spec: LabelSpec
    channel_names: dict[int, str] = field(default_factory=lambda: {0: "CT"})
    budget: str = "cpu"
    augmentation: dict[str, Any] | None = None  # medseg.plan.augmentation; None: planned when read (older plans)

    @property
    def in_channels(self) -> int:
        return len(self.channel_names)

    @property
    def out_channels(self) -> int:
        return self.label_spec.num_outputs

    def to_dict(self) -> dict[str, Any]:
        raw = dataclasses.asdict(self)
        raw["label_spec"] = self.label_spec.to_dict()
        raw["channel_names"] = {str(k): v for k, v in self.channel_names.items()}
        return _lists(raw)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Plan:
        net = raw["network"]
        return cls(
            spacing=tuple(raw["spacing"]), patch_size=tuple(raw["patch_size"]), batch_size=int(raw["batch_size"]),
            samples_per_case=int(raw["samples_per_case"]),
            network=NetworkPlan(name=net["name"], filters=tuple(net["filters"]),
                                kernels=tuple(tuple(k) for k in net["kernels"]),
                                strides=tuple(tuple(s) for s in net["strides"]),
                                deep_supervision=bool(net["deep_supervision"]), deep_supr_num=int(net["deep_supr_num"]),
                                num_res_units=int(net.get("num_res_units", 1)), norm=net.get("norm", "instance")),
            normalization=tuple(ChannelNorm(**n) for n in raw["normalization"]),
            class_ratios=tuple(float(r) for r in raw["class_ratios"]),
            label_spec=LabelSpec.from_dict(raw["label_spec"]),
            channel_names={int(k): v for k, v in raw["channel_names"].items()}, budget=raw.get("budget", "cpu"),
            augmentation=raw.get("augmentation"))

    def replace(self, **changes: Any) -> Plan:
        return dataclasses.replace(self, **changes)


# user-overridable plan values (flag name -> Plan/NetworkPlan attribute)
PLAN_FIELDS = ("spacing", "patch_size", "batch_size", "samples_per_case", "net", "filters", "strides",
               "deep_supervision", "num_res_units", "augmentation")


def _lists(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _lists(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_lists(v) for v in x]
    return x


def _target_spacing(spacings: np.ndarray, shapes: np.ndarray) -> np.ndarray:
    target = np.median(spacings, axis=0)
    worst = int(np.argmax(target))
    others = [a for a in range(3) if a != worst]
    sizes = np.median(shapes * spacings / target, axis=0)
    if target[worst] > ANISOTROPY * max(target[others]) and sizes[worst] * ANISOTROPY < min(sizes[others]):
        coarse = float(np.percentile(spacings[:, worst], 10))
        target[worst] = max(target[others]) + 1e-5 if coarse < max(target[others]) else coarse
    return target


def _fit_volume(target: np.ndarray, median_mm: np.ndarray, budget: int | None) -> np.ndarray:
    target = target.copy()
    while budget is not None and np.prod(median_mm / target) > budget:
        finest = float(target.min())
        coarser = target[target > finest * 1.001]
        step = min(finest * 1.1, float(coarser.min())) if coarser.size else finest * 1.1
        target[target <= finest * 1.001] = step  # the fine axes together, 10% at a time, never past the next axis
    return target


def topology(patch: tuple[int, ...], spacing: tuple[float, ...], max_levels: int,
             ) -> tuple[tuple[tuple[int, int, int], ...], tuple[tuple[int, int, int], ...]]:
    """Per-level kernels and strides for ``patch`` at ``spacing`` (see the module docstring)."""
    sp = np.asarray(spacing, float)
    size = np.asarray(patch, int)

    def kernel() -> tuple[int, int, int]:
        return tuple(3 if s <= 2 * sp.min() else 1 for s in sp)  # type: ignore[return-value]

    kernels, strides = [kernel()], [(1, 1, 1)]
    while len(strides) < max_levels:
        pool = (size >= 2 * MIN_FEATURE) & (sp <= 2 * sp.min())
        if not pool.any():
            break
        stride = np.where(pool, 2, 1)
        size, sp = size // stride, sp * stride
        strides.append(tuple(int(s) for s in stride))  # type: ignore[arg-type]
        kernels.append(kernel())
    return tuple(kernels), tuple(strides)


def _patch_size(median_shape: np.ndarray, spacing: np.ndarray, budget: ComputeBudget) -> tuple[int, int, int]:
    patch = np.maximum(np.ceil(median_shape), 2 * MIN_FEATURE).astype(int)
    while True:
        _, strides = topology(tuple(patch), tuple(spacing), budget.max_levels)
        total = np.prod(np.asarray(strides), axis=0)
        rounded = (np.ceil(patch / total) * total).astype(int)
        if np.prod(rounded) <= budget.patch_voxels or (patch <= 2 * MIN_FEATURE).all():
            return tuple(int(p) for p in rounded)  # type: ignore[return-value]
        mm = patch * spacing
        axis = int(np.argmax(np.where(patch > 2 * MIN_FEATURE, mm, -1)))
        patch[axis] = max(2 * MIN_FEATURE, patch[axis] - max(int(total[axis]), 1))


def ct_normalization(fingerprint: dict[str, Any], channel: int) -> ChannelNorm:
    """The ``ct`` normalisation of ``channel`` from the fingerprint's foreground intensities (0.5-99.5 %, mean, std)."""
    p = fingerprint["foreground_intensity_properties_per_channel"][str(channel)]
    return ChannelNorm("ct", lower=p["percentile_00_5"], upper=p["percentile_99_5"], mean=p["mean"],
                       std=max(p["std"], 1e-8))


def _normalization(fingerprint: dict[str, Any], channels: dict[int, str]) -> tuple[ChannelNorm, ...]:
    out = []
    props = fingerprint["foreground_intensity_properties_per_channel"]
    for c, name in sorted(channels.items()):
        p = props[str(c)]
        if name.strip().upper() == "CT" and math.isfinite(p["mean"]):
            out.append(ct_normalization(fingerprint, c))
        else:
            out.append(ChannelNorm("zscore"))
    return tuple(out)


def _class_ratios(fingerprint: dict[str, Any], label_values: list[int]) -> tuple[float, ...]:
    freq = fingerprint["class_frequency"]
    present = [freq[str(v)] for v in label_values[1:] if freq.get(str(v), 0) > 0]
    top = max(present) if present else 1.0
    ratios = [1.0]
    for v in label_values[1:]:
        f = freq.get(str(v), 0.0)
        ratios.append(round(min(4.0, 1.0 + math.log10(top / f)), 3) if f > 0 else 0.0)
    return tuple(ratios)


def _network(name: str, patch: tuple[int, int, int], spacing: np.ndarray, budget: ComputeBudget,
             filters: tuple[int, ...] | None, strides: tuple[int, ...] | None, deep_supervision: bool | None,
             num_res_units: int) -> NetworkPlan:
    if strides is not None:
        levels = len(strides) + 1
        kernels: tuple[tuple[int, int, int], ...] = ((3, 3, 3),) * levels
        stride_t = ((1, 1, 1),) + tuple((int(s),) * 3 for s in strides)
    else:
        levels = len(filters) if filters is not None else budget.max_levels
        kernels, stride_t = topology(patch, tuple(spacing), levels)  # type: ignore[assignment]
        if filters is not None and len(stride_t) < len(filters):
            raise InputError(f"--channels {list(filters)}: the patch {list(patch)} allows only {len(stride_t)} "
                             "levels; give fewer channels or a larger --patch-size")
    levels = len(stride_t)
    if filters is None:
        filters = tuple(min(budget.base_filters * 2**i, budget.max_filters) for i in range(levels))
    ds = levels >= 3 if deep_supervision is None else bool(deep_supervision)
    if name == "unet":
        ds = False
    return NetworkPlan(name=name, filters=tuple(filters), kernels=kernels, strides=stride_t, deep_supervision=ds,
                       deep_supr_num=max(1, min(2, levels - 2)), num_res_units=num_res_units)


def make_plan(fingerprint: dict[str, Any], dataset: Dataset, budget: ComputeBudget,
              overrides: dict[str, Any] | None = None) -> tuple[Plan, dict[str, str]]:
    """The plan for ``dataset`` on ``budget``; ``overrides`` (``PLAN_FIELDS`` names) win over planned values.

    Returns:
        ``(plan, sources)``: ``sources`` maps each plan field to ``"plan"`` or ``"user"``.
    """
    o = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(o) - set(PLAN_FIELDS))
    if unknown:
        raise InputError(f"unknown plan override(s): {', '.join(unknown)}")
    spacings = np.asarray(fingerprint["spacings"], float)
    shapes = np.asarray(fingerprint["shapes_after_crop"], float)
    if "spacing" in o:
        spacing = np.asarray(o["spacing"], float)
    else:
        median_mm = np.median(shapes * spacings, axis=0)
        spacing = _fit_volume(_target_spacing(spacings, shapes), median_mm, budget.volume_voxels)
    median_shape = np.median(shapes * spacings / spacing, axis=0)
    patch = tuple(int(p) for p in o["patch_size"]) if "patch_size" in o else _patch_size(median_shape, spacing, budget)
    name = o.get("net", budget.network)
    if name not in ("dynunet", "unet"):
        raise InputError(f"--net must be dynunet or unet, got {name!r}")
    net = _network(name, patch, spacing, budget, tuple(o["filters"]) if "filters" in o else None,
                   tuple(o["strides"]) if "strides" in o else None, o.get("deep_supervision"),
                   int(o.get("num_res_units", 1)))
    total = net.total_stride
    if any(p % t for p, t in zip(patch, total, strict=True)):
        raise InputError(f"--patch-size {list(patch)}: each side must be divisible by the network's total "
                         f"stride {list(total)}")
    plan = Plan(spacing=tuple(round(float(s), 5) for s in spacing), patch_size=patch,  # type: ignore[arg-type]
                batch_size=int(o.get("batch_size", budget.batch_size)),
                samples_per_case=int(o.get("samples_per_case", budget.samples_per_case)),
                network=net, normalization=_normalization(fingerprint, dataset.channel_names),
                class_ratios=_class_ratios(fingerprint, sorted(dataset.label_spec.label_values)),
                label_spec=dataset.label_spec, channel_names=dict(dataset.channel_names), budget=budget.device)
    plan = plan.replace(augmentation=apply_overrides(
        plan_augmentation(plan.spacing, plan.patch_size, plan.channel_names, plan.normalization),
        o.get("augmentation", {})))
    sources = {f: ("user" if f in o else "plan") for f in PLAN_FIELDS}
    return plan, sources


def plan_dataset(dataset: Dataset, device: str = "cpu", overrides: dict[str, Any] | None = None,
                 workers: int = 2) -> tuple[dict[str, Any], Plan, dict[str, str]]:
    """Fingerprint ``dataset`` and plan it for ``device``: ``(fingerprint, plan, sources)``."""
    from medseg.plan.fingerprint import extract_fingerprint

    fingerprint = extract_fingerprint(dataset, workers=workers)
    plan, sources = make_plan(fingerprint, dataset, ComputeBudget.for_device(device), overrides)
    return fingerprint, plan, sources


def plan_from_dict(raw: dict[str, Any]) -> Plan:
    """:meth:`Plan.from_dict` as a function, for bundle configs (``_target_: medseg.plan.planner.plan_from_dict``)."""
    return Plan.from_dict(raw)
