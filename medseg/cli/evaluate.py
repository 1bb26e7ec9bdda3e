"""Evaluate predicted label maps against ground truth: Dice, IoU, HD95, ASSD, NSD in mm, with a report.

Cases are matched by file name (case_001.nii.gz). Writes OUT/metrics.csv (one row per case and
class or region), OUT/summary.json (per-class statistics and empty-mask counts) and OUT/report.html
(self-contained, with plots); --lesion-wise adds OUT/lesions.csv (one row per lesion) and the
detection tables. Shape/affine mismatches and missing cases are listed and nothing is written
(exit code 2).
"""

from __future__ import annotations

import argparse
import sys

from medseg.errors import InputError

__all__ = ["add_arguments", "run", "HD_CONVENTIONS", "MATCH_IOU", "LESION_WORST_MM", "SIZE_BINS_MM3"]

# spelled out so that `medseg --help` does not import scipy; a test keeps it equal to
# medseg.metrics.CONVENTIONS
HD_CONVENTIONS = ("monai", "medpy", "surface_distance")
# likewise medseg.metrics.lesion's MATCH_IOU_THRESHOLD, BRATS_WORST_DISTANCE_MM, DEFAULT_SIZE_BINS_MM3
MATCH_IOU = 0.5
LESION_WORST_MM = 374.0
SIZE_BINS_MM3 = (10.0, 100.0, 1000.0, 10000.0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Define ``medseg evaluate``'s arguments."""
    parser.add_argument("pred_dir", metavar="PRED_DIR", help="folder of predicted label maps (*.nii.gz) or of DICOM "
                        "SEG files (<case>.seg.dcm), or one SEG file")
    parser.add_argument("gt_dir", metavar="GT_DIR", help="folder of ground-truth label maps (NIfTI or DICOM SEG) with "
                        "the same case names; a SEG must lie on the grid of its counterpart (nothing is resampled)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder for metrics.csv, summary.json, report.html")
    parser.add_argument("--labels", type=int, nargs="+", metavar="K",
                        help="foreground labels to evaluate (default: dataset.json labels, else those found)")
    parser.add_argument("--hd-convention", choices=HD_CONVENTIONS, default="monai",
                        help="surface/percentile convention of HD95, ASSD and NSD (default: monai)")
    parser.add_argument("--nsd-tolerance", type=float, default=1.0, metavar="MM",
                        help="normalised surface Dice tolerance in mm (default: 1.0)")
    parser.add_argument("--worst-distance", type=float, default=None, metavar="MM",
                        help="distance reported for a missed or spurious structure (default: image diagonal)")
    parser.add_argument("--workers", type=int, default=1, metavar="N", help="parallel processes (default: 1)")
    parser.add_argument("--images", default=None, metavar="DIR",
                        help="images for worst-case overlays (default: imagesTs/imagesTr next to GT_DIR)")
    parser.add_argument("--dataset", default=None, metavar="PATH",
                        help="dataset folder or dataset.json giving label names and regions (default: the first "
                             "dataset.json in GT_DIR or its two parents)")
    parser.add_argument("--regions", action="store_true",
                        help="score the nnU-Net v2 regions of dataset.json (e.g. whole_tumor = labels 1,2,3) "
                             "instead of single labels")
    parser.add_argument("--lesion-wise", action="store_true",
                        help="also match connected components (26-connected) one-to-one by IoU and write lesions.csv "
                             "with detection (TP/FP/FN, F1, recall by size) and BraTS lesion-wise Dice/HD95")
    parser.add_argument("--size-bins", type=float, nargs="+", default=None, metavar="MM3",
                        help="lesion-size bin edges in mm^3 for recall by size (default: "
                             f"{' '.join(f'{b:g}' for b in SIZE_BINS_MM3)})")
    parser.add_argument("--match-iou", type=float, default=MATCH_IOU, metavar="X",
                        help=f"lesion matching threshold: IoU >= X (default {MATCH_IOU:g}, as panoptica)")
    parser.add_argument("--lesion-worst-distance", type=float, default=LESION_WORST_MM, metavar="MM",
                        help=f"HD95 of a missed or spurious lesion (default {LESION_WORST_MM:g} mm, as BraTS 2023)")
    parser.add_argument("--tracking-uri", default=None, metavar="URI",
                        help="log the evaluation to this MLflow store (as medseg train: default $MLFLOW_TRACKING_URI "
                             "or sqlite:///./mlflow.db); logging happens when --tracking-uri, --experiment or "
                             "--run-id is given")
    parser.add_argument("--experiment", default=None, metavar="NAME",
                        help="MLflow experiment of a new evaluation run (default: medseg-evaluate)")
    parser.add_argument("--run-id", default=None, metavar="ID",
                        help="log into this existing MLflow run (e.g. the training run) instead of a new one")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    """Run the evaluation and print a short per-class summary."""
    from medseg.evaluation.evaluate import evaluate_folders

    if args.workers < 1:
        raise InputError(f"--workers must be >= 1, got {args.workers}")
    if args.nsd_tolerance < 0:
        raise InputError(f"--nsd-tolerance must be >= 0 mm, got {args.nsd_tolerance}")
    if args.worst_distance is not None and args.worst_distance < 0:
        raise InputError(f"--worst-distance must be >= 0 mm, got {args.worst_distance}")
    if not 0 < args.match_iou <= 1:
        raise InputError(f"--match-iou must be in (0, 1], got {args.match_iou}")
    if args.lesion_worst_distance < 0:
        raise InputError(f"--lesion-worst-distance must be >= 0 mm, got {args.lesion_worst_distance}")
    bins = args.size_bins
    if bins is not None and (any(b <= 0 for b in bins) or any(b >= c for b, c in zip(bins, bins[1:], strict=False))):
        raise InputError(f"--size-bins must be increasing volumes > 0 mm^3, got {bins}")
    summary = evaluate_folders(
        args.pred_dir, args.gt_dir, args.out, labels=args.labels, hd_convention=args.hd_convention,
        nsd_tolerance=args.nsd_tolerance, workers=args.workers, image_dir=args.images,
        worst_distance=args.worst_distance, regions=args.regions, dataset=args.dataset,
        lesion_wise=args.lesion_wise, iou_threshold=args.match_iou, lesion_worst_distance=args.lesion_worst_distance,
        tracking_uri=args.tracking_uri, experiment=args.experiment, run_id=args.run_id,
        progress=not args.no_progress, size_bins=SIZE_BINS_MM3 if bins is None else bins,
    )
    print(f"evaluated {summary['n_cases']} cases (HD convention: {summary['hd_convention']})")
    for entry in summary["classes"].values():
        m, c = entry["metrics"], entry["empty_counts"]
        print(f"  {entry['label']} {entry['name']:<14} Dice {_f(m['dice']['mean'])}  IoU {_f(m['iou']['mean'])}  "
              f"HD95 {_f(m['hd95']['mean'])} mm  NSD {_f(m['nsd']['mean'])}  "
              f"(missed {c['pred_empty']}, spurious {c['gt_empty']}, both empty {c['both_empty']})")
    for entry in (summary.get("lesions") or {}).values():
        print(f"  {entry['label']} {entry['name']:<14} lesions: TP {entry['tp']}  FP {entry['fp']}  FN {entry['fn']}  "
              f"F1 {_f(entry['f1'])}  lesion Dice {_f(entry['lesion_dice'])}  lesion HD95 {_f(entry['lesion_hd95'])} mm")
    for key, path in summary["outputs"].items():
        print(f"  {key}: {path}")
    if "mlflow_run_id" in summary:
        print(f"  MLflow run: {summary['mlflow_run_id']} in {summary['mlflow_tracking_uri']}")
    if "mlflow_error" in summary:
        print(f"medseg evaluate: error: not logged to MLflow: {summary['mlflow_error']}", file=sys.stderr)
        return 1
    return 0


def _f(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
