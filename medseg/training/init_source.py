"""What a ``medseg train --init SOURCE`` holds: weights, the network they fit, and what is known of their data.

``SOURCE`` is one of

- a medseg run directory (``config.json``): its best checkpoint (else the newest readable one) and the
  plan in that checkpoint's config;
- a MONAI bundle directory (``configs/``): ``models/model.pt`` and the ``network_def`` of
  ``configs/inference.json`` (else ``train.json``). A bundle written by medseg carries its plan; for any
  other bundle the ``network_def`` entry (with the entries it references, and nothing else) is checked
  by :func:`medseg.utils.trust.check_config` (the same allow-list and trust rules as every external
  config), instantiated, and translated into a :class:`~medseg.plan.planner.NetworkPlan` that rebuilds
  exactly its tensors. Spacing (``Spacingd``), a HU window (``ScaleIntensityRanged``), the window size
  (``SlidingWindowInferer``) and the label names (``metadata.json``) are read as data when they are
  literals;
- a checkpoint file: a medseg training checkpoint (with its plan) or a bare state dict (nothing else
  known: the network comes from the plan and the flags).

Weights always load with ``weights_only=True`` (:func:`medseg.utils.safe_load.safe_torch_load`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from medseg.errors import InputError
from medseg.plan.planner import ChannelNorm, NetworkPlan, Plan
from medseg.utils.files import file_sha256
from medseg.utils.rundir import CONFIG_FILE, best_checkpoint, checkpoint_dir

__all__ = ["InitSource", "read_source", "network_plan_of", "state_dict_of"]

logger = logging.getLogger(__name__)
BUNDLE_CONFIGS = ("inference.json", "inference.yaml", "train.json", "train.yaml")
BUNDLE_WEIGHTS = ("models", "model.pt")


@dataclass
class InitSource:
    """A loaded ``--init`` source. ``None`` fields are unknown (taken from the new data instead).

    ``labels``: output index -> name; ``channels``: input index -> name; ``stats_from_data``: the ``ct``
    normalisation's statistics are dataset statistics (medseg plans) that the new data re-plans, not a
    fixed HU window (a bundle's ``ScaleIntensityRanged``).
    """

    spec: str
    kind: str
    name: str
    weights_file: Path
    sha256: str
    state: dict[str, torch.Tensor]
    network: NetworkPlan | None = None
    in_channels: int | None = None
    channels: dict[int, str] | None = None
    labels: dict[int, str] | None = None
    is_regions: bool = False
    spacing: tuple[float, float, float] | None = None
    patch_size: tuple[int, int, int] | None = None
    normalization: tuple[ChannelNorm, ...] | None = None
    stats_from_data: bool = True
    batch_size: int | None = None
    samples_per_case: int | None = None

    def describe(self) -> dict[str, Any]:
        return {"source": self.spec, "kind": self.kind, "name": self.name, "weights": str(self.weights_file),
                "sha256": self.sha256}


def read_source(spec: str) -> InitSource:
    """Load ``--init SOURCE`` (see the module docstring); every problem is an :class:`InputError`."""
    path = Path(spec)
    if path.is_dir() and (path / CONFIG_FILE).is_file():
        return _from_run(spec, path)
    if path.is_dir() and (path / "configs").is_dir():
        return _from_bundle(spec, path)
    if path.is_dir():
        raise InputError(f"--init {spec}: a folder that is neither a medseg run (no {CONFIG_FILE}) nor a MONAI "
                         "bundle (no configs/)")
    if not path.is_file():
        raise InputError(f"--init {spec}: no such file or directory")
    return _from_checkpoint(spec, path, kind="checkpoint")


def state_dict_of(payload: Any, path: Path) -> dict[str, torch.Tensor]:
    """The network state dict in a loaded weights file: medseg's ``model`` entry, a bundle's plain state dict,
    or the ``state_dict`` / ``network_weights`` entry of other trainers; ``module.`` / ``_orig_mod.`` prefixes
    (DDP, ``torch.compile``) removed."""
    state = payload
    if isinstance(payload, dict) and not _all_tensors(payload):
        for key in ("model", "state_dict", "network_weights", "network"):
            if isinstance(payload.get(key), dict) and _all_tensors(payload[key]):
                state = payload[key]
                break
    if not isinstance(state, dict) or not state or not _all_tensors(state):
        raise InputError(f"--init: {path}: holds no network state dict (tensors by name; looked at the top level "
                         "and the model / state_dict / network_weights entries)")
    out = {}
    for key, value in state.items():
        for prefix in ("module.", "_orig_mod."):
            key = key[len(prefix):] if key.startswith(prefix) else key
        out[key] = value
    return out


def network_plan_of(net: torch.nn.Module, where: str) -> NetworkPlan:
    """The :class:`NetworkPlan` that rebuilds ``net`` (MONAI ``UNet`` or ``DynUNet`` as medseg builds them)."""
    from monai.networks.nets import DynUNet, UNet

    if isinstance(net, UNet):
        problems = _unet_problems(net)
        strides = tuple(_triple(s) for s in net.strides)
        plan = NetworkPlan(name="unet", filters=tuple(int(c) for c in net.channels),
                           kernels=((3, 3, 3),) * (len(strides) + 1), strides=((1, 1, 1), *strides),
                           deep_supervision=False, deep_supr_num=1, num_res_units=int(net.num_res_units),
                           norm=_name(net.norm))
    elif isinstance(net, DynUNet):
        problems = _dynunet_problems(net)
        plan = NetworkPlan(name="dynunet", filters=tuple(int(f) for f in net.filters),
                           kernels=tuple(_triple(k) for k in net.kernel_size),
                           strides=tuple(_triple(s) for s in net.strides), deep_supervision=bool(net.deep_supervision),
                           deep_supr_num=int(net.deep_supr_num))
    else:
        raise InputError(f"--init {where}: network_def is {type(net).__module__}.{type(net).__name__}; medseg "
                         "fine-tunes MONAI's UNet or DynUNet")
    if problems:
        raise InputError(f"--init {where}: network_def has settings medseg's networks do not rebuild",
                         problems=problems)
    return plan


# ---------------------------------------------------------------------------------------------


def _all_tensors(d: dict[Any, Any]) -> bool:
    return bool(d) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in d.items())


def _triple(v: Any) -> tuple[int, int, int]:
    return (int(v),) * 3 if isinstance(v, int) else tuple(int(x) for x in v)  # type: ignore[return-value]


def _name(v: Any) -> str:
    """A MONAI layer name given as a string or enum (``"batch"``, ``Norm.BATCH``), lower case; tuples as repr."""
    return str(getattr(v, "value", v)).lower() if not isinstance(v, (tuple, list)) else repr(v)


def _unet_problems(net: Any) -> list[str]:
    checks = [("spatial_dims", net.dimensions, 3), ("kernel_size", _triple(net.kernel_size), (3, 3, 3)),
              ("up_kernel_size", _triple(net.up_kernel_size), (3, 3, 3)), ("act", _name(net.act), "prelu"),
              ("adn_ordering", net.adn_ordering, "NDA"), ("bias", net.bias, True)]
    problems = [f"{arg}={got!r} (medseg builds {want!r})" for arg, got, want in checks if got != want]
    if _name(net.norm) not in ("instance", "batch"):
        problems.append(f"norm={net.norm!r} (medseg builds 'instance' or 'batch')")
    return problems


def _dynunet_problems(net: Any) -> list[str]:
    checks = [("spatial_dims", net.spatial_dims, 3), ("norm_name", _name(net.norm_name), _name(("INSTANCE", {"affine": True}))),
              ("act_name", _name(net.act_name), _name(("leakyrelu", {"inplace": True, "negative_slope": 0.01}))),
              ("upsample_kernel_size", [_triple(k) for k in net.upsample_kernel_size],
               [_triple(s) for s in net.strides[1:]]),
              ("res_block", type(net.input_block).__name__, "UnetBasicBlock")]
    return [f"{arg}={got!r} (medseg builds {want!r})" for arg, got, want in checks if got != want]


def _load_weights(path: Path) -> Any:
    from medseg.utils.safe_load import safe_torch_load

    return safe_torch_load(path)  # UnsafeCheckpointError / CorruptCheckpointError name the file


def _from_plan(source: InitSource, plan: Plan) -> InitSource:
    source.network, source.in_channels, source.channels = plan.network, plan.in_channels, dict(plan.channel_names)
    source.labels, source.is_regions = dict(plan.label_spec.names), plan.label_spec.is_regions
    if source.is_regions:
        source.labels = {k - 1: v for k, v in plan.label_spec.names.items()}  # region k -> output channel k - 1
    source.spacing, source.patch_size, source.normalization = plan.spacing, plan.patch_size, plan.normalization
    source.batch_size, source.samples_per_case = plan.batch_size, plan.samples_per_case
    return source


def _plan_in(payload: Any) -> Plan | None:
    config = payload.get("config") if isinstance(payload, dict) else None
    raw = config.get("plan") if isinstance(config, dict) else None
    return Plan.from_dict(raw) if raw else None


def _from_checkpoint(spec: str, path: Path, kind: str, name: str | None = None) -> InitSource:
    payload = _load_weights(path)
    source = InitSource(spec=spec, kind=kind, name=name or path.name, weights_file=path, sha256=file_sha256(path),
                        state=state_dict_of(payload, path))
    plan = _plan_in(payload)
    return _from_plan(source, plan) if plan is not None else source


def _from_run(spec: str, run: Path) -> InitSource:
    from medseg.handlers.checkpoint import latest_checkpoint

    ckpt = best_checkpoint(run)
    if not ckpt.is_file():
        found = latest_checkpoint(checkpoint_dir(run)) if checkpoint_dir(run).is_dir() else None
        if found is None:
            raise InputError(f"--init {spec}: the run has no readable checkpoint in {checkpoint_dir(run)}")
        ckpt = found[0]
    source = _from_checkpoint(spec, ckpt, kind="run", name=run.resolve().name)
    if source.network is None:
        raise InputError(f"--init {spec}: {ckpt} has no plan in its config (not a medseg training checkpoint)")
    return source


def _from_bundle(spec: str, root: Path) -> InitSource:
    from medseg.training.init_bundle import read_bundle

    weights = root.joinpath(*BUNDLE_WEIGHTS)
    if not weights.is_file():
        raise InputError(f"--init {spec}: the bundle has no weights at {weights}")
    config_file = next((root / "configs" / n for n in BUNDLE_CONFIGS if (root / "configs" / n).is_file()), None)
    if config_file is None:
        raise InputError(f"--init {spec}: the bundle has none of configs/{', configs/'.join(BUNDLE_CONFIGS)}")
    source = _from_checkpoint(spec, weights, kind="bundle", name=root.resolve().name)
    plan, network = read_bundle(root, config_file, source)
    if plan is not None:
        return _from_plan(source, plan)
    source.network = network_plan_of(network, spec)
    _check_rebuild(network, source.network, spec)
    return source


def _check_rebuild(net: torch.nn.Module, plan: NetworkPlan, spec: str) -> None:
    """The network medseg builds from ``plan`` holds exactly ``net``'s tensors (names and shapes)."""
    from medseg.plan.network import network_from_plan

    ours = network_from_plan(plan, int(net.in_channels), int(net.out_channels)).state_dict()  # type: ignore[arg-type]
    theirs = net.state_dict()
    diffs = [f"{k}: medseg {tuple(ours[k].shape) if k in ours else 'missing'} vs bundle "
             f"{tuple(theirs[k].shape) if k in theirs else 'missing'}"
             for k in sorted(set(ours) | set(theirs))
             if k not in ours or k not in theirs or ours[k].shape != theirs[k].shape]
    if diffs:
        raise InputError(f"--init {spec}: medseg cannot rebuild the bundle's network_def exactly "
                         f"({len(diffs)} tensors differ; first ones listed)", problems=diffs[:5])
