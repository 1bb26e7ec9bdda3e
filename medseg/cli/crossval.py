"""Summarise cross-validation: mean and spread of Dice and HD95 across `medseg train --fold K` runs.

Each RUN_DIR is one fold's training run (same dataset, --folds and --seed); its best validation
epoch counts. The table goes to stdout, the full summary to --out as JSON. With --postprocess the
validation cases of every fold are predicted and, per class (or region), keeping the largest
component or removing small components is adopted where it raises the cross-validated Dice; the
decision is stored in each run (postprocessing.json) and `medseg predict` applies it.
"""

from __future__ import annotations

import argparse
import json

from medseg.utils.files import atomic_write_text

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="training run directories, one per fold")
    parser.add_argument("--out", default=None, help="write the summary JSON here")
    parser.add_argument("--postprocess", action="store_true",
                        help="decide post-processing from the folds' validation predictions and store it in each run")
    parser.add_argument("--device", default="auto", help="device for the validation predictions (default auto)")


def _fmt(stats: dict) -> str:
    if stats["mean"] is None:
        return "n/a"
    return f"{stats['mean']:.4f} +/- {stats['std']:.4f}  [{stats['min']:.4f}, {stats['max']:.4f}]"


def run(args: argparse.Namespace) -> int:
    from medseg.evaluation.crossval import SUMMARY_METRICS, summarize_folds

    result = summarize_folds(args.run_dirs)
    print(f"folds {result['folds']} of {result['of']}")
    for r in result["runs"]:
        m = r["metrics"]
        print(f"  fold {r['fold']}: best epoch {r['best_epoch']}  "
              + "  ".join(f"{k} {m[k]:.4f}" for k in SUMMARY_METRICS if m.get(k) is not None))
    for name in SUMMARY_METRICS:
        if name in result["summary"]:
            print(f"{name:<10} {_fmt(result['summary'][name])}")
    if args.postprocess:
        from medseg.evaluation.crossval import determine_postprocessing

        decision = determine_postprocessing(args.run_dirs, device=args.device)
        result["postprocessing"] = decision
        print(f"post-processing from {decision['validation_cases']} validation case(s):")
        for k, before in decision["dice_before"].items():
            rule = decision["structures"].get(k) or "none"
            print(f"  {k}: {rule}  Dice {before:.4f} -> {decision['dice_after'][k]:.4f}")
    if args.out:
        atomic_write_text(args.out, json.dumps(result, indent=2, allow_nan=False, default=str) + "\n")
        print(f"summary written to {args.out}")
    return 0
