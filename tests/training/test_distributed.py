"""Two Gloo processes on CPU: one checkpoint set, one MLflow run, validation equal to a single-process evaluation."""

from __future__ import annotations

import json

import pytest
import torch
from mlflow import MlflowClient

from medseg.cli.main import main


def _single_process_val_dice(run_dir, dataset) -> float:
    """Evaluate best.pt on the run's validation cases in this process with MONAI's evaluator."""
    from monai.data import DataLoader, Dataset
    from monai.engines import SupervisedEvaluator
    from monai.inferers import SlidingWindowInferer
    from monai.transforms import AsDiscreted, Compose

    from medseg.data.datalist import load_dataset
    from medseg.handlers.metrics import validation_metrics
    from medseg.inference.predict import load_model
    from medseg.preprocessing.pipeline import val_transforms

    model = load_model(run_dir / "checkpoints" / "best.pt", torch.device("cpu"))
    plan = model.plan  # the run's own plan, read back from its checkpoint
    ds = load_dataset(dataset)
    val = json.loads((run_dir / "datalist.json").read_text(encoding="utf-8"))["validation"]
    metrics = validation_metrics(num_classes=ds.num_classes, label_names=ds.labels)
    post = Compose([AsDiscreted(keys="pred", argmax=True, to_onehot=ds.num_classes),
                    AsDiscreted(keys="label", to_onehot=ds.num_classes)])
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"), val_data_loader=DataLoader(Dataset(val, val_transforms(plan)), batch_size=1),
        network=model.network, postprocessing=post,
        inferer=SlidingWindowInferer(roi_size=plan.patch_size, sw_batch_size=4, overlap=0.25, mode="gaussian"),
        key_val_metric={"mean_dice": metrics.pop("mean_dice")}, additional_metrics=metrics)
    evaluator.run()
    return float(evaluator.state.metrics["mean_dice"])


@pytest.mark.slow
def test_two_gloo_processes(tmp_path, tiny_dataset):
    run_dir, db = tmp_path / "run", tmp_path / "mlflow.db"
    code = main(["train", "--data", str(tiny_dataset), "--out", str(run_dir), "--nproc", "2", "--device", "cpu",
                 "--epochs", "2", "--folds", "3", "--patch-size", "16", "16", "16", "--channels", "8", "16", "32",
                 "--no-progress", "--no-check", "--tracking-uri", f"sqlite:///{db}", "--experiment", "ddp"])
    assert code == 0
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.pt", "last_epoch=1.pt",
                                                                          "last_epoch=2.pt"]
    client = MlflowClient(f"sqlite:///{db}")
    runs = client.search_runs([client.get_experiment_by_name("ddp").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(runs[0].info.run_id, "val_mean_dice")) == [1, 2]

    journal = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["epoch"] for r in journal] == [1, 2]
    best = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    best_record = next(r for r in journal if r["epoch"] == best["epoch"])
    assert not any(k.startswith("module.") for k in best["model"])
    assert _single_process_val_dice(run_dir, tiny_dataset) == pytest.approx(
        best_record["metrics"]["val_mean_dice"], abs=1e-5)
