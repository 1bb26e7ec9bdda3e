"""Inference benchmark: single model vs TTA vs a 2-fold ensemble (with TTA), with and without the
post-processing decided from validation; and medseg's sliding window vs MONAI's
``sliding_window_inference`` with the same settings, in the same process.

Data: the demo's synthetic CT (small: 12 training + 4 held-out cases, 64 in-plane voxels) and,
with ``--mri``, an MR dataset with region-free labels from ``medseg synth --modality MR``. Two folds
are trained for ``--epochs`` each (CPU, the planned settings), then every variant predicts the
held-out cases and is scored with ``medseg evaluate``: organ/lesion Dice and the maximum Hausdorff
distance (HD), and the wall time of each variant relative to the single model.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def _train_folds(data: Path, root: Path, epochs: int) -> list[Path]:
    from medseg.training.train import TrainConfig, train

    runs = []
    for fold in (0, 1):
        run = root / f"fold{fold}"
        train(TrainConfig(data=str(data), out=str(run), epochs=epochs, fold=fold, folds=2, progress=False,
                          check_data=False, val_interval=max(1, epochs // 4),
                          tracking_uri=f"sqlite:///{root / 'mlflow.db'}", experiment="bench-inference"))
        runs.append(run)
    return runs


def _score(pred: Path, gt: Path, out: Path) -> dict[str, dict[str, float]]:
    from medseg.evaluation.evaluate import evaluate_folders

    summary = evaluate_folders(pred, gt, out, progress=False)
    return {e["name"]: {"dice": e["metrics"]["dice"]["mean"], "hd": e["metrics"]["hd"]["mean"]}
            for e in summary["classes"].values()}


def _variants(runs: list[Path], data: Path, root: Path) -> list[dict]:
    from medseg.evaluation.crossval import determine_postprocessing
    from medseg.inference.predict import predict

    determine_postprocessing(runs, device="cpu")
    rows = []
    setups = [("single", runs[:1], False), ("single+TTA", runs[:1], True), ("2-fold ensemble+TTA", runs, True)]
    for name, models, tta in setups:
        for pp in (False, True):
            out = root / f"{name}-{pp}".replace("+", "_").replace(" ", "_")
            t0 = time.perf_counter()
            predict([str(m) for m in models], data / "imagesTs", out, device="cpu", tta=tta, postprocess=pp)
            seconds = time.perf_counter() - t0
            rows.append({"variant": name + (" +PP" if pp else ""), "seconds": seconds,
                         "scores": _score(out, data / "labelsTs", root / f"eval-{out.name}")})
    base = rows[0]["seconds"]
    for r in rows:
        r["time_ratio"] = r["seconds"] / base
    return rows


def _sliding_window(runs: list[Path], data: Path, repeats: int = 5) -> dict[str, float]:
    """The window loop predict runs vs MONAI's function, same network, image, ROI, overlap and blending."""
    from monai.inferers import SlidingWindowInferer, sliding_window_inference

    from medseg.inference.predict import load_model, mirrored_inference
    from medseg.preprocessing.pipeline import inference_transforms

    lm = load_model(runs[0], torch.device("cpu"))
    image = sorted((data / "imagesTs").glob("*.nii.gz"))[0]
    x = inference_transforms(lm.plan)({"image": str(image)})["image"].unsqueeze(0)
    roi = lm.plan.patch_size
    ours = SlidingWindowInferer(roi_size=roi, sw_batch_size=4, overlap=0.5, mode="gaussian")

    def theirs(t: torch.Tensor, n: torch.nn.Module) -> torch.Tensor:
        return sliding_window_inference(t, roi, 4, n, overlap=0.5, mode="gaussian")

    times: dict[str, list[float]] = {"monai": [], "medseg": []}
    with torch.no_grad():
        for _ in range(repeats + 1):  # interleaved, the first round is a warm-up; the minimum counts
            for name, inferer in (("monai", theirs), ("medseg", ours)):
                t0 = time.perf_counter()
                mirrored_inference(lm.network, x, inferer, lambda t: torch.softmax(t, 1), tta=False)
                times[name].append(time.perf_counter() - t0)
    times = {k: min(v[1:]) for k, v in times.items()}
    return {"monai_s": times["monai"], "medseg_s": times["medseg"], "speed_ratio": times["monai"] / times["medseg"]}


def _dataset(root: Path, mri: bool) -> Path:
    from medseg.data.synth import SynthConfig, synthesise_dataset

    data = root / ("mri" if mri else "ct")
    synthesise_dataset(data, SynthConfig(train_cases=12, test_cases=4, size=64, seed=5,
                                         **({"modality": "MR"} if mri else {})))
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--mri", action="store_true", help="also run on an MR dataset")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()
    torch.set_num_threads(2)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mri in ([False, True] if args.mri else [False]):
            root = Path(tmp) / ("mri" if mri else "ct")
            data = _dataset(root, mri)
            t0 = time.perf_counter()
            runs = _train_folds(data, root, args.epochs)
            train_s = time.perf_counter() - t0
            rows = _variants(runs, data, root)
            sw = _sliding_window(runs, data)
            results["MR" if mri else "CT"] = {"rows": rows, "sliding_window": sw, "train_seconds_two_folds": train_s}
            print(f"== {'MR' if mri else 'CT'} (2 folds x {args.epochs} epochs, {train_s:.0f} s of training)")
            names = list(rows[0]["scores"])
            print(f"{'variant':<26} {'time x':>7} " + " ".join(f"{n + ' Dice':>12} {n + ' HD':>10}" for n in names))
            for r in rows:
                print(f"{r['variant']:<26} {r['time_ratio']:>7.2f} " + " ".join(
                    f"{r['scores'][n]['dice']:>12.4f} {r['scores'][n]['hd']:>10.2f}" for n in names))
            print(f"sliding window: MONAI {sw['monai_s'] * 1000:.0f} ms, medseg {sw['medseg_s'] * 1000:.0f} ms, "
                  f"speed ratio (MONAI time / medseg time) {sw['speed_ratio']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
