"""Cross-validation: the summary of several ``medseg train --fold K`` runs and the post-processing they imply.

Folds are patient-wise and seeded (:func:`medseg.data.datalist.kfold_split`): every case id is in
exactly one validation fold. The summary takes each run's best validation epoch (highest
``val_mean_dice`` in ``metrics.jsonl``) and reports, per metric, the mean and the spread (sample
standard deviation, min, max) across folds -- the numbers a cross-validation table shows.
:func:`determine_postprocessing` predicts every run's validation cases and decides, from all of
them together, which post-processing raises the cross-validated Dice
(:mod:`medseg.inference.postprocess`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from medseg.errors import InputError
from medseg.utils.geometry import spacing_from_affine
from medseg.utils.rundir import (
    CONFIG_FILE,
    DATALIST_FILE,
    JOURNAL_FILE,
    VAL_KEY_METRIC,
    VAL_PREFIX,
    best_record,
)

__all__ = ["fold_result", "summarize_folds", "determine_postprocessing", "SUMMARY_METRICS"]

#: metrics summarised across folds (foreground-class means of the validation metrics)
SUMMARY_METRICS = ("mean_dice", "mean_hd95")


def fold_result(run_dir: str | Path) -> dict[str, Any]:
    """Fold number, best epoch and best-epoch validation metrics of one training run."""
    run = Path(run_dir)
    config_file, journal = run / CONFIG_FILE, run / JOURNAL_FILE
    if not config_file.is_file() or not journal.is_file():
        raise InputError(f"{run}: not a medseg training run (needs {CONFIG_FILE} and {JOURNAL_FILE})")
    config = json.loads(config_file.read_text(encoding="utf-8"))
    best = best_record(run, VAL_KEY_METRIC)
    if best is None:
        raise InputError(f"{journal}: no validated epoch yet")
    metrics = {k[len(VAL_PREFIX):]: (float(v) if math.isfinite(float(v)) else None)
               for k, v in best["metrics"].items() if k.startswith(VAL_PREFIX)}
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


def determine_postprocessing(run_dirs: list[str | Path], device: str = "auto") -> dict[str, Any]:
    """Predict each run's validation cases, decide the post-processing, and store it in every run."""
    import nibabel as nib
    import numpy as np

    from medseg.inference.postprocess import decide_postprocessing, save_postprocessing
    from medseg.inference.predict import (
        check_ensemble,
        load_model,
        predict_probabilities,
        probabilities_to_labels,
    )
    from medseg.plan.network import resolve_device

    dev = resolve_device(device)
    models = [load_model(r, dev) for r in run_dirs]
    check_ensemble(models, [str(r) for r in run_dirs])
    pairs = []
    for run, lm in zip(run_dirs, models, strict=True):
        datalist = Path(run) / DATALIST_FILE
        if not datalist.is_file():
            raise InputError(f"{run}: no {DATALIST_FILE}; post-processing needs the run's validation cases")
        for case in json.loads(datalist.read_text(encoding="utf-8"))["validation"]:
            probs = predict_probabilities(lm, case["image"], dev)
            gt = nib.load(case["label"])
            labels = np.rint(np.asarray(gt.dataobj)).astype(np.int16).reshape(gt.shape[:3])
            pairs.append((probabilities_to_labels(probs, lm.plan), labels,
                          spacing_from_affine(gt.affine)))
    decision = decide_postprocessing(pairs, models[0].plan)
    decision["validation_cases"] = len(pairs)
    save_postprocessing(decision, run_dirs)
    return decision
