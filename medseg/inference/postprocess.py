"""Post-processing learned from validation, in the spirit of nnU-Net's ``determine_postprocessing``.

For each structure (class, or region) two candidate rules are tried on the cross-validation
predictions of its fold runs, each kept only if it *raises* the mean validation Dice of that
structure (by more than ``min_gain``) without lowering it for any other structure:

- ``largest_component``: keep only the largest connected component (26-connectivity);
- ``min_volume_mm3``: remove components smaller than a volume, chosen among fractions of the
  smallest reference component volume seen in training (removing what is smaller than anything
  real).

Rules are applied to the structure's binary mask, in structure order, with MONAI's
``KeepLargestConnectedComponent`` and ``RemoveSmallObjects``; removed voxels become background.
The decision is written as ``postprocessing.json`` into every fold run; ``medseg predict`` applies it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from medseg.plan.planner import Plan
from medseg.utils.files import atomic_write_text
from medseg.utils.rundir import POSTPROCESSING_FILE

__all__ = ["apply_postprocessing", "load_postprocessing", "decide_postprocessing", "save_postprocessing", "structure_masks",
           "apply_rule"]

logger = logging.getLogger(__name__)
_STRUCTURE = ndimage.generate_binary_structure(3, 3)


def load_postprocessing(run_dir: str | Path | None) -> dict[str, Any] | None:
    """The decision stored in a run directory, or None."""
    if run_dir is None:
        return None
    path = Path(run_dir) / POSTPROCESSING_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def structure_masks(labels: np.ndarray, plan: Plan) -> dict[int, np.ndarray]:
    """Output index -> binary mask of a label map (classes 1..C-1, or regions 1..K)."""
    spec = plan.label_spec
    if spec.regions is not None:
        return {k + 1: np.isin(labels, vals) for k, vals in enumerate(spec.regions.values())}
    return {k: labels == k for k in spec.names if k != 0}


def apply_rule(mask: np.ndarray, rule: dict[str, Any], spacing: Sequence[float]) -> np.ndarray:
    """One structure's mask after ``rule`` (``largest_component`` and/or ``min_volume_mm3``)."""
    from monai.transforms import KeepLargestConnectedComponent, RemoveSmallObjects

    out = mask.astype(bool)
    if not out.any():
        return out
    if rule.get("largest_component"):
        out = np.asarray(KeepLargestConnectedComponent(applied_labels=[1], connectivity=3)(out[None].astype(np.uint8))
                         )[0].astype(bool)
    if rule.get("min_volume_mm3"):
        remove = RemoveSmallObjects(min_size=float(rule["min_volume_mm3"]), connectivity=3, by_measure=True,
                                    pixdim=tuple(float(s) for s in spacing))
        out = np.asarray(remove(out[None].astype(np.uint8)))[0].astype(bool)
    return out


def apply_postprocessing(labels: np.ndarray, rules: dict[str, Any], plan: Plan, spacing: Sequence[float],
                         ) -> np.ndarray:
    """A label map with each structure's rule applied; voxels a rule removes become background."""
    out = labels.copy()
    masks = structure_masks(labels, plan)
    for key, rule in rules.get("structures", {}).items():
        k = int(key)
        if k not in masks or not rule:
            continue
        kept = apply_rule(masks[k], rule, spacing)
        out[masks[k] & ~kept] = 0
    return out


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else float(2 * (a & b).sum() / s)


def _mean_dice(pairs: list[tuple[np.ndarray, np.ndarray, tuple[float, ...]]], plan: Plan,
               rules: dict[str, Any]) -> dict[int, float]:
    scores: dict[int, list[float]] = {}
    for pred, gt, spacing in pairs:
        p = apply_postprocessing(pred, {"structures": rules}, plan, spacing)
        pm, gm = structure_masks(p, plan), structure_masks(gt, plan)
        for k in gm:
            scores.setdefault(k, []).append(_dice(pm[k], gm[k]))
    return {k: float(np.mean(v)) for k, v in scores.items()}


def _smallest_component_mm3(pairs: list[tuple[np.ndarray, np.ndarray, tuple[float, ...]]], plan: Plan,
                            k: int) -> float | None:
    sizes = []
    for _, gt, spacing in pairs:
        lab, n = ndimage.label(structure_masks(gt, plan)[k], _STRUCTURE)
        if n:
            sizes.append(float(np.bincount(lab.ravel())[1:].min() * np.prod(spacing)))
    return min(sizes) if sizes else None


def decide_postprocessing(pairs: list[tuple[np.ndarray, np.ndarray, tuple[float, ...]]], plan: Plan,
                          min_gain: float = 1e-4) -> dict[str, Any]:
    """Rules per structure from validation ``(prediction, ground truth, spacing)`` label-map pairs.

    Returns ``{"structures": {k: rule}, "dice_before": {...}, "dice_after": {...}, "tried": {...}}``.
    """
    rules: dict[str, dict[str, Any]] = {}
    base = _mean_dice(pairs, plan, rules)
    tried: dict[str, list[dict[str, Any]]] = {}
    for k in sorted(base):
        smallest = _smallest_component_mm3(pairs, plan, k)
        candidates: list[dict[str, Any]] = [{"largest_component": True}]
        if smallest:
            candidates += [{"min_volume_mm3": round(smallest * f, 3)} for f in (0.1, 0.25, 0.5)]
        current = _mean_dice(pairs, plan, rules)
        best_rule, best = None, current
        for rule in candidates:
            scores = _mean_dice(pairs, plan, {**rules, str(k): rule})
            tried.setdefault(str(k), []).append({"rule": rule, "dice": scores[k]})
            others_ok = all(scores[j] >= current[j] - 1e-12 for j in scores if j != k)
            if others_ok and scores[k] > best[k] + min_gain:
                best_rule, best = rule, scores
        if best_rule is not None:
            rules[str(k)] = best_rule
    after = _mean_dice(pairs, plan, rules)
    return {"structures": rules, "dice_before": {str(k): v for k, v in base.items()},
            "dice_after": {str(k): v for k, v in after.items()}, "tried": tried}


def save_postprocessing(decision: dict[str, Any], run_dirs: Sequence[str | Path]) -> list[Path]:
    """Write the decision into every run directory (``postprocessing.json``)."""
    written = []
    for run in run_dirs:
        path = Path(run) / POSTPROCESSING_FILE
        atomic_write_text(path, json.dumps(decision, indent=2) + "\n")
        written.append(path)
    return written
