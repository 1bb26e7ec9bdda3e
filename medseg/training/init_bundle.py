"""Reading a MONAI bundle as a starting point: its plan (medseg bundles) or its ``network_def`` (any bundle).

Only the ``network_def`` entry and the entries it references are ever instantiated, after
:func:`medseg.utils.trust.check_config` found nothing unsafe in them (the same allow-list and trust rules
as every external config); a bundle whose other entries hold ``$`` expressions (as the model zoo's do)
can still start a run. Everything else (``Spacingd``'s ``pixdim``, ``ScaleIntensityRanged``'s window,
``SlidingWindowInferer``'s ``roi_size``, ``metadata.json``'s names) is read as plain data.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import torch

from medseg.errors import InputError
from medseg.plan.planner import ChannelNorm, Plan

__all__ = ["read_bundle", "network_entry"]

logger = logging.getLogger(__name__)
_REF = re.compile(r"^@([^#:]+)")
PLANNED = "medseg.plan.planner.plan_from_dict"


def read_bundle(root: Path, config_file: Path, source: Any) -> tuple[Plan | None, torch.nn.Module | None]:
    """``(plan, None)`` for a bundle medseg wrote, else ``(None, network)``; fills ``source``'s known fields."""
    raw = _read(config_file)
    pipeline = raw.get("pipeline")
    if isinstance(pipeline, dict) and pipeline.get("_target_") == PLANNED and isinstance(pipeline.get("raw"), dict):
        return Plan.from_dict(pipeline["raw"]), None
    network = network_entry(raw, config_file)
    source.in_channels = int(getattr(network, "in_channels", 0)) or None
    _read_metadata(root, source, int(getattr(network, "out_channels", 0)))
    found = _preprocessing(raw)
    source.spacing, source.patch_size = found.get("spacing"), found.get("patch_size")
    if "window" in found:
        source.normalization, source.stats_from_data = (found["window"],), False
    logger.info("bundle %s: network %s; read from its configs: %s", root, type(network).__name__,
                ", ".join(sorted(found)) or "nothing else")
    return None, network


def network_entry(raw: dict[str, Any], config_file: Path) -> torch.nn.Module:
    """Instantiate ``raw["network_def"]`` alone (with the entries it references) once it passed the safety check."""
    from monai.bundle import ConfigParser

    from medseg.utils.trust import UnsafeConfigError, check_config

    if "network_def" not in raw:
        raise InputError(f"--init: {config_file}: no network_def entry")
    entries: dict[str, Any] = {}
    pending = ["network_def"]
    while pending:
        key = pending.pop()
        if key in entries:
            continue
        if key not in raw:
            raise InputError(f"--init: {config_file}: network_def references @{key}, which the config does not define")
        entries[key] = raw[key]
        pending.extend(_references(raw[key]))
    problems = check_config(entries, config_file)
    if problems:
        raise UnsafeConfigError(f"--init: refusing {config_file}: its network_def holds code that runs when parsed",
                                problems=problems)
    try:
        network = ConfigParser(config=entries).get_parsed_content("network_def")
    except Exception as exc:  # the network's own argument errors, of any type
        raise InputError(f"--init: {config_file}: network_def does not build: {type(exc).__name__}: {exc}") from None
    if not isinstance(network, torch.nn.Module):
        raise InputError(f"--init: {config_file}: network_def is a {type(network).__name__}, not a network")
    return network


# ---------------------------------------------------------------------------------------------


def _read(path: Path) -> dict[str, Any]:
    from monai.bundle import ConfigParser

    try:
        raw = ConfigParser.load_config_file(str(path))
    except Exception as exc:  # json / yaml errors of many types
        raise InputError(f"--init: {path}: not a readable config: {exc}") from None
    if not isinstance(raw, dict):
        raise InputError(f"--init: {path}: a config must hold a mapping at the top level")
    return raw


def _references(node: Any) -> list[str]:
    if isinstance(node, str):
        found = _REF.match(node)
        return [found.group(1)] if found else []
    if isinstance(node, dict):
        return [r for v in node.values() for r in _references(v)]
    if isinstance(node, list):
        return [r for v in node for r in _references(v)]
    return []


def _walk(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, dict):
        return [node, *(d for v in node.values() for d in _walk(v))]
    if isinstance(node, list):
        return [d for v in node for d in _walk(v)]
    return []


def _numbers(v: Any, n: int) -> bool:
    return isinstance(v, list) and len(v) == n and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                       for x in v)


def _preprocessing(raw: dict[str, Any]) -> dict[str, Any]:
    """Literal values of the bundle's ``Spacingd``, ``ScaleIntensityRanged`` and ``SlidingWindowInferer``."""
    found: dict[str, Any] = {}
    for node in _walk(raw):
        target = str(node.get("_target_", "")).rsplit(".", 1)[-1]
        if target in ("Spacingd", "Spacing") and _numbers(node.get("pixdim"), 3):
            found.setdefault("spacing", tuple(float(x) for x in node["pixdim"]))
        elif target in ("ScaleIntensityRanged", "ScaleIntensityRange") and node.get("clip") is True:
            a = [node.get(k) for k in ("a_min", "a_max", "b_min", "b_max")]
            if _numbers(a, 4) and a[1] > a[0] and a[3] != a[2]:
                scale = (a[1] - a[0]) / (a[3] - a[2])  # x -> (clip(x) - a_min) / scale + b_min
                found.setdefault("window", ChannelNorm("ct", lower=float(a[0]), upper=float(a[1]),
                                                       mean=float(a[0] - a[2] * scale), std=float(scale)))
        elif target == "SlidingWindowInferer" and _numbers(node.get("roi_size"), 3):
            found.setdefault("patch_size", tuple(int(x) for x in node["roi_size"]))
    return found


def _read_metadata(root: Path, source: Any, out_channels: int) -> None:
    """Bundle name and the names of its outputs and inputs from ``configs/metadata.json`` (when it has them)."""
    path = root / "configs" / "metadata.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        logger.warning("--init: %s is not readable JSON; label names unknown", path)
        meta = {}
    source.name = str(meta.get("name") or source.name)
    fmt = meta.get("network_data_format") or {}
    pred = ((fmt.get("outputs") or {}).get("pred") or {}).get("channel_def") or {}
    if out_channels and {str(k) for k in pred} == {str(i) for i in range(out_channels)}:
        source.labels = {int(k): str(v).strip() for k, v in pred.items()}
    else:
        logger.warning("--init: %s names no output channels; no output channel keeps its weights", path)
    image = (fmt.get("inputs") or {}).get("image") or {}
    if source.in_channels == 1 and isinstance(image.get("modality"), str):
        source.channels = {0: image["modality"]}
