"""Pre-process a dataset once into the on-disk store that training reads patch by patch.

Plans the dataset as `medseg train` does (the same flags override the same values), then writes
each training case (RAS, crop to nonzero, resampling, normalisation) to
STORE/<key>/<case>/ as chunked, compressed arrays with a sample of voxel locations per class.
<key> hashes the plan's pre-processing, the medseg version and the source files, so every fold,
study and --resume on the same data shares it. Rerun after an interruption: only missing or
damaged cases are written. `medseg train` runs this itself when its store is missing.
Delete a store by deleting its folder (default DATASET/.medseg_store).
"""

from __future__ import annotations

import argparse

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", metavar="DATASET", help="dataset folder with dataset.json (MSD or nnU-Net v2 raw)")
    parser.add_argument("--out", default=None, metavar="STORE",
                        help="root folder of the stores (default DATASET/.medseg_store; `medseg train --store`)")
    parser.add_argument("--workers", type=int, default=None, help="cases pre-processed in parallel (default: CPUs)")
    parser.add_argument("--device", default="auto", help="plan for this device's budget: auto, cpu or cuda")
    parser.add_argument("--pixdim", type=float, nargs=3, default=None, metavar=("X", "Y", "Z"),
                        help="resampled voxel size in mm (as medseg train --pixdim)")


def run(args: argparse.Namespace) -> int:
    import os

    from medseg.data.datalist import load_dataset
    from medseg.errors import InputError
    from medseg.plan.network import resolve_device
    from medseg.plan.planner import plan_dataset
    from medseg.preprocessing.store import preprocess_store

    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be >= 1, got {args.workers}")
    workers = args.workers or os.cpu_count() or 1
    dataset = load_dataset(args.dataset)
    device = resolve_device(args.device).type
    overrides = {"spacing": tuple(args.pixdim)} if args.pixdim else {}
    _, plan, _ = plan_dataset(dataset, device=device, overrides=overrides, workers=min(workers, 4))
    store, written = preprocess_store(dataset, plan, args.out, workers=workers, checksum=True)
    size = sum(f.stat().st_size for f in store.path.rglob("*") if f.is_file())
    print(f"store {store.path}: {len(store.case_ids)} case(s), {len(written)} written now, "
          f"{len(store.case_ids) - len(written)} reused; {size / 2**20:.1f} MiB on disk")
    return 0
