"""Evaluate a folder of predicted label maps against a folder of ground truths.

``evaluate_folders`` matches cases by id (file name without ``.nii``/``.nii.gz``; DICOM SEG files,
``<case>.seg.dcm``, are read on their counterpart's grid by :mod:`medseg.evaluation.seg_inputs`), checks every
prediction's shape and affine against its ground truth before computing or writing anything,
computes :mod:`medseg.metrics` per case and structure (in mm, from the GT header's spacing, across
worker processes), and writes ``metrics.csv``, ``summary.json`` and a self-contained
``report.html`` atomically into the output directory; with ``lesion_wise=True`` also
``lesions.csv`` (:mod:`medseg.metrics.lesion`).

Structures are label values (default) or, with ``regions``, the nnU-Net v2 regions of the
dataset's ``dataset.json`` (read by :mod:`medseg.data.datalist`, the one dataset reader): region
``k``'s mask is ``np.isin(label_map, regions[k])``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medseg.errors import InputError
from medseg.evaluation.case import CaseTask, Structure, run_cases
from medseg.evaluation.pairs import (
    find_cases,
    find_dataset_json,
    find_image_dir,
    image_for,
    load_label_names,
    load_label_spec,
    match_cases,
    structures_to_score,
)
from medseg.evaluation.report import OverlaySpec, lesion_rows, render_report, summarise, worst_cases
from medseg.evaluation.seg_inputs import seg_views
from medseg.metrics import CONVENTIONS, EMPTY_POLICY, METRIC_NAMES
from medseg.metrics.lesion import (
    BRATS_WORST_DISTANCE_MM,
    DEFAULT_SIZE_BINS_MM3,
    MATCH_IOU_THRESHOLD,
    LesionResult,
    size_bin_names,
    summarise_lesions,
)
from medseg.utils.files import atomic_write_text
from medseg.utils.rundir import POSTPROCESSING_FILE

__all__ = ["evaluate_folders", "find_cases", "find_dataset_json", "load_label_spec", "load_label_names",
           "CSV_COLUMNS", "LESION_COLUMNS"]

logger = logging.getLogger(__name__)

CSV_COLUMNS: tuple[str, ...] = (
    "case", "label", "name", "situation", *METRIC_NAMES, "gt_voxels", "pred_voxels", "worst_distance_mm",
)
LESION_COLUMNS: tuple[str, ...] = (
    "case", "label", "name", "status", "ref_lesion", "pred_lesion", "volume_mm3", "ref_volume_mm3",
    "pred_volume_mm3", "iou", "dice", "hd95",
)


def evaluate_folders(
    pred_dir: str | Path, gt_dir: str | Path, out_dir: str | Path, labels: Sequence[int] | None = None,
    hd_convention: str = "monai", nsd_tolerance: float = 1.0, workers: int = 1, image_dir: str | Path | None = None,
    *, percentile: float = 95.0, worst_distance: float | None = None, n_worst: int = 3,
    regions: bool | Mapping[str, Sequence[int]] = False, dataset: str | Path | None = None, lesion_wise: bool = False,
    size_bins: Sequence[float] = DEFAULT_SIZE_BINS_MM3, iou_threshold: float = MATCH_IOU_THRESHOLD,
    lesion_worst_distance: float = BRATS_WORST_DISTANCE_MM, tracking_uri: str | None = None,
    experiment: str | None = None, run_id: str | None = None, progress: bool = True,
) -> dict[str, Any]:
    """Compute per-case, per-structure metrics and write ``metrics.csv``, ``summary.json``, ``report.html``.

    Steps: list and check the pairs, score the cases (in ``workers`` processes), summarise, write, log.

    Args:
        pred_dir, gt_dir: folders of predicted and ground-truth label maps (``<case>.nii.gz``, integer labels),
            or of DICOM SEG files (or one SEG file), each lying on its counterpart's voxel grid.
        out_dir: output folder (created); existing outputs are replaced atomically.
        labels: foreground labels to evaluate; ``None``: every label of ``dataset.json`` except 0,
            else every nonzero label found in the data. Not combined with ``regions``.
        hd_convention: ``"monai"``, ``"medpy"`` or ``"surface_distance"`` (:mod:`medseg.metrics.segmentation`).
        nsd_tolerance: normalised surface Dice tolerance in mm.
        workers: processes computing cases in parallel (1 = in this process).
        image_dir: images for the worst-case overlays; ``None``: ``imagesTs``/``imagesTr`` next to ``gt_dir``.
        percentile: HD percentile reported as ``hd95``.
        worst_distance: distance for a missed or hallucinated structure; ``None``: image diagonal (mm).
        n_worst: worst cases listed (and drawn) per structure.
        regions: ``True``: the regions of ``dataset.json``; a mapping ``{name: label values}``: these regions.
        dataset: the dataset folder or its ``dataset.json``; ``None``: the first one in ``gt_dir`` or its parents.
        lesion_wise: also match connected components (:mod:`medseg.metrics.lesion`), write ``lesions.csv``.
        size_bins: lesion-size bin edges in mm^3; iou_threshold: lesion matching threshold (IoU >=,
            one-to-one maximum bipartite matching); lesion_worst_distance: HD95 of a missed lesion (BraTS: 374).
        tracking_uri, experiment, run_id: log to MLflow when any is given (:func:`medseg.handlers.tracking.log_evaluation`).
        progress: show a progress bar over cases.

    Returns:
        The summary written to ``summary.json`` plus ``"outputs"`` and, when logged, ``"mlflow_run_id"`` /
        ``"mlflow_tracking_uri"`` (or ``"mlflow_error"``).

    Raises:
        InputError: missing folders or cases, shape or affine mismatch, non-integer labels, a bad
            ``dataset.json`` -- every problem listed, nothing written.
        ValueError: a bad argument value (names the parameter and the value).
    """
    _check_arguments(hd_convention, nsd_tolerance, workers, lesion_wise, size_bins, iou_threshold)
    pred_dir, gt_dir, out_dir = Path(pred_dir), Path(gt_dir), Path(out_dir)
    views = seg_views(pred_dir, gt_dir, load_label_spec(gt_dir, dataset))  # DICOM SEG cases as NIfTI label maps
    pairs = match_cases(views.pred, views.gt)
    structures, names = structures_to_score(labels, regions, load_label_spec(gt_dir, dataset), gt_dir, dataset)
    if image_dir is not None and not Path(image_dir).is_dir():
        raise InputError(f"--images {image_dir}: not a directory")
    options = {"convention": hd_convention, "percentile": percentile, "nsd_tolerance": nsd_tolerance,
               "worst_distance": worst_distance}
    lesion_options = {"iou_threshold": float(iou_threshold), "convention": hd_convention, "percentile": percentile,
                      "worst_distance": float(lesion_worst_distance)} if lesion_wise else None
    results = _score_cases(pairs, structures, options, lesion_options, int(workers), progress,
                           f"cannot evaluate {pred_dir} against {gt_dir}")
    keys = [s.key for s in structures] if structures is not None else sorted(
        {k for res in results for k in res["metrics"]})
    rows = _rows(results, keys, names)
    summary = _summary(rows, keys, names, n_worst, pred_dir, gt_dir, structures, options, bool(regions), len(results))
    table = _lesion_summary(summary, results, keys, names, lesion_options, size_bins) if lesion_options else None
    values = {s.key: s.values for s in structures or ()}
    images = find_image_dir(gt_dir, image_dir)
    overlays = [OverlaySpec(c, k, names.get(k, f"label_{k}"), pairs[c][1], pairs[c][0], image_for(images, c),
                            values.get(k)) for k, c in worst_cases(summary)]
    outputs = _write(out_dir, summary, rows, table, render_report(summary, rows, overlays, table or []))
    summary["outputs"] = {k: str(v) for k, v in outputs.items()}
    if tracking_uri is not None or experiment is not None or run_id is not None:
        _log_to_mlflow(summary, outputs, tracking_uri, experiment, run_id)
    return summary


def _check_arguments(hd_convention: str, nsd_tolerance: float, workers: int, lesion_wise: bool,
                     size_bins: Sequence[float], iou_threshold: float) -> None:
    if hd_convention not in CONVENTIONS:
        raise ValueError(f"hd_convention must be one of {list(CONVENTIONS)}, got {hd_convention!r}")
    if not (math.isfinite(nsd_tolerance) and nsd_tolerance >= 0):
        raise ValueError(f"nsd_tolerance must be a finite distance >= 0 mm, got {nsd_tolerance!r}")
    if int(workers) < 1:
        raise ValueError(f"workers must be >= 1, got {workers!r}")
    if lesion_wise:
        size_bin_names(size_bins)  # validates the edges before any work
        if not 0.0 < float(iou_threshold) <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold!r}")


def _score_cases(pairs: dict[str, tuple[Path, Path]], structures: tuple[Structure, ...] | None,
                 options: dict[str, Any], lesion_options: dict[str, Any] | None, workers: int,
                 progress: bool, refusal: str) -> list[dict[str, Any]]:
    """Metrics of every case (in ``workers`` processes); a problem in any case refuses the whole evaluation."""
    tasks = [CaseTask(case, str(p), str(g), structures, options, lesion_options) for case, (p, g) in pairs.items()]
    results = run_cases(tasks, workers, progress)
    problems = [msg for res in results for msg in res["problems"]]
    if problems:
        raise InputError(f"{refusal}: {len(problems)} problem(s)", problems)
    return results


def _summary(rows: list[dict[str, Any]], keys: Sequence[int], names: dict[int, str], n_worst: int, pred_dir: Path,
             gt_dir: Path, structures: tuple[Structure, ...] | None, options: dict[str, Any], regions: bool,
             n_cases: int) -> dict[str, Any]:
    summary = summarise(rows, keys, names, n_worst=n_worst)
    worst = options["worst_distance"]
    summary.update({
        "pred_dir": str(pred_dir), "gt_dir": str(gt_dir), "n_cases": n_cases,
        "structures": "regions" if regions else "labels",
        "hd_convention": options["convention"], "hd_percentile": options["percentile"],
        "nsd_tolerance_mm": options["nsd_tolerance"],
        "worst_distance_mm": "image diagonal" if worst is None else worst,
        "empty_policy": EMPTY_POLICY,
    })
    if regions:
        summary["regions"] = {s.name: list(s.values) for s in structures or ()}
    applied = pred_dir / POSTPROCESSING_FILE  # written by medseg predict when it post-processed these masks
    summary["postprocessing"] = json.loads(applied.read_text(encoding="utf-8")) if applied.is_file() else None
    return summary


def _lesion_summary(summary: dict[str, Any], results: list[dict[str, Any]], keys: Sequence[int],
                    names: dict[int, str], lesion_options: dict[str, Any],
                    size_bins: Sequence[float]) -> list[dict[str, Any]]:
    """Adds the lesion-wise settings and summary per structure; returns the ``lesions.csv`` rows."""
    worst = lesion_options["worst_distance"]
    summary["lesion_settings"] = {
        "connectivity": "full (26-neighbourhood in 3D)",
        "matching": f"one-to-one maximum bipartite, IoU >= {lesion_options['iou_threshold']}",
        "worst_distance_mm": worst, "size_bins_mm3": [float(e) for e in size_bins]}
    per_key = {k: [res["lesions"].get(k, LesionResult((), worst)) for res in results] for k in keys}
    summary["lesions"] = {str(k): {"label": k, "name": names.get(k, f"label_{k}"),
                                   **summarise_lesions(per_key[k], size_bins)} for k in keys}
    return lesion_rows(results, keys, names)


def _write(out_dir: Path, summary: dict[str, Any], rows: list[dict[str, Any]],
           table: list[dict[str, Any]] | None, html: str) -> dict[str, Path]:
    outputs = {"metrics_csv": out_dir / "metrics.csv", "summary_json": out_dir / "summary.json",
               "report_html": out_dir / "report.html"}
    if table is not None:
        outputs["lesions_csv"] = out_dir / "lesions.csv"
    atomic_write_text(outputs["metrics_csv"], _csv_text(rows, CSV_COLUMNS))
    atomic_write_text(outputs["summary_json"], json.dumps(summary, indent=2, allow_nan=False) + "\n")
    atomic_write_text(outputs["report_html"], html)
    if table is not None:
        atomic_write_text(outputs["lesions_csv"], _csv_text(table, LESION_COLUMNS))
    return outputs


def _rows(results: list[dict[str, Any]], keys: Sequence[int], names: dict[int, str]) -> list[dict[str, Any]]:
    rows = []
    for res in results:
        for k in keys:
            m = res["metrics"].get(k)
            if m is None:  # label absent in both maps of this case (labels discovered from the data)
                worst = next(iter(res["metrics"].values()), {}).get("worst_distance", 0.0)
                m = {"situation": "both_empty", "gt_voxels": 0, "pred_voxels": 0, "worst_distance": worst,
                     **{name: float(v) for name, v in EMPTY_POLICY["both_empty"].items()}}
            rows.append({"case": res["case"], "label": k, "name": names.get(k, f"label_{k}"),
                         "situation": m["situation"], **{name: m[name] for name in METRIC_NAMES},
                         "gt_voxels": m["gt_voxels"], "pred_voxels": m["pred_voxels"],
                         "worst_distance_mm": m["worst_distance"]})
    return rows


def _csv_text(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else ("" if v is None else v)) for k, v in row.items()})
    return buffer.getvalue()


def _log_to_mlflow(summary: dict[str, Any], outputs: dict[str, Path], tracking_uri: str | None,
                   experiment: str | None, run_id: str | None) -> None:
    from medseg.handlers.tracking import default_tracking_uri, log_evaluation

    uri = tracking_uri or default_tracking_uri()
    try:
        summary["mlflow_run_id"] = log_evaluation(summary, outputs, uri, run_id=run_id, experiment=experiment)
        summary["mlflow_tracking_uri"] = uri
    except Exception as exc:  # noqa: BLE001 - the files are written; report the tracking failure
        message = str(exc).splitlines()[0][:300] if str(exc) else ""
        summary["mlflow_error"] = f"{uri}: {type(exc).__name__}: {message}"
        logger.warning("evaluation not logged to MLflow: %s", summary["mlflow_error"])
