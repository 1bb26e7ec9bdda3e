from __future__ import annotations

import json

import pytest
from mlflow import MlflowClient

from medseg.errors import InputError
from medseg.training.train import TrainConfig, load_run_config, train


def test_run_directory(tiny_run):
    run_dir = tiny_run.run_dir
    assert (run_dir / "config.json").is_file() and (run_dir / "datalist.json").is_file()
    assert tiny_run.best_checkpoint.is_file()
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("last_epoch=*.pt")) == [
        "last_epoch=1.pt", "last_epoch=2.pt"]
    journal = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["epoch"] for r in journal] == [1, 2]
    assert {"train_loss", "lr", "val_mean_dice"} <= set(journal[0]["metrics"])
    assert load_run_config(run_dir).epochs == 2
    split = json.loads((run_dir / "datalist.json").read_text(encoding="utf-8"))
    assert len(split["training"]) + len(split["validation"]) == 6
    assert not {d["case_id"] for d in split["training"]} & {d["case_id"] for d in split["validation"]}


def test_mlflow_run_has_params_series_and_artifacts(tiny_run):
    client = MlflowClient(tiny_run.tracking_uri)
    run = client.get_run(tiny_run.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["loss"] == "dice_ce" and run.data.params["epochs"] == "2"
    assert run.data.tags["loss"] == "dice_ce" and "git_commit" in run.data.tags
    for key in ("train_loss", "val_mean_dice", "val_dice_organ", "val_dice_lesion", "val_hd95_organ",
                "val_iou_lesion"):
        history = client.get_metric_history(tiny_run.mlflow_run_id, key)
        assert sorted(m.step for m in history) == [1, 2], key
    artifacts = {a.path for a in client.list_artifacts(tiny_run.mlflow_run_id)}
    assert {"config.json", "checkpoints", "metrics.jsonl"} <= artifacts
    ckpts = {a.path for a in client.list_artifacts(tiny_run.mlflow_run_id, "checkpoints")}
    assert "checkpoints/best.pt" in ckpts


def test_refuses_to_overwrite_a_run(tiny_run, tiny_dataset):
    cfg = TrainConfig(data=str(tiny_dataset), out=str(tiny_run.run_dir), epochs=1)
    with pytest.raises(InputError, match="already holds checkpoints; use --resume"):
        train(cfg)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("epochs", 0, "--epochs must be >= 1, got 0"),
    ("patch_size", (20, 16, 16), r"--patch-size \[20, 16, 16\]: each side must be divisible by 8"),
    ("lr", -1.0, "--lr must be > 0, got -1.0"),
    ("val_interval", 0, r"--val-interval must be in \[1, --epochs=40\], got 0"),
    ("val_interval", 41, r"--val-interval must be in \[1, --epochs=40\], got 41"),
    ("channels", (16,), r"--channels needs at least two levels, got \[16\]"),
], ids=["epochs", "patch", "lr", "val-interval-0", "val-interval-too-large", "one-level"])
def test_config_validation(tmp_path, field, value, message):
    extra = {"strides": (2, 2, 2)} if field == "patch_size" else {}  # planned runs check it against the plan
    cfg = TrainConfig(data=str(tmp_path), out=str(tmp_path / "run"), **{field: value}, **extra)
    with pytest.raises(InputError, match=message):
        cfg.validate()


def test_resume_without_checkpoint_is_an_error(tmp_path, tiny_dataset):
    cfg = TrainConfig(data=str(tiny_dataset), out=str(tmp_path / "run"), epochs=1)
    with pytest.raises(InputError, match="--resume: no readable checkpoint"):
        train(cfg, resume=True)


def test_resume_keeps_the_best_score_of_best_pt(tmp_path):
    """best.pt can be newer than the last checkpoint (a crash between the two saves): its score wins."""
    from types import SimpleNamespace

    import torch

    from medseg.handlers.checkpoint import CheckpointSaver, load_checkpoint
    from medseg.training.builders import _best_score

    saver = CheckpointSaver(tmp_path, {"model": torch.nn.Linear(1, 1)}, extra=lambda: {"best_score": saver.best_score})
    engine = SimpleNamespace(state=SimpleNamespace(epoch=1))
    saver.save_best(engine, 0.5)
    saver.save_last(engine)
    engine.state.epoch = 2
    saver.save_best(engine, 0.9)  # the epoch-2 last checkpoint was never written
    resumed = load_checkpoint(tmp_path / "last_epoch=1.pt")
    assert resumed["best_score"] == 0.5
    assert _best_score(tmp_path, resumed) == 0.9


def test_default_tracking_uri_is_saved_for_resume(tiny_run):
    saved = load_run_config(tiny_run.run_dir).tracking_uri
    assert saved == tiny_run.tracking_uri and saved.startswith("sqlite:///")
