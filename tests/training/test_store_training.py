"""Training from the preprocessed store learns as well as training from a RAM cache, and folds share one store.

Same phantoms, plan, seed and budget; only ``cache`` differs (both feed the same patch transforms).
The held-out organ Dice of both runs is high and within noise of each other. A second fold reads
the store the first one wrote (no case is written again) and logs ``data_wait_fraction``.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from medseg.data.synth import SynthConfig, synthesise_dataset
from medseg.inference.predict import predict

pytestmark = pytest.mark.slow


def _organ_dice(pred_dir, gt_dir) -> float:
    scores = []
    for path in sorted(pred_dir.glob("*.nii.gz")):
        pred = np.asarray(nib.load(path).dataobj) == 1
        gt = np.asarray(nib.load(gt_dir / path.name).dataobj) == 1
        scores.append(2 * (pred & gt).sum() / (pred.sum() + gt.sum()))
    return float(np.mean(scores))


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    root = tmp_path_factory.mktemp("store_training") / "data"
    synthesise_dataset(root, SynthConfig(train_cases=10, test_cases=2, size=32, spacing=(3.0, 3.0, 3.0), seed=7))
    return root


def _train(data, out, **kwargs):
    from medseg.training.train import TrainConfig, train

    return train(TrainConfig(data=str(data), out=str(out), tracking_uri=f"sqlite:///{out.parent / 'mlflow.db'}",
                             experiment="store", **kwargs))


def test_store_and_ram_cache_learn_alike_and_folds_share_the_store(phantoms, tmp_path, learning_train_args):
    dice = {}
    for cache in ("store", "ram"):
        run = _train(phantoms, tmp_path / cache, cache=cache, num_workers=1, **learning_train_args)
        predict(run.run_dir, phantoms / "imagesTs", tmp_path / f"pred_{cache}", device="cpu")
        dice[cache] = _organ_dice(tmp_path / f"pred_{cache}", phantoms / "labelsTs")
    assert dice["store"] >= 0.7 and dice["ram"] >= 0.7, dice
    assert abs(dice["store"] - dice["ram"]) <= 0.08, dice

    [store] = [p for p in (phantoms / ".medseg_store").iterdir() if p.is_dir()]
    manifests = {p: p.stat().st_mtime_ns for p in store.glob("*/manifest.json")}
    assert len(manifests) == 10
    fold1 = _train(phantoms, tmp_path / "fold1", fold=1, **{**learning_train_args, "epochs": 1, "val_interval": 1})
    assert {p: p.stat().st_mtime_ns for p in store.glob("*/manifest.json")} == manifests  # nothing rewritten
    journal = [json.loads(line) for line in (fold1.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert 0.0 <= journal[-1]["metrics"]["data_wait_fraction"] <= 1.0  # also an MLflow metric
