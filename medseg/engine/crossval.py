"""Cross-validation: a fold-annotated datalist and the summary of several ``medseg train --fold K`` runs.

Folds are patient-wise and seeded (:func:`medseg.data.datalist.kfold_split`): every case id is in
exactly one validation fold. The summary takes each run's best validation epoch (highest
``val_mean_dice`` in ``metrics.jsonl``) and reports, per metric, the mean and the spread (sample
standard deviation, min, max) across folds -- the numbers a cross-validation table shows.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from medseg.errors import InputError

__all__ = ["fold_datalist", "fold_result", "summarize_folds", "SUMMARY_METRICS"]

#: metrics summarised across folds (foreground-class means of the validation metrics)
SUMMARY_METRICS = ("mean_dice", "mean_hd95")


def fold_datalist(dataset_dir: str | Path, folds: int = 5, seed: int = 0) -> dict[str, list[dict[str, Any]]]:
    """MONAI-style datalist of a dataset with a ``"fold"`` on every training case (and the test list)."""
    from medseg.data.datalist import kfold_split, load_dataset

    dataset = load_dataset(dataset_dir)
    groups = kfold_split(dataset.training, folds=folds, seed=seed)
    training = [{**item, "fold": k} for k, group in enumerate(groups) for item in group]
    training.sort(key=lambda it: it["case_id"])
    return {"training": training, "test": list(dataset.test)}


def fold_result(run_dir: str | Path) -> dict[str, Any]:
    """Fold number, best epoch and best-epoch validation metrics of one training run."""
    run = Path(run_dir)
    config_file, journal = run / "config.json", run / "metrics.jsonl"
    if not config_file.is_file() or not journal.is_file():
        raise InputError(f"{run}: not a medseg training run (needs config.json and metrics.jsonl)")
    config = json.loads(config_file.read_text())
    records = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]
    scored = [r for r in records if "val_mean_dice" in r["metrics"]]
    if not scored:
        raise InputError(f"{journal}: no validated epoch yet")
    best = max(scored, key=lambda r: r["metrics"]["val_mean_dice"])
    metrics = {k[len("val_"):]: (float(v) if math.isfinite(float(v)) else None)
               for k, v in best["metrics"].items() if k.startswith("val_")}
    hd95 = [v for k, v in metrics.items() if k.startswith("hd95_") and v is not None]
    metrics.setdefault("mean_hd95", sum(hd95) / len(hd95) if hd95 else None)
    return {"run_dir": str(run.resolve()), "fold": int(config["fold"]), "folds": int(config["folds"]),
            "seed": int(config["seed"]), "data": config["data"], "best_epoch": int(best["epoch"]), "metrics": metrics}


def _spread(values: list[float | None]) -> dict[str, float | int | None]:
    finite = [v for v in values if v is not None]
    if not finite:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    mean = sum(finite) / len(finite)
    std = math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1)) if len(finite) > 1 else 0.0
    return {"mean": mean, "std": std, "min": min(finite), "max": max(finite), "n": len(finite)}


def summarize_folds(run_dirs: list[str | Path]) -> dict[str, Any]:
    """Mean and spread of every validation metric across fold runs (one run per fold)."""
    results = sorted((fold_result(r) for r in run_dirs), key=lambda r: r["fold"])
    if not results:
        raise InputError("no run directories given")
    seen: dict[int, str] = {}
    for r in results:
        if r["fold"] in seen:
            raise InputError(f"fold {r['fold']} appears twice: {seen[r['fold']]} and {r['run_dir']}")
        seen[r["fold"]] = r["run_dir"]
    setups = {(r["folds"], r["seed"], str(Path(r["data"]).resolve())) for r in results}
    if len(setups) > 1:
        raise InputError("the runs use different folds / seeds / datasets, so their folds are not one split: "
                         + "; ".join(f"{r['run_dir']}: folds={r['folds']} seed={r['seed']}" for r in results))
    names = sorted({k for r in results for k in r["metrics"]})
    summary = {name: _spread([r["metrics"].get(name) for r in results]) for name in names}
    return {"folds": [r["fold"] for r in results], "of": results[0]["folds"], "runs": results, "summary": summary}
