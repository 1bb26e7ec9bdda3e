"""A training run that fails after its MLflow run was opened ends as FAILED, never RUNNING."""

from __future__ import annotations

import shutil

import pytest

from medseg.training.train import TrainConfig, prepare_plan, train
from tests.conftest import TINY_TRAIN


@pytest.mark.slow
def test_a_run_failing_inside_the_training_loop_ends_failed(tmp_path, tiny_dataset):
    from mlflow.tracking import MlflowClient

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # no cache and no check: the files are first read inside the training loop, after the run opened
    cfg = TrainConfig(data=str(data), out=str(tmp_path / "run"), tracking_uri=uri, experiment="failing",
                      cache="ram", cache_rate=0.0, check_data=False, **{**TINY_TRAIN, "epochs": 1})
    prepare_plan(cfg)  # planned while the files are good
    for label in sorted((data / "labelsTr").glob("*.nii.gz")):  # then unreadable when the loop reads them
        label.write_bytes(label.read_bytes()[:100])
    with pytest.raises(Exception):  # noqa: B017 - whatever the reader raises, the run must be closed
        train(cfg)
    runs = MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name("failing").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
