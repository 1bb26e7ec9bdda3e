"""Summarise cross-validation: mean and spread of Dice and HD95 across `medseg train --fold K` runs.

Each RUN_DIR is one fold's training run (same dataset, --folds and --seed); its best validation
epoch counts. The table goes to stdout, the full summary to --out as JSON.
"""

from __future__ import annotations

import argparse
import json

from medseg.utils.files import atomic_write_text

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="training run directories, one per fold")
    parser.add_argument("--out", default=None, help="write the summary JSON here")


def _fmt(stats: dict) -> str:
    if stats["mean"] is None:
        return "n/a"
    return f"{stats['mean']:.4f} +/- {stats['std']:.4f}  [{stats['min']:.4f}, {stats['max']:.4f}]"


def run(args: argparse.Namespace) -> int:
    from medseg.engine.crossval import SUMMARY_METRICS, summarize_folds

    result = summarize_folds(args.run_dirs)
    print(f"folds {result['folds']} of {result['of']}")
    for r in result["runs"]:
        m = r["metrics"]
        print(f"  fold {r['fold']}: best epoch {r['best_epoch']}  "
              + "  ".join(f"{k} {m[k]:.4f}" for k in SUMMARY_METRICS if m.get(k) is not None))
    for name in SUMMARY_METRICS:
        if name in result["summary"]:
            print(f"{name:<10} {_fmt(result['summary'][name])}")
    if args.out:
        atomic_write_text(args.out, json.dumps(result, indent=2, allow_nan=False, default=str) + "\n")
        print(f"summary written to {args.out}")
    return 0
