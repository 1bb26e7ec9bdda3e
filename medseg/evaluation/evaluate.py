"""Evaluate a folder of predicted label maps against a folder of ground truths.

``evaluate_folders`` matches cases by id (file name without ``.nii``/``.nii.gz``), checks every
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
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from medseg.data.datalist import LabelSpec, parse_labels, read_meta
from medseg.errors import InputError
from medseg.evaluation.case import CaseTask, Structure, run_cases, spatial_shape
from medseg.evaluation.report import OverlaySpec, lesion_rows, render_report, summarise, worst_cases
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

AFFINE_TOLERANCE = 1e-4
CSV_COLUMNS: tuple[str, ...] = (
    "case", "label", "name", "situation", *METRIC_NAMES, "gt_voxels", "pred_voxels", "worst_distance_mm",
)
LESION_COLUMNS: tuple[str, ...] = (
    "case", "label", "name", "status", "ref_lesion", "pred_lesion", "volume_mm3", "ref_volume_mm3",
    "pred_volume_mm3", "iou", "dice", "hd95",
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
    regions: bool | Mapping[str, Sequence[int]] = False,
    dataset: str | Path | None = None,
    lesion_wise: bool = False,
    size_bins: Sequence[float] = DEFAULT_SIZE_BINS_MM3,
    iou_threshold: float = MATCH_IOU_THRESHOLD,
    lesion_worst_distance: float = BRATS_WORST_DISTANCE_MM,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    run_id: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Compute per-case, per-structure metrics and write ``metrics.csv``, ``summary.json``, ``report.html``.

    Args:
        pred_dir: folder of predicted label maps (``<case>.nii.gz``), integer labels.
        gt_dir: folder of ground-truth label maps with the same case ids.
        out_dir: output folder (created); existing outputs are replaced atomically.
        labels: foreground labels to evaluate; ``None``: every label of ``dataset.json`` except 0,
            else every nonzero label found in the data. Not combined with ``regions``.
        hd_convention: ``"monai"``, ``"medpy"`` or ``"surface_distance"`` (:mod:`medseg.metrics.segmentation`).
        nsd_tolerance: normalised surface Dice tolerance in mm.
        workers: processes computing cases in parallel (1 = in this process).
        image_dir: images for the worst-case overlays; ``None``: ``imagesTs``/``imagesTr`` next to
            ``gt_dir`` when it exists, else overlays show the masks only.
        percentile: HD percentile reported as ``hd95``.
        worst_distance: distance for a missed or hallucinated structure; ``None``: image diagonal (mm).
        n_worst: worst cases listed (and drawn) per structure.
        regions: ``True``: score the regions of ``dataset.json``; a mapping ``{name: label values}``:
            score these regions (output order = mapping order).
        dataset: the dataset folder or its ``dataset.json`` (names, labels, regions); ``None``: the
            first ``dataset.json`` in ``gt_dir`` or its two parents.
        lesion_wise: also match connected components (:mod:`medseg.metrics.lesion`) and write ``lesions.csv``.
        size_bins: lesion-size bin edges in mm^3 for the recall-by-size table.
        iou_threshold: lesion matching threshold (IoU >=, one-to-one maximum bipartite matching).
        lesion_worst_distance: HD95 in mm of a missed or spurious lesion (BraTS: 374).
        tracking_uri, experiment, run_id: log the evaluation to MLflow when any is given, through
            :func:`medseg.handlers.tracking.log_evaluation`: into run ``run_id`` or a new run of
            ``experiment`` (default ``medseg-evaluate``) in the store ``tracking_uri`` (default
            ``$MLFLOW_TRACKING_URI`` or ``sqlite:///./mlflow.db``, as ``medseg train``).
        progress: show a progress bar over cases.

    Returns:
        The summary dict written to ``summary.json`` plus ``"outputs"`` (paths of the files) and, when
        logged, ``"mlflow_run_id"`` / ``"mlflow_tracking_uri"`` (or ``"mlflow_error"``).

    Raises:
        InputError: missing folders, missing/extra cases, shape or affine mismatch, non-integer
            labels, a bad ``dataset.json`` or no regions in it -- every problem listed, nothing written.
        ValueError: a bad argument value (names the parameter and the value).
    """
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
    pred_dir, gt_dir, out_dir = Path(pred_dir), Path(gt_dir), Path(out_dir)
    pairs = _match_cases(pred_dir, gt_dir)
    spec = load_label_spec(gt_dir, dataset)
    structures, names = _structures(labels, regions, spec, gt_dir, dataset)
    if image_dir is not None and not Path(image_dir).is_dir():
        raise InputError(f"--images {image_dir}: not a directory")

    options = {"convention": hd_convention, "percentile": percentile, "nsd_tolerance": nsd_tolerance,
               "worst_distance": worst_distance}
    lesion_options = None
    if lesion_wise:
        lesion_options = {"iou_threshold": float(iou_threshold), "convention": hd_convention,
                          "percentile": percentile, "worst_distance": float(lesion_worst_distance)}
    tasks = [CaseTask(case, str(p), str(g), structures, options, lesion_options) for case, (p, g) in pairs.items()]
    results = run_cases(tasks, int(workers), progress)
    problems = [msg for res in results for msg in res["problems"]]
    if problems:
        raise InputError(f"cannot evaluate {pred_dir} against {gt_dir}: {len(problems)} problem(s)", problems)

    keys = [s.key for s in structures] if structures is not None else sorted(
        {k for res in results for k in res["metrics"]})
    rows = _rows(results, keys, names)
    summary = summarise(rows, keys, names, n_worst=n_worst)
    summary.update({
        "pred_dir": str(pred_dir), "gt_dir": str(gt_dir), "n_cases": len(results),
        "structures": "regions" if regions else "labels",
        "hd_convention": hd_convention, "hd_percentile": percentile, "nsd_tolerance_mm": nsd_tolerance,
        "worst_distance_mm": "image diagonal" if worst_distance is None else worst_distance,
        "empty_policy": EMPTY_POLICY,
    })
    if regions:
        summary["regions"] = {s.name: list(s.values) for s in structures or ()}
    applied = pred_dir / POSTPROCESSING_FILE  # written by medseg predict when it post-processed these masks
    summary["postprocessing"] = json.loads(applied.read_text(encoding="utf-8")) if applied.is_file() else None
    outputs = {"metrics_csv": out_dir / "metrics.csv", "summary_json": out_dir / "summary.json",
               "report_html": out_dir / "report.html"}
    table: list[dict[str, Any]] = []
    if lesion_wise:
        summary["lesion_settings"] = {
            "connectivity": "full (26-neighbourhood in 3D)", "matching": f"one-to-one maximum bipartite, IoU >= {iou_threshold}",
            "worst_distance_mm": float(lesion_worst_distance), "size_bins_mm3": [float(e) for e in size_bins]}
        per_key = {k: [res["lesions"].get(k, LesionResult((), float(lesion_worst_distance))) for res in results]
                   for k in keys}
        summary["lesions"] = {str(k): {"label": k, "name": names.get(k, f"label_{k}"),
                                       **summarise_lesions(per_key[k], size_bins)} for k in keys}
        table = lesion_rows(results, keys, names)
        outputs["lesions_csv"] = out_dir / "lesions.csv"
    values = {s.key: s.values for s in structures or ()}
    images = _find_image_dir(gt_dir, image_dir)
    overlays = [OverlaySpec(c, k, names.get(k, f"label_{k}"), pairs[c][1], pairs[c][0], _image_for(images, c),
                            values.get(k)) for k, c in worst_cases(summary)]
    html = render_report(summary, rows, overlays, table)
    atomic_write_text(outputs["metrics_csv"], _csv_text(rows, CSV_COLUMNS))
    atomic_write_text(outputs["summary_json"], json.dumps(summary, indent=2, allow_nan=False) + "\n")
    atomic_write_text(outputs["report_html"], html)
    if lesion_wise:
        atomic_write_text(outputs["lesions_csv"], _csv_text(table, LESION_COLUMNS))
    summary["outputs"] = {k: str(v) for k, v in outputs.items()}
    if tracking_uri is not None or experiment is not None or run_id is not None:
        _log_to_mlflow(summary, outputs, tracking_uri, experiment, run_id)
    return summary


def find_cases(folder: str | Path) -> dict[str, Path]:
    """``{case_id: path}`` of the NIfTI files in ``folder`` (case id = name without ``.nii``/``.nii.gz``)."""
    out: dict[str, Path] = {}
    for path in sorted(Path(folder).iterdir()):
        match = _NIFTI.match(path.name)
        if match and path.is_file() and not path.name.startswith("."):
            out[match.group("id")] = path
    return out


def find_dataset_json(gt_dir: str | Path) -> Path | None:
    """The first ``dataset.json`` in ``gt_dir`` or its two parents (``labelsTs/`` sits inside the dataset)."""
    start = Path(gt_dir).resolve()
    for folder in (start, start.parent, start.parent.parent):
        if (folder / "dataset.json").is_file():
            return folder / "dataset.json"
    return None


def load_label_spec(gt_dir: str | Path, dataset: str | Path | None = None) -> LabelSpec | None:
    """The label specification of ``dataset`` (folder or ``dataset.json``), else of :func:`find_dataset_json`.

    Returns ``None`` when no ``dataset.json`` is found; a malformed one raises ``InputError``.
    """
    source = Path(dataset) if dataset is not None else find_dataset_json(gt_dir)
    if source is None:
        return None
    path, meta = read_meta(source)
    return parse_labels(meta["labels"], path, meta.get("regions_class_order"))


def load_label_names(gt_dir: str | Path, dataset: str | Path | None = None) -> dict[int, str]:
    """Label value -> name from the dataset's ``dataset.json`` (``{}`` without one).

    With region labels, a value is named when a region covers it alone (``"enhancing_tumor": 3``).
    """
    spec = load_label_spec(gt_dir, dataset)
    if spec is None:
        return {}
    if spec.regions is None:
        return dict(spec.names)
    single = {vals[0]: name for name, vals in spec.regions.items() if len(vals) == 1}
    return {0: "background", **dict(sorted(single.items()))}


def _structures(labels: Sequence[int] | None, regions: bool | Mapping[str, Sequence[int]], spec: LabelSpec | None,
                gt_dir: Path, dataset: str | Path | None) -> tuple[tuple[Structure, ...] | None, dict[int, str]]:
    """What to score, and key -> name."""
    if regions:
        if labels is not None:
            raise InputError("--labels and --regions cannot be combined (--regions scores every region)")
        if isinstance(regions, Mapping):
            table = {str(k): tuple(int(v) for v in vals) for k, vals in regions.items()}
            if not table or any(not vals or min(vals) <= 0 for vals in table.values()):
                raise InputError(f"regions: need one or more regions of label values > 0, got {dict(regions)!r}")
        else:
            where = dataset if dataset is not None else find_dataset_json(gt_dir)
            if spec is None:
                raise InputError(f"--regions: no dataset.json in {gt_dir} or its two parents; pass --dataset")
            if spec.regions is None:
                raise InputError(f"--regions: {where} defines no region labels (nnU-Net v2 lists the values of a "
                                 "region, e.g. \"whole_tumor\": [1, 2, 3], with \"regions_class_order\")")
            table = dict(spec.regions)
        structures = tuple(Structure(i, name, vals) for i, (name, vals) in enumerate(table.items(), start=1))
        return structures, {s.key: s.name for s in structures}
    names = load_label_names(gt_dir, dataset) if spec is not None else {}
    if labels is not None:
        wanted = sorted({int(k) for k in labels})
        if not wanted or any(k < 0 for k in wanted):
            raise InputError(f"--labels: need one or more labels >= 0, got {list(labels)}")
    elif spec is not None:
        wanted = sorted(spec.label_values - {0})
    else:
        return None, names
    return tuple(Structure(k, names.get(k, f"label_{k}"), (k,)) for k in wanted), names


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
    p_shape, g_shape = spatial_shape(p_img.shape), spatial_shape(g_img.shape)
    if p_shape != g_shape:
        return [f"{case}: prediction {pred} has shape {p_shape}, ground truth {gt} has shape {g_shape}"]
    diff = float(np.max(np.abs(np.asarray(p_img.affine) - np.asarray(g_img.affine))))
    if diff > AFFINE_TOLERANCE:
        return [f"{case}: prediction {pred} affine differs from ground truth {gt} by up to {diff:.3g} "
                f"(tolerance {AFFINE_TOLERANCE})"]
    return []


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
