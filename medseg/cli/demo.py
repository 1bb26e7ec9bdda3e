"""End-to-end demo: synthesise a CT-like dataset, train, predict the held-out cases, evaluate.

Run with ``make demo`` (or ``python -m medseg.cli.demo --out outputs/demo``). Everything lands in
--out: data/, run/, predictions/, report/ and the MLflow store mlflow.db (+ mlartifacts/).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from pathlib import Path

from medseg.errors import InputError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="medseg-demo", description=__doc__.strip().splitlines()[0])
    p.add_argument("--out", default="outputs/demo", help="output folder (default outputs/demo)")
    p.add_argument("--epochs", type=int, default=40, help="training epochs (default 40)")
    p.add_argument("--val-interval", type=int, default=5,
                   help="full validation every N epochs (default 5; 0: the planned schedule)")
    p.add_argument("--train-cases", type=int, default=24)
    p.add_argument("--test-cases", type=int, default=6)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--loss", default="dice_ce")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    return p


def _run(args: argparse.Namespace) -> None:
    from medseg.data.synth import SynthConfig, synthesise_dataset
    from medseg.evaluation.evaluate import evaluate_folders
    from medseg.inference.predict import predict
    from medseg.preprocessing.store import default_root
    from medseg.training.train import TrainConfig, train

    out = Path(args.out).resolve()
    data, run_dir, preds, report = out / "data", out / "run", out / "predictions", out / "report"
    for stale in (data, run_dir, preds, report):  # the demo owns these folders; start clean
        shutil.rmtree(stale, ignore_errors=True)
    uri = f"sqlite:///{out / 'mlflow.db'}"
    t0 = time.perf_counter()

    print(f"[1/4] synthesising {args.train_cases}+{args.test_cases} CT-like cases in {data}", flush=True)
    synthesise_dataset(data, SynthConfig(train_cases=args.train_cases, test_cases=args.test_cases,
                                         size=args.size, seed=args.seed))
    print(f"[2/4] training a 3D U-Net for {args.epochs} epochs ({args.loss})", flush=True)
    result = train(TrainConfig(data=str(data), out=str(run_dir), epochs=args.epochs, loss=args.loss,
                               device=args.device, tracking_uri=uri, experiment="medseg-demo",
                               val_interval=min(args.val_interval, args.epochs) or None,
                               run_name="demo", seed=args.seed))
    print(f"[3/4] predicting {data / 'imagesTs'}", flush=True)
    predict(run_dir, data / "imagesTs", preds, device=args.device)
    print("[4/4] evaluating against labelsTs", flush=True)
    # the report joins the training run, through the same tracker path as `medseg evaluate --run-id`
    summary = evaluate_folders(preds, data / "labelsTs", report, image_dir=data / "imagesTs", lesion_wise=True,
                               tracking_uri=uri, run_id=result.mlflow_run_id)
    if "mlflow_error" in summary:
        print(f"  warning: the report was not logged to MLflow ({summary['mlflow_error']})", flush=True)

    minutes = (time.perf_counter() - t0) / 60
    print(f"\ndone in {minutes:.1f} min. Held-out cases ({args.test_cases}):")
    for entry in summary["classes"].values():
        stats = entry["metrics"]
        print(f"  {entry['name']:<12} Dice {stats['dice']['mean']:.3f}   HD95 {stats['hd95']['mean']:.2f} mm")
    print(f"\n  dataset      {data}")
    print(f"  store        {default_root(data)}  (pre-processed cases that training reads patches from)")
    print(f"  run          {run_dir}  (best checkpoint: {result.best_checkpoint.name})")
    print(f"  predictions  {preds}")
    print(f"  report       {report / 'report.html'}  (+ metrics.csv, lesions.csv, summary.json)")
    print(f"  MLflow       {uri}  run {result.mlflow_run_id}")
    print(f"\nOpen the MLflow UI:  .venv/bin/mlflow ui --backend-store-uri {uri} --port 5000")
    print("                     then browse http://127.0.0.1:5000")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        _run(args)
    except InputError as exc:
        print(f"medseg demo: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # internal error: one line, exit 1 (run the steps by hand for details)
        print(f"medseg demo: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
