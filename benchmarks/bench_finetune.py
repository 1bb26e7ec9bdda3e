"""Fine-tuning from trained weights (``medseg train --init``) vs training from scratch, same short budget, over seeds.

- **Pretraining** (once): ``medseg synth`` CT phantoms (organ = 1, lesion = 2), ``--pretrain-cases`` cases of
  32 x 32 x 16 voxels at 1.5 x 1.5 x 3.0 mm, trained ``--pretrain-epochs`` epochs (residual UNet 8-16-32,
  32 x 32 x 16 patches, Dice + CE, lr 2e-3).
- **Target ("another scanner")**: another seed, 1.2 x 1.2 x 4.0 mm voxels, intensities ``1.1 x HU + 60``,
  5 labelled cases (fold 0 of 5: 4 train, 1 validates) and ``--test-cases`` held-out cases, and the label
  values reordered (1 = lesion, 2 = organ): the names match, the indices do not.
- **Runs**, each ``--epochs`` epochs, validated every 2, for every seed (scored twice: the best validation epoch,
  which for ``init`` may be epoch 0, the initial weights; and the last epoch):
  ``scratch`` (the target's own plan with the same network flags, lr 2e-3, medseg's default) and
  ``init`` (``--init`` the pretrained run: its plan and weights) at each ``--lrs`` value; ``--freeze N``
  adds ``init`` with the encoder frozen for N epochs at the first ``--lrs`` value.

Each run predicts the held-out cases (``medseg.inference.predict``) and
``medseg.evaluation.evaluate.evaluate_folders`` scores them. The table (mean ± sd over seeds of the held-out
Dice per class and their mean) is printed and written to ``outputs/bench_finetune.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from medseg.data.synth import SynthConfig, synthesise_dataset
from medseg.evaluation.evaluate import evaluate_folders
from medseg.inference.predict import predict
from medseg.training.train import TrainConfig, train

NETWORK = {"patch_size": (32, 32, 16), "channels": (8, 16, 32), "strides": (2, 2), "num_res_units": 1,
           "batch_size": 2, "samples_per_case": 2}
COMMON = {"device": "cpu", "progress": False, "num_workers": 0, "check_data": False, "split_seed": 0}


def target_dataset(root: Path, test_cases: int) -> Path:
    """The "other scanner": other spacing, shifted intensities, labels 1 = lesion, 2 = organ."""
    if (root / "dataset.json").is_file():
        return root
    synthesise_dataset(root, SynthConfig(train_cases=5, test_cases=test_cases, size=32, spacing=(1.2, 1.2, 4.0),
                                         seed=101))
    for path in sorted(root.glob("images*/*.nii.gz")):
        img = nib.load(str(path))
        data = np.asarray(img.dataobj, dtype=np.float32) * 1.1 + 60.0
        nib.save(nib.Nifti1Image(data, img.affine, img.header), str(path))
    for path in sorted(root.glob("labels*/*.nii.gz")):
        img = nib.load(str(path))
        lab = np.asarray(img.dataobj)
        swapped = np.where(lab == 1, 2, np.where(lab == 2, 1, lab)).astype(lab.dtype)
        nib.save(nib.Nifti1Image(swapped, img.affine, img.header), str(path))
    meta = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    meta["labels"] = {"0": "background", "1": "lesion", "2": "organ"}
    (root / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return root


def _score(model: Path, data: Path, out: Path, prefix: str = "") -> dict[str, float]:
    """Held-out Dice per class and their mean of ``model`` (a run directory: its best checkpoint; or a file)."""
    for stale in (out / "pred", out / "eval"):
        shutil.rmtree(stale, ignore_errors=True)
    predict(model, data / "imagesTs", out / "pred", device="cpu")
    summary = evaluate_folders(out / "pred", data / "labelsTs", out / "eval", dataset=data, progress=False)
    row = {f"{prefix}dice_{c['name']}": float(c["metrics"]["dice"]["mean"]) for c in summary["classes"].values()}
    row[f"{prefix}dice_mean"] = float(summary["mean_foreground"]["dice"])
    return row


def _run(name: str, seed: int, cfg_args: dict[str, Any], data: Path, out: Path, epochs: int) -> dict[str, Any]:
    run_dir = out / "runs" / f"{name}_seed{seed}"
    row_file = run_dir / "bench_row.json"
    if row_file.is_file():
        row = json.loads(row_file.read_text(encoding="utf-8"))
        if "last_dice_mean" not in row:  # rows of an earlier version: score the last epoch too
            row.update(_score(run_dir / "checkpoints" / f"last_epoch={epochs}.pt", data, run_dir, "last_"))
            row_file.write_text(json.dumps(row) + "\n", encoding="utf-8")
        return row
    shutil.rmtree(run_dir, ignore_errors=True)
    cfg = TrainConfig(data=str(data), out=str(run_dir), epochs=epochs, seed=seed, val_interval=2,
                      tracking_uri=f"sqlite:///{(out / 'mlflow.db').resolve()}", experiment="bench-finetune",
                      run_name=f"{name}_seed{seed}", **COMMON, **cfg_args)
    t0 = time.perf_counter()
    result = train(cfg)
    row = {"variant": name, "seed": seed, "train_s": round(time.perf_counter() - t0, 1),
           "best_val_dice": result.best_metric, **_score(run_dir, data, run_dir),
           **_score(run_dir / "checkpoints" / f"last_epoch={epochs}.pt", data, run_dir, "last_")}
    row_file.write_text(json.dumps(row) + "\n", encoding="utf-8")
    print(json.dumps(row), flush=True)
    return row


def _table(rows: list[dict[str, Any]]) -> list[str]:
    keys = ["dice_organ", "dice_lesion", "dice_mean", "last_dice_organ", "last_dice_mean"]
    lines = ["| run | seeds | held-out Dice: organ | lesion | mean | last epoch: organ | mean |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for variant in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == variant]
        cells = []
        for key in keys:
            values = [r[key] for r in mine]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.3f} ± {sd:.3f}")
        lines.append(f"| {variant} | {len(mine)} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--pretrain-cases", type=int, default=12)
    parser.add_argument("--pretrain-epochs", type=int, default=30)
    parser.add_argument("--test-cases", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--lrs", type=float, nargs="+", default=[2e-3, 5e-4, 1e-4])
    parser.add_argument("--freeze", type=int, default=0, help="also fine-tune with the encoder frozen N epochs")
    parser.add_argument("--out", default="outputs/bench_finetune")
    parser.add_argument("--json", default="outputs/bench_finetune.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    source_data = out / "source_data"
    if not (source_data / "dataset.json").is_file():
        synthesise_dataset(source_data, SynthConfig(train_cases=args.pretrain_cases, test_cases=0, size=32,
                                                    spacing=(1.5, 1.5, 3.0), seed=7))
    pretrained = out / "pretrained"
    if not (pretrained / "checkpoints" / "best.pt").is_file():
        shutil.rmtree(pretrained, ignore_errors=True)
        t0 = time.perf_counter()
        res = train(TrainConfig(data=str(source_data), out=str(pretrained), epochs=args.pretrain_epochs, seed=0,
                                val_interval=5, tracking_uri=f"sqlite:///{(out / 'mlflow.db').resolve()}",
                                experiment="bench-finetune", run_name="pretrain", **COMMON, **NETWORK))
        print(f"pretrained in {time.perf_counter() - t0:.0f} s: validation Dice {res.best_metric:.3f}", flush=True)
    data = target_dataset(out / "target_data", args.test_cases)
    variants: list[tuple[str, dict[str, Any]]] = [("scratch lr 2e-3", {**NETWORK, "lr": 2e-3})]
    variants += [(f"init lr {lr:g}", {"init": str(pretrained), "lr": lr}) for lr in args.lrs]
    if args.freeze:
        variants.append((f"init lr {args.lrs[0]:g} freeze {args.freeze}",
                         {"init": str(pretrained), "lr": args.lrs[0], "freeze_encoder_epochs": args.freeze}))
    rows = [_run(name.replace(" ", "_"), seed, kw, data, out, args.epochs) | {"variant": name}
            for seed in range(args.seeds) for name, kw in variants]
    lines = _table(rows)
    print("\n".join(lines))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows, "table": lines}, indent=1) + "\n",
                               encoding="utf-8")


if __name__ == "__main__":
    main()
