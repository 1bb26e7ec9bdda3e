"""Robustness check: predict a labelled test set under a fixed battery of acquisition shifts and score each.

Shifts (medseg.evaluation.robustness): intensity offset, contrast, noise, blur, thicker slices and,
for MRI, a bias field, each at a stated strength. Every shifted image keeps its input's affine. Writes
OUT/robustness.json, robustness.md, robustness.png and robustness.html, the shifted images, predictions
and per-shift evaluations, and prints the table: Dice and HD95 per class and shift beside the unshifted
scores.
"""

from __future__ import annotations

import argparse

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, nargs="+", metavar="RUN",
                        help="training run directory or checkpoint file (.pt); several: an ensemble")
    parser.add_argument("--images", required=True, metavar="DIR", help="folder of test images (NIfTI)")
    parser.add_argument("--labels", required=True, metavar="DIR", help="folder of their label maps (same names)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder for the report and predictions")
    parser.add_argument("--shifts", default=None, metavar="A,B",
                        help="comma-separated subset: offset, contrast, noise, blur, thick_slices, bias_field "
                        "(MRI); default every shift for the model's modality")
    parser.add_argument("--modality", choices=("CT", "MR"), default=None,
                        help="battery to apply (default: from the model's channels)")
    parser.add_argument("--dataset", default=None, metavar="PATH",
                        help="dataset folder or dataset.json naming the labels (default: one beside --labels, "
                        "else the model's label names)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise and bias-field draws (default 0)")
    parser.add_argument("--workers", type=int, default=1, metavar="N", help="evaluation processes (default 1)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from medseg.errors import InputError
    from medseg.evaluation.robustness import run_robustness
    from medseg.evaluation.robustness_report import text_table

    if args.workers < 1:
        raise InputError(f"--workers must be >= 1, got {args.workers}")
    if not Path(args.labels).is_dir():
        raise InputError(f"--labels {args.labels}: not a folder")
    shifts = [s.strip() for s in args.shifts.split(",") if s.strip()] if args.shifts else None
    result = run_robustness(args.model, args.images, args.labels, args.out, shifts=shifts, device=args.device,
                            seed=args.seed, workers=args.workers, modality=args.modality, dataset=args.dataset)
    print(text_table(result))
    print(f"\nreport: {Path(args.out) / 'robustness.html'} (+ robustness.json, robustness.md, robustness.png)")
    return 0
