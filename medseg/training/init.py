"""Starting a run from trained weights (``medseg train --init SOURCE``): the plan that travels with them, the
weights matched to the new labels by name, and the report of what was loaded.

**The plan.** What the weights were trained to see comes from the source: spacing, the normalisation
scheme of each channel, the network (``net``, filters, kernels, strides, residual units, deep
supervision, normalisation layer), the patch size, the batch size and the patches per case (nnU-Net
moves the same values between datasets with ``nnUNetv2_move_plans_between_datasets``). What describes
the new dataset is planned from it: the fingerprint, the ``ct`` scheme's clip percentiles, mean and
std (a medseg source; a bundle's fixed HU window is kept), class sampling ratios and the labels.
``--pixdim``, ``--patch-size``, ``--batch-size`` and ``--samples-per-case`` still override; an override
of the network (``--net``, ``--channels``, ``--strides``, ``--deep-supervision``, residual units) that
differs from the source is refused, as are other input channels. A bare state dict brings no plan: the
new data and the flags plan everything and the weights must fit that network.

**The weights.** Every tensor outside the output layers must exist in the source with the same shape
(else nothing is loaded: exit 2 with the first mismatches); MONAI's ``copy_model_state`` copies them.
Output layers (UNet: the last up-sampling block, ``model.2``; DynUNet: ``output_block`` and the
deep-supervision heads) are matched channel by channel by label name, not index: shared labels keep
their weights (reordered), new labels keep the fresh initialisation, labels the new data lacks are
dropped. :func:`initialise` returns the report: ``loaded``, ``reinitialised`` and ``skipped`` tensors with
names and shapes (output layers per label), written to ``RUN_DIR/init.json``.
"""

from __future__ import annotations

import itertools
import logging
import re
from typing import Any

import numpy as np
import torch

from medseg.data.datalist import Dataset
from medseg.errors import InputError
from medseg.plan.planner import ComputeBudget, Plan, ct_normalization, make_plan
from medseg.training.config import TrainConfig
from medseg.training.init_source import InitSource, read_source

__all__ = ["InitSource", "read_source", "transfer_plan", "initialise", "head_keys", "init_tags",
           "attach_initial_validation"]

logger = logging.getLogger(__name__)
TOPOLOGY_FLAGS = {"net": "--net", "channels": "--channels", "strides": "--strides",
                  "deep_supervision": "--deep-supervision", "num_res_units": "num_res_units"}


def init_tags(source: InitSource) -> dict[str, str]:
    """MLflow tags of a run started from ``source``."""
    return {"init_from": f"{source.kind}:{source.name}", "init_sha256": source.sha256}


def transfer_plan(source: InitSource, fingerprint: dict[str, Any], dataset: Dataset, budget: ComputeBudget,
                  cfg: TrainConfig) -> tuple[Plan, dict[str, str]]:
    """The run's plan: the source's network and input settings, the new data's statistics and labels.

    Returns ``(plan, sources)``; ``sources`` maps each plan field to ``source``, ``plan`` (the new data)
    or ``user``.
    """
    if source.network is None:  # a bare state dict: the data and the flags plan everything
        return make_plan(fingerprint, dataset, budget, cfg.overrides())
    _refuse_topology_overrides(source, cfg)
    given = {"spacing": (cfg.pixdim, source.spacing), "batch_size": (cfg.batch_size, source.batch_size),
             "samples_per_case": (cfg.samples_per_case, source.samples_per_case)}
    overrides = {k: user if user is not None else src for k, (user, src) in given.items()
                 if user is not None or src is not None}
    plan, sources = make_plan(fingerprint, dataset, budget, overrides)
    for key, (user, src) in given.items():
        sources[key] = "user" if user is not None else "source" if src is not None else "plan"
    if source.in_channels is not None and source.in_channels != plan.in_channels:
        theirs = list((source.channels or {i: f"channel {i}" for i in range(source.in_channels)}).values())
        raise InputError(f"--init {source.spec}: the source takes {source.in_channels} input channel(s) {theirs}, "
                         f"dataset {cfg.data} has {plan.in_channels}: {list(plan.channel_names.values())}")
    net = source.network
    total = net.total_stride
    patch = cfg.patch_size or source.patch_size or tuple(int(np.ceil(p / t) * t)
                                                         for p, t in zip(plan.patch_size, total, strict=True))
    if any(int(p) % t for p, t in zip(patch, total, strict=True)):
        flag = "--patch-size" if cfg.patch_size else f"the source's patch size ({source.spec})"
        raise InputError(f"{flag} {list(patch)}: each side must be divisible by the source network's total stride "
                         f"{list(total)}")
    sources["patch_size"] = "user" if cfg.patch_size else "source" if source.patch_size else "plan"
    sources.update({k: "source" for k in ("net", "filters", "strides", "deep_supervision", "num_res_units")})
    plan = plan.replace(patch_size=tuple(int(p) for p in patch), network=net,
                        normalization=_normalization(source, fingerprint, plan))
    sources["normalization"] = "source" if source.normalization is not None else "plan"
    return plan, sources


def head_keys(network: torch.nn.Module) -> set[str]:
    """State-dict keys of the output layers whose channels are the labels (aliases included: DynUNet also
    lists its heads under ``skip_layers``)."""
    from monai.networks.nets import DynUNet, UNet

    if isinstance(network, UNet):
        heads = [network.model[2]]  # the top up-sampling block: transposed conv (+ residual unit) to out_channels
    elif isinstance(network, DynUNet):
        heads = [network.output_block, *network.deep_supervision_heads]
    else:
        return set()
    ids = {id(t) for m in heads for t in itertools.chain(m.parameters(), m.buffers())}
    return {k for k, v in network.state_dict(keep_vars=True).items() if id(v) in ids}


def initialise(network: torch.nn.Module, source: InitSource, plan: Plan) -> dict[str, Any]:
    """Load ``source``'s weights into ``network`` (see the module docstring) and return the report.

    Raises:
        InputError: a tensor outside the output layers is missing from the source or has another shape
            (nothing is loaded then).
    """
    from monai.networks.utils import copy_model_state

    heads = head_keys(network)
    exclude = "^(" + "|".join(re.escape(h) for h in sorted(heads)) + ")$" if heads else None
    body = {k: v for k, v in source.state.items() if k not in heads}
    state, updated, unchanged = copy_model_state(network, body, exclude_vars=exclude, inplace=False)
    target = network.state_dict()
    misfits = [k for k in unchanged if k not in heads]
    if misfits:
        problems = [f"{k}: ours {list(target[k].shape)}, source "
                    f"{list(source.state[k].shape) if k in source.state else 'missing'}" for k in misfits[:5]]
        raise InputError(f"--init {source.spec}: the weights do not fit the network ({len(misfits)} of {len(target)} "
                         "tensors missing or of another shape; nothing loaded); first ones", problems=problems)
    report: dict[str, Any] = {"source": source.describe(), "labels": {}, "loaded": [], "reinitialised": [],
                              "skipped": []}
    report["loaded"] = [{"tensor": k, "shape": list(target[k].shape)} for k in updated]
    report["skipped"] = [{"tensor": k, "shape": list(v.shape), "reason": "not in this network"}
                         for k, v in body.items() if k not in target]
    pairs, report["labels"] = _match_labels(source, plan)
    for key in (k for k in target if k in heads):
        if report["labels"]["unnamed"]:
            report["reinitialised"].append({"tensor": key, "shape": list(target[key].shape),
                                            "reason": report["labels"]["unnamed"]})
            continue
        state[key] = _head_tensor(key, target[key], source.state.get(key), pairs, report)
    for key in (k for k in source.state if k in heads and k not in target):
        report["skipped"].append({"tensor": key, "shape": list(source.state[key].shape), "reason": "not in this network"})
    network.load_state_dict(state)
    _log(report)
    return report


def attach_initial_validation(trainer: Any, evaluator: Any, tracker: Any, saver: Any) -> None:
    """Validate the initial weights before the first epoch: epoch 0 of the journal and MLflow, and the first best
    checkpoint (a fine-tune that never beats its starting point keeps it)."""
    from ignite.engine import Events

    from medseg.training import distributed as dist
    from medseg.utils.rundir import KEY_METRIC, VAL_PREFIX

    def validate(engine: Any) -> None:
        if engine.state.epoch != 0:
            return
        evaluator.run()
        record = {f"{VAL_PREFIX}{k}": float(v) for k, v in evaluator.state.metrics.items()
                  if isinstance(v, (int, float))}
        logger.info("epoch 0 (initial weights): %s", ", ".join(f"{k}={v:.4f}" for k, v in record.items()))
        if dist.is_main():
            tracker.record(0, record)
            saver.save_best(engine, record[VAL_PREFIX + KEY_METRIC])
            tracker.push()

    trainer.add_event_handler(Events.STARTED, validate)


# ---------------------------------------------------------------------------------------------


def _refuse_topology_overrides(source: InitSource, cfg: TrainConfig) -> None:
    net = source.network
    if net is None:
        return
    theirs = {"net": net.name, "channels": list(net.filters), "strides": [list(s) for s in net.strides[1:]],
              "deep_supervision": net.deep_supervision, "num_res_units": net.num_res_units}
    conflicts = []
    for key, flag in TOPOLOGY_FLAGS.items():
        value = getattr(cfg, key)
        if value is None:
            continue
        ours = [[s] * 3 for s in value] if key == "strides" else list(value) if key == "channels" else value
        if ours != theirs[key]:
            conflicts.append(f"{flag} {value if not isinstance(value, tuple) else list(value)} differs from the "
                             f"source's {theirs[key]}")
    if conflicts:
        raise InputError(f"--init {source.spec}: the network is the source's; these overrides would make its "
                         "weights unusable", problems=conflicts)


def _normalization(source: InitSource, fingerprint: dict[str, Any], plan: Plan) -> tuple[Any, ...]:
    if source.normalization is None:
        return plan.normalization
    return tuple(ct_normalization(fingerprint, c) if norm.scheme == "ct" and source.stats_from_data else norm
                 for c, norm in enumerate(source.normalization))


def _match_labels(source: InitSource, plan: Plan) -> tuple[list[tuple[int, int, str]], dict[str, Any]]:
    """``[(our channel, source channel, name)]`` for label names in both, and the labels part of the report."""
    spec = plan.label_spec
    ours = {k - 1: v for k, v in spec.names.items()} if spec.is_regions else dict(spec.names)
    theirs = source.labels or {}
    unnamed = ""
    if source.labels is None:
        unnamed = "the source does not name its output channels"
    elif source.is_regions != spec.is_regions:
        unnamed = "the source predicts {}, this dataset {}".format(
            *("regions" if r else "labels" for r in (source.is_regions, spec.is_regions)))
    if unnamed:
        logger.warning("--init %s: %s; every output channel starts fresh", source.spec, unnamed)
        theirs = {}
    index = {name.casefold(): i for i, name in theirs.items()}
    pairs = [(i, index[name.casefold()], name) for i, name in sorted(ours.items()) if name.casefold() in index]
    used = {s for _, s, _ in pairs}
    labels = {"matched": {name: {"source_channel": s, "channel": t} for t, s, name in pairs},
              "new": [ours[i] for i in sorted(ours) if i not in {t for t, _, _ in pairs}],
              "dropped": [theirs[i] for i in sorted(theirs) if i not in used], "unnamed": unnamed}
    return pairs, labels


def _head_tensor(key: str, fresh: torch.Tensor, src: torch.Tensor | None, pairs: list[tuple[int, int, str]],
                 report: dict[str, Any]) -> torch.Tensor:
    """``fresh`` with the matched labels' slices copied from ``src`` (every dim of size C that is a channel dim)."""
    labels = report["labels"]
    n_ours = len(labels["matched"]) + len(labels["new"])
    n_theirs = len(labels["matched"]) + len(labels["dropped"])
    entry = {"tensor": key, "shape": list(fresh.shape)}
    if src is None:
        report["reinitialised"].append({**entry, "reason": "not in the source"})
        return fresh
    dims = [d for d in range(min(fresh.dim(), 2)) if fresh.shape[d] == n_ours and src.shape[d] == n_theirs]
    rest = [[t.shape[d] for d in range(t.dim()) if d not in dims] for t in (fresh, src)]
    if fresh.dim() != src.dim() or rest[0] != rest[1]:
        report["reinitialised"].append({**entry, "reason": f"source shape {list(src.shape)}"})
        report["skipped"].append({"tensor": key, "shape": list(src.shape), "reason": f"our shape {list(fresh.shape)}"})
        return fresh
    if not dims:
        report["loaded"].append(entry)
        return src.clone()
    out = fresh.clone()
    for combo in itertools.product(pairs, repeat=len(dims)):
        ours, theirs = [slice(None)] * out.dim(), [slice(None)] * out.dim()
        for d, (t, s, _) in zip(dims, combo, strict=True):
            ours[d], theirs[d] = t, s
        out[tuple(ours)] = src[tuple(theirs)]
    if pairs:
        report["loaded"].append({**entry, "channels": [name for _, _, name in pairs]})
    if labels["new"]:
        report["reinitialised"].append({**entry, "channels": list(labels["new"])})
    if labels["dropped"]:
        report["skipped"].append({"tensor": key, "shape": list(src.shape), "channels": list(labels["dropped"])})
    return out


def _log(report: dict[str, Any]) -> None:
    src, labels = report["source"], report["labels"]
    logger.info("initialised from %s %s (sha256 %s): %d tensors loaded, %d re-initialised, %d skipped; labels "
                "matched by name: %s; new: %s; dropped: %s", src["kind"], src["source"], src["sha256"][:12],
                len(report["loaded"]), len(report["reinitialised"]), len(report["skipped"]),
                ", ".join(labels["matched"]) or "none", ", ".join(labels["new"]) or "none",
                ", ".join(labels["dropped"]) or "none")
    for what in ("loaded", "reinitialised", "skipped"):
        for e in report[what]:
            if what != "loaded" or "channels" in e:
                logger.info("  %-13s %s %s%s", what, e["tensor"], e["shape"],
                            f" channels {e['channels']}" if "channels" in e else f" ({e['reason']})" if "reason" in e
                            else "")
