"""Planned defaults vs the old fixed constants vs hand-tuned settings on brain T1 MRI (grey/white matter).

The data (:mod:`mri_brain`, next to this file) are warped copies of the MNI152 2009 template shipped
in nilearn: random affine + elastic deformation, voxel spacings 1.0-1.5 mm (some anisotropic), bias
field, Rician noise, every third case stored LPS. Nothing in medseg was tuned on them.

Three trainings, identical except for the plan: same epochs, seed, fold, loss (``dice_ce``), lr, CPU.

- ``planned``: ``TrainConfig`` with no overrides: spacing, patch, network, batch and augmentation from
  the planner.
- ``planned, light aug``: the same plan with the earlier fixed augmentation (``--aug recipe=light``).
- ``old constants``: the settings every run used before planning existed: 1.6 x 1.6 x 2.5 mm,
  48 x 48 x 32 patches, residual UNet 16-128 filters, strides 2, batch 2, 2 patches per case.
- ``hand-tuned``: fixed before any result of ``planned`` was seen, from the data alone: the cases
  are 1.0-1.5 mm (median about 1.25 mm) and the grey-matter ribbon is 2-3 mm thick, so resample to
  1.25 mm isotropic (coarser voxels merge the ribbon with CSF); 64^3 patches (80 mm, about half a
  brain, for context); a five-level residual UNet 16-256 (strides 2) for a receptive field that
  matches the larger patch; batch 2, 2 patches per case.

Each model predicts the held-out cases (``medseg.inference.predict``, on their own grids) and
``medseg.evaluation.evaluate.evaluate_folders`` scores them: Dice and HD95 (mm) per class. Training
wall time includes caching, validation and checkpoints; the machine may be shared, so compare
time ratios (relative to ``old constants``) rather than seconds. The table is printed and written
to ``outputs/bench_plan_mri.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mri_brain import BrainConfig, build_dataset  # noqa: E402

from medseg.evaluation.evaluate import evaluate_folders  # noqa: E402
from medseg.inference.predict import predict  # noqa: E402
from medseg.training.train import TrainConfig, train  # noqa: E402

VARIANTS: dict[str, dict[str, Any]] = {
    "planned": {},
    "planned, light aug": {"augmentation": {"recipe": "light"}},
    "old constants": {"pixdim": (1.6, 1.6, 2.5), "patch_size": (48, 48, 32), "channels": (16, 32, 64, 128),
                      "strides": (2, 2, 2), "net": "unet", "batch_size": 2, "samples_per_case": 2},
    "hand-tuned": {"pixdim": (1.25, 1.25, 1.25), "patch_size": (64, 64, 64), "channels": (16, 32, 64, 128, 256),
                   "strides": (2, 2, 2, 2), "net": "unet", "batch_size": 2, "samples_per_case": 2},
}
CLASSES = {"1": "grey matter", "2": "white matter"}


def _plan_summary(plan: dict[str, Any]) -> dict[str, Any]:
    net = plan["network"]
    return {"spacing_mm": plan["spacing"], "patch_size": plan["patch_size"], "network": net["name"],
            "filters": net["filters"], "strides": net["strides"][1:], "batch_size": plan["batch_size"],
            "samples_per_case": plan["samples_per_case"], "normalization": [n["scheme"] for n in plan["normalization"]],
            "class_ratios": plan["class_ratios"]}


def _run(name: str, overrides: dict[str, Any], data: Path, test_images: Path, test_labels: Path, out: Path,
         args: argparse.Namespace) -> dict[str, Any]:
    slug = name.replace(" ", "_").replace("-", "_")
    run_dir = out / "runs" / slug
    for stale in (run_dir, out / "pred" / slug, out / "eval" / slug):
        shutil.rmtree(stale, ignore_errors=True)
    cfg = TrainConfig(data=str(data), out=str(run_dir), epochs=args.epochs, loss="dice_ce", device="cpu", seed=0,
                      fold=0, val_interval=args.val_interval, progress=False, experiment="bench-plan-mri",
                      tracking_uri=f"sqlite:///{(out / 'mlflow.db').resolve()}", run_name=slug, **overrides)
    t0 = time.perf_counter()
    result = train(cfg)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    predict(run_dir, test_images, out / "pred" / slug, device="cpu")
    predict_s = time.perf_counter() - t0
    summary = evaluate_folders(out / "pred" / slug, test_labels, out / "eval" / slug, dataset=data, progress=False)
    row: dict[str, Any] = {"variant": name, "overrides": {k: list(v) if isinstance(v, tuple) else v
                                                          for k, v in overrides.items()},
                           "plan": _plan_summary(cfg.plan or {}), "best_val_dice": result.best_metric,
                           "train_s": round(train_s, 1), "predict_s": round(predict_s, 1)}
    for k, cname in CLASSES.items():
        metrics = summary["classes"][k]["metrics"]
        key = cname.split()[0]
        row[f"dice_{key}"] = metrics["dice"]["mean"]
        row[f"dice_{key}_std"] = metrics["dice"]["std"]
        row[f"hd95_{key}"] = metrics["hd95"]["mean"]
    row["dice_mean"] = summary["mean_foreground"]["dice"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--val-interval", type=int, default=5)
    parser.add_argument("--train-cases", type=int, default=12)
    parser.add_argument("--test-cases", type=int, default=4)
    parser.add_argument("--out", default="outputs/bench_plan_mri")
    parser.add_argument("--json", default="outputs/bench_plan_mri.json")
    parser.add_argument("--only", choices=list(VARIANTS), action="append", help="run these variants only")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    t0 = time.perf_counter()
    data_cfg = BrainConfig(train_cases=args.train_cases, test_cases=args.test_cases)
    meta_path = build_dataset(out / "data", data_cfg)
    data = meta_path.parent
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    build_s = time.perf_counter() - t0
    cases = meta["cases"]
    voxels = [c["shape"][0] * c["shape"][1] * c["shape"][2] for c in cases.values()]
    print(f"data: {data} ({len(meta['training'])} training + {len(meta['test'])} held-out cases, "
          f"{min(voxels) / 1e6:.1f}-{max(voxels) / 1e6:.1f} M voxels, spacings "
          f"{min(min(c['spacing']) for c in cases.values()):.2f}-{max(max(c['spacing']) for c in cases.values()):.2f} mm,"
          f" {sum(c['orientation'] == 'LPS' for c in cases.values())} stored LPS; ready in {build_s:.0f} s)")
    test_images, test_labels = out / "test_images", out / "test_labels"
    for folder, key in ((test_images, "image"), (test_labels, "label")):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for entry in meta["test"]:
            shutil.copy2(data / entry[key], folder / Path(entry[key]).name)
    print(f"{args.epochs} epochs, validation every {args.val_interval}, loss dice_ce, seed 0, fold 0, "
          f"{torch.get_num_threads()} torch threads on CPU")
    rows = []
    for name, overrides in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        print(f"== {name}", flush=True)
        rows.append(_run(name, overrides, data, test_images, test_labels, out, args))
        p = rows[-1]["plan"]
        print(f"   plan: spacing {p['spacing_mm']} mm, patch {p['patch_size']}, {p['network']} {p['filters']} "
              f"strides {p['strides']}, batch {p['batch_size']} x {p['samples_per_case']} patches; "
              f"trained in {rows[-1]['train_s']:.0f} s", flush=True)
    base = next((r["train_s"] for r in rows if r["variant"] == "old constants"), None)
    for r in rows:
        r["train_time_ratio_vs_old"] = round(r["train_s"] / base, 2) if base else None
    print(f"\n{'variant':<15}{'Dice GM':>9}{'Dice WM':>9}{'HD95 GM':>9}{'HD95 WM':>9}{'train s':>9}"
          f"{'x old':>7}{'pred s':>8}")
    for r in rows:
        ratio = f"{r['train_time_ratio_vs_old']:.2f}" if r["train_time_ratio_vs_old"] else "-"
        print(f"{r['variant']:<15}{r['dice_grey']:>9.3f}{r['dice_white']:>9.3f}{r['hd95_grey']:>9.2f}"
              f"{r['hd95_white']:>9.2f}{r['train_s']:>9.0f}{ratio:>7}{r['predict_s']:>8.0f}")
    print("(Dice and HD95 in mm: mean over the held-out cases; times on a shared CPU are noisy)")
    report = {"benchmark": "bench_plan_mri", "epochs": args.epochs, "val_interval": args.val_interval,
              "seed": 0, "fold": 0, "loss": "dice_ce", "device": "cpu", "torch_threads": torch.get_num_threads(),
              "dataset": {"path": str(data), "train_cases": len(meta["training"]), "test_cases": len(meta["test"]),
                          "voxels_min": min(voxels), "voxels_max": max(voxels), "cases": cases,
                          "options": meta["synth_options"], "build_s": round(build_s, 1)},
              "rows": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(f"written {args.json}")


if __name__ == "__main__":
    main()
