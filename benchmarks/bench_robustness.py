"""The demo's model under acquisition shifts: the earlier light augmentation recipe vs the planned one.

Data: the demo's dataset (``medseg synth``, 24 training cases, seed 0) for training; held-out phantoms
from another seed (default 7, 16 cases), which no test trains on, for the robustness battery
(:mod:`medseg.evaluation.robustness`). Two trainings with the same epochs, seed, fold and loss:
``light`` (``--aug recipe=light``, full validation every 5 epochs as the demo did) and ``planned``
(the plan's augmentation and the planned validation schedule). ``--runs OLD NEW`` scores two existing run
directories instead of training. Prints one table per model and the change of each shift's mean Dice
drop; writes ``OUT/bench_robustness_seed<SEED>.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from medseg.data.synth import SynthConfig, synthesise_dataset
from medseg.evaluation.robustness import run_robustness
from medseg.evaluation.robustness_report import text_table
from medseg.training.train import TrainConfig, train


def _train(name: str, data: Path, out: Path, epochs: int, uri: str, seed: int) -> tuple[Path, float]:
    extra = {"augmentation": {"recipe": "light"}, "val_interval": min(5, epochs)} if name == "light" else {}
    suffix = f"_seed{seed}" if seed else ""
    cfg = TrainConfig(data=str(data), out=str(out / f"run_{name}{suffix}"), epochs=epochs, device="cpu", seed=seed,
                      split_seed=0, tracking_uri=uri, experiment="bench-robustness", run_name=f"{name}{suffix}",
                      progress=False, **extra)
    t0 = time.perf_counter()
    train(cfg)
    return Path(cfg.out), time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--out", default="outputs/bench_robustness")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--heldout-seed", type=int, default=7)
    parser.add_argument("--heldout-cases", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0, help="training seed (the split stays fold 0 of seed 0)")
    parser.add_argument("--runs", nargs=2, metavar=("LIGHT_RUN", "PLANNED_RUN"), help="score these runs, no training")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    out = Path(args.out).resolve()
    held = out / "heldout"
    if not (held / "dataset.json").is_file():
        synthesise_dataset(held, SynthConfig(train_cases=1, test_cases=args.heldout_cases, size=96,
                                             seed=args.heldout_seed))
    runs: dict[str, Path] = {}
    train_s: dict[str, float] = {}
    if args.runs:
        runs = {"light": Path(args.runs[0]), "planned": Path(args.runs[1])}
    else:
        data = out / "data"
        if not (data / "dataset.json").is_file():
            synthesise_dataset(data, SynthConfig(train_cases=24, test_cases=6, size=96, seed=0))
        for name in ("light", "planned"):
            runs[name], train_s[name] = _train(name, data, out, args.epochs, f"sqlite:///{out / 'mlflow.db'}",
                                               args.seed)
    results = {}
    for name, run in runs.items():
        results[name] = run_robustness([run], held / "imagesTs", held / "labelsTs", out / f"robustness_{run.name}",
                                       device="cpu")
        print(f"\n== {name} recipe ({run})\n{text_table(results[name])}")
    print(f"\n{'shift':<14}{'light drop':>12}{'planned drop':>14}")
    for a, b in zip(results["light"]["rows"], results["planned"]["rows"], strict=True):
        print(f"{a['shift']:<14}{a['delta_mean_dice']:>+12.3f}{b['delta_mean_dice']:>+14.3f}")
    Path(out).mkdir(parents=True, exist_ok=True)
    report = {"epochs": args.epochs, "seed": args.seed, "train_s": train_s,
              "runs": {k: str(v) for k, v in runs.items()}, "results": results}
    (out / f"bench_robustness_seed{args.seed}.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
