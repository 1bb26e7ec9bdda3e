"""The bundle's validation scores equal `medseg evaluate`'s on the same predictions; MLflow via --tracking mlflow."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Events

from medseg.cli.main import main
from medseg.plan.network import build_network
from medseg.utils.trust import load_config
from tests.bundle.conftest import BUNDLE, HAS_FIRE, TINY_CHANNELS, TINY_OVERRIDES, TINY_STRIDES, monai_bundle


def _bundle_with_weights(tmp_path, seed: int):
    bundle = tmp_path / "b"
    shutil.copytree(BUNDLE, bundle)
    torch.manual_seed(seed)
    net = build_network(3, channels=TINY_CHANNELS, strides=TINY_STRIDES)
    torch.save(net.state_dict(), bundle / "models" / "model.pt")
    return bundle


@pytest.mark.parametrize("seed", [0, 3])
def test_bundle_validation_equals_medseg_evaluate(tmp_path, tiny_dataset, seed):
    bundle = _bundle_with_weights(tmp_path, seed)
    parser = load_config([bundle / "configs" / "train.json", bundle / "configs" / "evaluate.json"])
    parser.update({"bundle_root": str(bundle), "dataset_dir": str(tiny_dataset), "output_dir": str(tmp_path / "eval"),
                   **TINY_OVERRIDES})
    evaluator = parser.get_parsed_content("validate#evaluator")
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir()
    gt_dir.mkdir()
    scored = []

    @evaluator.on(Events.ITERATION_COMPLETED)
    def _keep(engine) -> None:  # noqa: ANN001 - the one-hot pairs the metrics scored, written as label maps
        for item in engine.state.output:
            case = f"case_{len(scored):03d}.nii.gz"
            affine = np.asarray(item["label"].affine, dtype=np.float64)
            for folder, key in ((pred_dir, "pred"), (gt_dir, "label")):
                labels = torch.argmax(item[key], dim=0).cpu().numpy().astype(np.uint8)
                nib.save(nib.Nifti1Image(labels, affine), folder / case)
            scored.append(case)

    evaluator.run()
    assert len(scored) >= 2
    ours = evaluator.state.metrics
    assert main(["evaluate", str(pred_dir), str(gt_dir), "--out", str(tmp_path / "report"), "--labels", "1", "2",
                 "--no-progress"]) == 0
    summary = json.loads((tmp_path / "report" / "summary.json").read_text(encoding="utf-8"))
    by_label = {int(c["label"]): c["metrics"] for c in summary["classes"].values()}
    for label, name in ((1, "organ"), (2, "lesion")):
        assert ours[f"val_dice_{name}"] == pytest.approx(by_label[label]["dice"]["mean"], abs=1e-6), name
        assert ours[f"val_hd95_{name}"] == pytest.approx(by_label[label]["hd95"]["mean"], rel=1e-5), name
    assert ours["val_mean_dice"] == pytest.approx(summary["mean_foreground"]["dice"], abs=1e-6)
    # finite whatever the prediction: a missed structure scores the image diagonal, not NaN/inf
    assert np.isfinite(ours["val_mean_hd95"])


@pytest.mark.slow
@pytest.mark.skipif(not HAS_FIRE, reason="python -m monai.bundle needs the fire package")
def test_bundle_tracks_to_mlflow_with_monai_tracking(tmp_path, tiny_dataset):
    import mlflow

    bundle = tmp_path / "b"
    shutil.copytree(BUNDLE, bundle)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monai_bundle("run", bundle, config_file="configs/train.json", epochs=1, tracking="mlflow", tracking_uri=uri,
                 experiment_name="bundle_test", dataset_dir=str(tiny_dataset), **TINY_OVERRIDES)
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("bundle_test")
    runs = client.search_runs([experiment.experiment_id])
    metrics = {k for run in runs for k in run.data.metrics}
    assert {"train_loss", "val_mean_dice", "val_hd95_lesion"} <= metrics, metrics
