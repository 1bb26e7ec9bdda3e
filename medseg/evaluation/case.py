"""One case of ``medseg evaluate``: read a prediction/ground-truth pair, compute per-structure and lesion-wise metrics.

A *structure* is what gets scored: a label value (``values == (k,)``) or an nnU-Net v2 region
(``values`` = the label values it covers; its mask is ``np.isin(label_map, values)``). Cases run in
worker processes (:func:`run_cases`), so everything here is picklable and reads its own files.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any

import nibabel as nib
import numpy as np
from tqdm.auto import tqdm

from medseg.metrics import binary_metrics, compute_metrics, default_worst_distance
from medseg.metrics.lesion import lesion_metrics
from medseg.metrics.surface import bounding_box
from medseg.utils.geometry import spacing_from_affine

__all__ = ["Structure", "CaseTask", "evaluate_case", "run_cases", "spatial_shape"]


@dataclass(frozen=True)
class Structure:
    """A scored structure: ``key`` (label value, or region index 1..K), ``name`` and covered label ``values``."""

    key: int
    name: str
    values: tuple[int, ...]


@dataclass(frozen=True)
class CaseTask:
    """Everything one worker needs for one case.

    ``structures``: what to score; ``None`` means every nonzero label found in either map.
    ``metric_options``: keyword arguments of :func:`medseg.metrics.compute_metrics`.
    ``lesion_options``: keyword arguments of :func:`medseg.metrics.lesion.lesion_metrics`, or
    ``None`` for no lesion-wise evaluation.
    """

    case: str
    pred_path: str
    gt_path: str
    structures: tuple[Structure, ...] | None
    metric_options: dict[str, Any]
    lesion_options: dict[str, Any] | None = None


def spatial_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """Shape without trailing singleton axes beyond the third (NIfTI 4D files of one volume)."""
    shape = tuple(int(n) for n in shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def evaluate_case(task: CaseTask) -> dict[str, Any]:
    """``{"case", "problems", "metrics": {key: ClassMetrics dict}, "lesions": {key: LesionResult}}``."""
    problems: list[str] = []
    pred_img, gt_img = nib.load(task.pred_path), nib.load(task.gt_path)
    pred = _labels_array(np.asanyarray(pred_img.dataobj), task.case, task.pred_path, problems)
    gt = _labels_array(np.asanyarray(gt_img.dataobj), task.case, task.gt_path, problems)
    if problems:
        return {"case": task.case, "problems": problems, "metrics": {}, "lesions": {}}
    spacing = spacing_from_affine(gt_img.affine, gt.ndim)
    options = dict(task.metric_options)
    if options.get("worst_distance") is None:  # resolved on the full image, before any crop
        options["worst_distance"] = default_worst_distance(gt.shape, spacing)
    box = bounding_box((pred != 0) | (gt != 0))
    if box is not None:
        pred, gt = pred[box], gt[box]
    else:
        pred, gt = pred[..., :0], gt[..., :0]
    structures = task.structures
    if structures is None:
        found = sorted(int(v) for v in np.union1d(np.unique(pred), np.unique(gt)) if v != 0)
        structures = tuple(Structure(k, "", (k,)) for k in found)
    metrics: dict[int, dict[str, Any]] = {}
    lesions: dict[int, Any] = {}
    plain = all(s.values == (s.key,) for s in structures)
    if plain:
        result = compute_metrics(pred, gt, spacing, [s.key for s in structures], **options)
        metrics = {k: m.as_dict() for k, m in result.items()}
    for s in structures:
        p_mask, g_mask = _mask(pred, s.values), _mask(gt, s.values)
        if not plain:
            metrics[s.key] = binary_metrics(p_mask, g_mask, spacing, label=s.key, **options).as_dict()
        if task.lesion_options is not None:
            lesions[s.key] = lesion_metrics(p_mask, g_mask, spacing, **task.lesion_options)
    return {"case": task.case, "problems": [], "metrics": metrics, "lesions": lesions}


def run_cases(tasks: Sequence[CaseTask], workers: int, progress: bool) -> list[dict[str, Any]]:
    """:func:`evaluate_case` over ``tasks`` in order, in ``workers`` spawned processes (1 = this process)."""
    bar = tqdm(total=len(tasks), desc="evaluate", unit="case", disable=not progress)
    results: list[dict[str, Any]] = []
    try:
        if workers == 1 or len(tasks) < 2:
            for task in tasks:
                results.append(evaluate_case(task))
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=get_context("spawn")) as pool:
                for res in pool.map(evaluate_case, tasks, chunksize=1):
                    results.append(res)
                    bar.update()
    finally:
        bar.close()
    return results


def _mask(label_map: np.ndarray, values: tuple[int, ...]) -> np.ndarray:
    return label_map == values[0] if len(values) == 1 else np.isin(label_map, values)


def _labels_array(data: np.ndarray, case: str, path: str, problems: list[str]) -> np.ndarray:
    data = data.reshape(spatial_shape(data.shape))
    if np.issubdtype(data.dtype, np.floating):
        if not np.all(np.isfinite(data)) or not np.array_equal(data, np.round(data)):
            problems.append(f"{case}: {path} holds non-integer values; expected a label map (argmax the probabilities)")
            return data
        data = data.astype(np.int64)
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    if data.size and int(data.min()) < 0:
        problems.append(f"{case}: {path} holds negative labels (min {int(data.min())})")
    return data
