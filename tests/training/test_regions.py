"""Region labels end to end: BraTS-like regions train as sigmoid channels, predict as a label map painted in
``regions_class_order`` and evaluate per region (whole = {1, 2, 3}, core = {2, 3}, lesion = {3})."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest

from medseg.data.synth import REGIONS, SynthConfig, synthesise_dataset

pytestmark = pytest.mark.slow

DATA = {"train_cases": 10, "test_cases": 2, "size": 32, "spacing": (3.0, 3.0, 3.0), "seed": 8, "regions": True,
        "layout": "nnunet", "lesions": (1, 2), "lesion_radius_mm": (6.0, 9.0)}


@pytest.fixture(scope="module")
def regions_run(tmp_path_factory, learning_train_args):
    from medseg.inference.predict import predict
    from medseg.training.train import TrainConfig, train

    base = tmp_path_factory.mktemp("regions")
    synthesise_dataset(base / "data", SynthConfig(**DATA))
    result = train(TrainConfig(data=str(base / "data"), out=str(base / "run"),
                               tracking_uri=f"sqlite:///{base / 'mlflow.db'}", experiment="regions",
                               **learning_train_args))
    written = predict(result.run_dir, base / "data" / "imagesTs", base / "pred", device="cpu")
    return base, result, written


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def test_the_plan_has_one_sigmoid_output_per_region(regions_run):
    from medseg.inference.predict import load_model

    _, result, _ = regions_run
    plan = load_model(result.run_dir, "cpu").plan  # type: ignore[arg-type]
    assert plan.label_spec.regions == {k: tuple(v) for k, v in REGIONS.items()}
    assert plan.out_channels == 3 and plan.label_spec.regions_class_order == (1, 2, 3)


def test_predicts_a_label_map_of_region_values(regions_run):
    base, _, written = regions_run
    assert sorted(p.name for p in written) == ["case_010.nii.gz", "case_011.nii.gz"]
    for path in written:
        pred = np.asarray(nib.load(path).dataobj)
        gt = np.asarray(nib.load(base / "data" / "labelsTs" / path.name).dataobj)
        assert set(np.unique(pred)) <= {0, 1, 2, 3} and pred.shape == gt.shape
        assert {1, 2} <= set(np.unique(pred))  # rim and core painted, in regions_class_order
        assert _dice(pred > 0, gt > 0) >= 0.7, path.name  # the whole region


def test_evaluates_per_region(regions_run, tmp_path):
    from medseg.evaluation.evaluate import evaluate_folders

    base, _, written = regions_run
    summary = evaluate_folders(base / "pred", base / "data" / "labelsTs", tmp_path / "eval", regions=True,
                               dataset=base / "data", progress=False)
    assert summary["structures"] == "regions"
    assert summary["regions"] == REGIONS
    with open(tmp_path / "eval" / "metrics.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted({r["name"] for r in rows}) == sorted(REGIONS)
    assert len(rows) == len(written) * len(REGIONS)
    for row in rows:
        pred = np.asarray(nib.load(base / "pred" / f"{row['case']}.nii.gz").dataobj)
        gt = np.asarray(nib.load(base / "data" / "labelsTs" / f"{row['case']}.nii.gz").dataobj)
        values = REGIONS[row["name"]]
        p, g = np.isin(pred, values), np.isin(gt, values)
        assert int(row["gt_voxels"]) == int(g.sum()) and int(row["pred_voxels"]) == int(p.sum())
        if g.any() or p.any():
            assert float(row["dice"]) == pytest.approx(_dice(p, g), abs=1e-6), row
