"""Evaluate a folder of predicted label maps against a folder of ground truths.

``evaluate_folders`` matches cases by id (file name without ``.nii``/``.nii.gz``), checks every
prediction's shape and affine against its ground truth before computing or writing anything,
computes :mod:`medseg.metrics` per case and class (in mm, from the GT header's spacing, across
worker processes), and writes ``metrics.csv``, ``summary.json`` and a self-contained
``report.html`` atomically into the output directory.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from tqdm.auto import tqdm

from medseg.engine.report import OverlaySpec, render_report, summarise, worst_cases
from medseg.errors import InputError
from medseg.metrics import CONVENTIONS, EMPTY_POLICY, METRIC_NAMES, compute_metrics
from medseg.utils.files import atomic_write_text

__all__ = ["evaluate_folders", "find_cases", "load_label_names", "CSV_COLUMNS"]

logger = logging.getLogger(__name__)

AFFINE_TOLERANCE = 1e-4
CSV_COLUMNS: tuple[str, ...] = (
    "case", "label", "name", "situation", *METRIC_NAMES, "gt_voxels", "pred_voxels", "worst_distance_mm",
)
_NIFTI = re.compile(r"^(?P<id>.+?)\.nii(\.gz)?$")


def evaluate_folders(
    pred_dir: str | Path,
    gt_dir: str | Path,
    out_dir: str | Path,
    labels: Sequence[int] | None = None,
    hd_convention: str = "monai",
    nsd_tolerance: float = 1.0,
    workers: int = 1,
    image_dir: str | Path | None = None,
    *,
    percentile: float = 95.0,
    worst_distance: float | None = None,
    n_worst: int = 3,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Compute per-case, per-class metrics and write ``metrics.csv``, ``summary.json``, ``report.html``.

    Args:
        pred_dir: folder of predicted label maps (``<case>.nii.gz``), integer labels.
        gt_dir: folder of ground-truth label maps with the same case ids.
        out_dir: output folder (created); existing outputs are replaced atomically.
        labels: foreground labels to evaluate; ``None``: every label of ``dataset.json`` (found
            in or above ``gt_dir``) except 0, else every nonzero label found in the data.
        hd_convention: ``"monai"``, ``"medpy"`` or ``"surface_distance"`` (:mod:`medseg.metrics.segmentation`).
        nsd_tolerance: normalised surface Dice tolerance in mm.
        workers: processes computing cases in parallel (1 = in this process).
        image_dir: images for the worst-case overlays; ``None``: ``imagesTs``/``imagesTr`` next to
            ``gt_dir`` when it exists, else overlays show the masks only.
        percentile: HD percentile reported as ``hd95``.
        worst_distance: distance for a missed or hallucinated structure; ``None``: image diagonal (mm).
        n_worst: worst cases listed (and drawn) per class.
        tracking_uri: when given (or when an MLflow run is active), log summary metrics and the
            three files to MLflow; ``experiment`` names the experiment.
        progress: show a progress bar over cases.

    Returns:
        The summary dict written to ``summary.json`` plus ``"outputs"`` (paths of the three files).

    Raises:
        InputError: missing folders, missing/extra cases, shape or affine mismatch, non-integer
            labels -- every problem listed, nothing written.
        ValueError: a bad argument value (names the parameter and the value).
    """
    if hd_convention not in CONVENTIONS:
        raise ValueError(f"hd_convention must be one of {list(CONVENTIONS)}, got {hd_convention!r}")
    if not (math.isfinite(nsd_tolerance) and nsd_tolerance >= 0):
        raise ValueError(f"nsd_tolerance must be a finite distance >= 0 mm, got {nsd_tolerance!r}")
    if int(workers) < 1:
        raise ValueError(f"workers must be >= 1, got {workers!r}")
    pred_dir, gt_dir, out_dir = Path(pred_dir), Path(gt_dir), Path(out_dir)
    pairs = _match_cases(pred_dir, gt_dir)
    names = load_label_names(gt_dir)
    wanted = _resolve_labels(labels, names)
    if image_dir is not None and not Path(image_dir).is_dir():
        raise InputError(f"--images {image_dir}: not a directory")

    options = {"convention": hd_convention, "percentile": percentile, "nsd_tolerance": nsd_tolerance,
               "worst_distance": worst_distance}
    tasks = [(case, str(p), str(g), wanted, options) for case, (p, g) in pairs.items()]
    results = _run_cases(tasks, int(workers), progress)
    problems = [msg for res in results for msg in res["problems"]]
    if problems:
        raise InputError(f"cannot evaluate {pred_dir} against {gt_dir}: {len(problems)} problem(s)", problems)

    all_labels = wanted if wanted is not None else sorted({k for res in results for k in res["metrics"]})
    rows = _rows(results, all_labels, names)
    summary = summarise(rows, all_labels, names, n_worst=n_worst)
    summary.update({
        "pred_dir": str(pred_dir), "gt_dir": str(gt_dir), "n_cases": len(results),
        "hd_convention": hd_convention, "hd_percentile": percentile, "nsd_tolerance_mm": nsd_tolerance,
        "worst_distance_mm": "image diagonal" if worst_distance is None else worst_distance,
        "empty_policy": EMPTY_POLICY,
    })
    images = _find_image_dir(gt_dir, image_dir)
    overlays = [OverlaySpec(c, k, names.get(k, f"label_{k}"), pairs[c][1], pairs[c][0], _image_for(images, c))
                for k, c in worst_cases(summary)]
    html = render_report(summary, rows, overlays)
    outputs = {"metrics_csv": out_dir / "metrics.csv", "summary_json": out_dir / "summary.json",
               "report_html": out_dir / "report.html"}
    atomic_write_text(outputs["metrics_csv"], _csv_text(rows))
    atomic_write_text(outputs["summary_json"], json.dumps(summary, indent=2, allow_nan=False) + "\n")
    atomic_write_text(outputs["report_html"], html)
    summary["outputs"] = {k: str(v) for k, v in outputs.items()}
    _log_mlflow(summary, outputs, tracking_uri, experiment)
    return summary


def find_cases(folder: str | Path) -> dict[str, Path]:
    """``{case_id: path}`` of the NIfTI files in ``folder`` (case id = name without ``.nii``/``.nii.gz``)."""
    out: dict[str, Path] = {}
    for path in sorted(Path(folder).iterdir()):
        match = _NIFTI.match(path.name)
        if match and path.is_file() and not path.name.startswith("."):
            out[match.group("id")] = path
    return out


def load_label_names(gt_dir: str | Path) -> dict[int, str]:
    """Label names from the first ``dataset.json`` in ``gt_dir`` or its two parents (MSD or nnU-Net v2 style).

    MSD: ``{"labels": {"0": "background", "1": "liver"}}``; nnU-Net v2:
    ``{"labels": {"background": 0, "liver": 1}}`` (region lists use their first label).
    Returns ``{}`` when there is none; a malformed file is reported, not ignored.
    """
    start = Path(gt_dir).resolve()
    for folder in (start, start.parent, start.parent.parent):
        path = folder / "dataset.json"
        if not path.is_file():
            continue
        try:
            raw = json.loads(path.read_text(encoding="utf-8")).get("labels", {})
            names: dict[int, str] = {}
            for key, value in raw.items():
                if str(key).lstrip("-").isdigit():
                    names[int(key)] = str(value)
                else:
                    value = value[0] if isinstance(value, list) else value
                    names[int(value)] = str(key)
            return names
        except (ValueError, TypeError, AttributeError, IndexError) as exc:
            raise InputError(f"{path}: cannot read the 'labels' field ({exc})") from None
    return {}


def _resolve_labels(labels: Sequence[int] | None, names: dict[int, str]) -> list[int] | None:
    if labels is not None:
        wanted = sorted({int(k) for k in labels})
        if not wanted or any(k < 0 for k in wanted):
            raise InputError(f"--labels: need one or more labels >= 0, got {list(labels)}")
        return wanted
    from_json = sorted(k for k in names if k != 0)
    return from_json or None


def _match_cases(pred_dir: Path, gt_dir: Path) -> dict[str, tuple[Path, Path]]:
    for flag, folder in (("PRED_DIR", pred_dir), ("GT_DIR", gt_dir)):
        if not folder.is_dir():
            raise InputError(f"{flag} {folder}: not a directory")
    preds, gts = find_cases(pred_dir), find_cases(gt_dir)
    problems: list[str] = []
    if not gts:
        problems.append(f"{gt_dir}: no ground-truth NIfTI files (*.nii, *.nii.gz)")
    problems += [f"{case}: no prediction in {pred_dir} for ground truth {gts[case]}" for case in sorted(set(gts) - set(preds))]
    problems += [f"{case}: prediction {preds[case]} has no ground truth in {gt_dir}" for case in sorted(set(preds) - set(gts))]
    pairs = {case: (preds[case], gts[case]) for case in sorted(set(preds) & set(gts))}
    for case, (pred, gt) in pairs.items():
        problems += _geometry_problems(case, pred, gt)
    if problems:
        raise InputError(f"cannot evaluate {pred_dir} against {gt_dir}: {len(problems)} problem(s)", problems)
    return pairs


def _geometry_problems(case: str, pred: Path, gt: Path) -> list[str]:
    try:
        p_img, g_img = nib.load(str(pred)), nib.load(str(gt))
    except Exception as exc:  # nibabel raises several types for unreadable files
        return [f"{case}: cannot read {pred} or {gt} as NIfTI ({type(exc).__name__}: {exc})"]
    p_shape, g_shape = _spatial_shape(p_img.shape), _spatial_shape(g_img.shape)
    if p_shape != g_shape:
        return [f"{case}: prediction {pred} has shape {p_shape}, ground truth {gt} has shape {g_shape}"]
    diff = float(np.max(np.abs(np.asarray(p_img.affine) - np.asarray(g_img.affine))))
    if diff > AFFINE_TOLERANCE:
        return [f"{case}: prediction {pred} affine differs from ground truth {gt} by up to {diff:.3g} "
                f"(tolerance {AFFINE_TOLERANCE})"]
    return []


def _spatial_shape(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(n) for n in shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def _evaluate_case(task: tuple[str, str, str, list[int] | None, dict[str, Any]]) -> dict[str, Any]:
    case, pred_path, gt_path, labels, options = task
    problems: list[str] = []
    pred_img, gt_img = nib.load(pred_path), nib.load(gt_path)
    pred = _labels_array(np.asanyarray(pred_img.dataobj), case, pred_path, problems)
    gt = _labels_array(np.asanyarray(gt_img.dataobj), case, gt_path, problems)
    if problems:
        return {"case": case, "problems": problems, "metrics": {}}
    spacing = np.linalg.norm(np.asarray(gt_img.affine)[: gt.ndim, : gt.ndim], axis=0)
    result = compute_metrics(pred, gt, tuple(float(s) for s in spacing), labels, **options)
    return {"case": case, "problems": [], "metrics": {k: m.as_dict() for k, m in result.items()}}


def _labels_array(data: np.ndarray, case: str, path: str, problems: list[str]) -> np.ndarray:
    data = data.reshape(_spatial_shape(data.shape))
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


def _run_cases(tasks: list[Any], workers: int, progress: bool) -> list[dict[str, Any]]:
    bar = tqdm(total=len(tasks), desc="evaluate", unit="case", disable=not progress)
    results: list[dict[str, Any]] = []
    try:
        if workers == 1 or len(tasks) < 2:
            for task in tasks:
                results.append(_evaluate_case(task))
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=get_context("spawn")) as pool:
                for res in pool.map(_evaluate_case, tasks, chunksize=1):
                    results.append(res)
                    bar.update()
    finally:
        bar.close()
    return results


def _rows(results: list[dict[str, Any]], labels: Iterable[int], names: dict[int, str]) -> list[dict[str, Any]]:
    rows = []
    for res in results:
        for k in labels:
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


def _csv_text(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def _find_image_dir(gt_dir: Path, image_dir: str | Path | None) -> Path | None:
    if image_dir is not None:
        return Path(image_dir)
    guess = gt_dir.parent / gt_dir.name.replace("labels", "images")
    return guess if guess != gt_dir and guess.is_dir() else None


def _image_for(images: Path | None, case: str) -> Path | None:
    if images is None:
        return None
    for name in (f"{case}.nii.gz", f"{case}.nii", f"{case}_0000.nii.gz", f"{case}_0000.nii"):
        if (images / name).is_file():
            return images / name
    return None


def _log_mlflow(summary: dict[str, Any], outputs: dict[str, Path], tracking_uri: str | None,
                experiment: str | None) -> None:
    import sys

    if tracking_uri is None and "mlflow" not in sys.modules:
        return
    import mlflow

    if tracking_uri is None and mlflow.active_run() is None:
        return
    metrics: dict[str, float] = {}
    for entry in summary["classes"].values():
        for name, stats in entry["metrics"].items():
            if stats["mean"] is not None:
                metrics[f"eval_{name}_{entry['name']}"] = float(stats["mean"])
    for name, value in summary["mean_foreground"].items():
        if value is not None:
            metrics[f"eval_mean_{name}"] = float(value)
    active = mlflow.active_run()
    if active is not None and tracking_uri is None:  # evaluation inside a training run
        _log_to_run(mlflow, metrics, outputs, summary)
        summary["mlflow_run_id"] = active.info.run_id
        return
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)
    try:
        mlflow.set_experiment(experiment or "medseg-evaluate")
        with mlflow.start_run(run_name="evaluate", nested=active is not None) as run:
            _log_to_run(mlflow, metrics, outputs, summary)
            summary["mlflow_run_id"] = run.info.run_id
            summary["mlflow_tracking_uri"] = tracking_uri
    finally:
        mlflow.set_tracking_uri(previous)


def _log_to_run(mlflow: Any, metrics: dict[str, float], outputs: dict[str, Path], summary: dict[str, Any]) -> None:
    mlflow.log_params({"eval_hd_convention": summary["hd_convention"], "eval_nsd_tolerance_mm": summary["nsd_tolerance_mm"],
                       "eval_n_cases": summary["n_cases"]})
    mlflow.log_metrics(metrics)
    for path in outputs.values():
        mlflow.log_artifact(str(path), artifact_path="evaluation")
