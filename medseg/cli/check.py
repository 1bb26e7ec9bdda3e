"""Check a dataset's integrity (files, geometry, labels, values); list every problem in one pass.

DATASET is an MSD or nnU-Net v2 raw dataset folder (or its dataset.json). Every listed file is
read completely (gzip CRC verified), image and label geometry compared, label values checked
against the label map, images scanned for NaN/Inf. Each problem is printed as
"FILE: PROBLEM [seen: VALUES]". Exit code 2 when there is any error, 0 otherwise (warnings are
printed but do not fail). --json writes the full report, errors included.
"""

from __future__ import annotations

import argparse
import json

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", metavar="DATASET", help="dataset folder or its dataset.json")
    parser.add_argument("--json", metavar="OUT", default=None, help="also write the report as JSON to OUT")
    parser.add_argument("--workers", type=int, default=None, help="cases read in parallel (default: up to 4)")


def run(args: argparse.Namespace) -> int:
    from medseg.data.check import check_dataset
    from medseg.errors import InputError
    from medseg.utils.files import atomic_write_text

    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be >= 1, got {args.workers}")
    report = check_dataset(args.dataset, num_workers=args.workers)
    if args.json:
        atomic_write_text(args.json, json.dumps(report.to_dict(), indent=2) + "\n")
    for warning in report.warnings:
        print(f"warning: {warning}")
    print(report.summary())
    if args.json:
        print(f"report: {args.json}")
    report.raise_if_errors()
    return 0
