"""``medseg train --loss NAME`` runs end to end for every registered loss (one short epoch each)."""

from __future__ import annotations

import json

import pytest
from mlflow import MlflowClient

from medseg.cli.main import main
from medseg.losses import LOSSES

# losses that need arguments to be meaningful as a stand-alone training loss
LOSS_ARGS = {
    "weighted_sum": {"terms": {"dice": 1.0, "boundary_only": 0.1}},
    "deep_supervision": {"loss": "generalized_dice"},
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('losses') / 'mlflow.db'}"


@pytest.mark.slow
@pytest.mark.parametrize("name", list(LOSSES.names))
def test_every_registered_loss_trains(name, tiny_dataset, tmp_path, store, capsys):
    out = tmp_path / "run"
    code = main(["train", "--data", str(tiny_dataset), "--out", str(out), "--epochs", "1", "--loss", name,
                 "--loss-args", json.dumps(LOSS_ARGS.get(name, {})), "--patch-size", "16", "16", "16",
                 "--channels", "8", "16", "32", "--tracking-uri", store, "--experiment", f"loss-{name}",
                 "--no-progress", "--no-check"])
    assert code == 0, capsys.readouterr().err
    journal = [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    loss_value = journal[0]["metrics"]["train_loss"]
    assert loss_value == loss_value and abs(loss_value) < 1e6  # finite
    run_id = json.loads((out / "mlflow_run.json").read_text(encoding="utf-8"))["run_id"]
    assert MlflowClient(store).get_run(run_id).data.params["loss"] == name


def test_unknown_loss_is_a_usage_error(tiny_dataset, tmp_path, capsys):
    code = main(["train", "--data", str(tiny_dataset), "--out", str(tmp_path / "r"), "--loss", "dicee",
                 "--no-check"])
    err = capsys.readouterr().err
    assert code == 2 and "dicee" in err and "dice_ce" in err
    assert not (tmp_path / "r" / "checkpoints").exists()
