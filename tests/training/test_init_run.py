"""A run started from a run: the source's validation Dice at epoch 0, the init report, MLflow tags, and a bundle
exported from it that names its parent and passes ``medseg bundle verify``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from mlflow import MlflowClient

from medseg.cli.main import main
from medseg.handlers.checkpoint import load_checkpoint
from medseg.training.train import TrainConfig, train
from medseg.utils.files import file_sha256
from medseg.utils.rundir import read_journal


@pytest.fixture(scope="module")
def finetuned(tiny_run, tiny_dataset, tmp_path_factory):
    base = tmp_path_factory.mktemp("finetuned")
    cfg = TrainConfig(data=str(tiny_dataset), out=str(base / "run"), tracking_uri=f"sqlite:///{base / 'mlflow.db'}",
                      experiment="tests", epochs=1, lr=1e-4, init=str(tiny_run.run_dir), freeze_encoder_epochs=1,
                      num_workers=0, progress=False)
    return train(cfg)


def test_initialised_run_reproduces_the_source_validation_dice_at_epoch_0(tiny_run, finetuned):
    source_best = load_checkpoint(tiny_run.best_checkpoint)["best_score"]
    journal = read_journal(finetuned.run_dir)
    assert journal[0]["epoch"] == 0 and [r["epoch"] for r in journal] == [0, 1]
    # same data, same split: the weights and the pre-processing transferred exactly
    assert journal[0]["metrics"]["val_mean_dice"] == pytest.approx(source_best, abs=1e-6)
    plans = json.loads((finetuned.run_dir / "plans.json").read_text(encoding="utf-8"))
    source_plan = load_checkpoint(tiny_run.best_checkpoint)["config"]["plan"]
    assert plans["plan"]["network"] == source_plan["network"] and plans["plan"]["spacing"] == source_plan["spacing"]
    assert plans["sources"]["filters"] == "source" and plans["init"]["kind"] == "run"


def test_init_report_and_mlflow_tags(tiny_run, finetuned):
    report = json.loads((finetuned.run_dir / "init.json").read_text(encoding="utf-8"))
    assert sorted(report["labels"]["matched"]) == ["background", "lesion", "organ"]
    assert report["reinitialised"] == [] and report["skipped"] == []
    assert len(report["loaded"]) == len(load_checkpoint(tiny_run.best_checkpoint)["model"])
    sha = file_sha256(tiny_run.best_checkpoint)
    assert report["source"]["sha256"] == sha
    tags = MlflowClient(finetuned.tracking_uri).get_run(finetuned.mlflow_run_id).data.tags
    assert tags["init_from"] == f"run:{tiny_run.run_dir.name}" and tags["init_sha256"] == sha


def test_exported_bundle_names_its_parent_and_verifies(tiny_run, finetuned, tmp_path, capsys):
    out = tmp_path / "bundle"
    assert main(["bundle", "export", str(finetuned.run_dir), str(out)]) == 0
    meta = json.loads((out / "configs" / "metadata.json").read_text(encoding="utf-8"))
    assert meta["parent"] == {"name": tiny_run.run_dir.name, "kind": "run",
                              "sha256": file_sha256(tiny_run.best_checkpoint)}
    assert "fine-tuned from run" in meta["changelog"]["0.1.0"]
    capsys.readouterr()
    assert main(["bundle", "verify", str(out)]) == 0, capsys.readouterr().out


class Payload:  # a pickled object: not a tensor or primitive container
    pass


def test_cli_refuses_a_checkpoint_holding_pickled_code(tiny_dataset, tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "extra": Payload()}, evil)
    res = subprocess.run([sys.executable, "-m", "medseg.cli.main", "train", "--data", str(tiny_dataset), "--out",
                          str(tmp_path / "run"), "--init", str(evil), "--no-check"], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 2, res.stderr
    assert f"{evil}: contains a pickled object" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()
