"""Shared fixtures: a tiny synthetic dataset and a tiny trained run (built once per test process)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

TINY_TRAIN = {"epochs": 2, "patch_size": (16, 16, 16), "channels": (8, 16, 32), "strides": (2, 2),
              "batch_size": 2, "samples_per_case": 1, "progress": False}


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 training + 2 test cases of 32x32x16 voxels (every third stored LPS)."""
    from medseg.data.synth import SynthConfig, synthesise_dataset

    root = tmp_path_factory.mktemp("tiny_dataset")
    synthesise_dataset(root, SynthConfig(train_cases=6, test_cases=2, size=32, seed=1))
    return root


@pytest.fixture(scope="session")
def tiny_run(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory):
    """A 2-epoch training run on ``tiny_dataset`` tracked in a SQLite MLflow store."""
    from medseg.training.train import TrainConfig, train

    base = tmp_path_factory.mktemp("tiny_run")
    cfg = TrainConfig(data=str(tiny_dataset), out=str(base / "run"), tracking_uri=f"sqlite:///{base / 'mlflow.db'}",
                      experiment="tests", **TINY_TRAIN)
    return train(cfg)


@pytest.fixture(scope="session")
def learning_train_args() -> dict:
    """TrainConfig settings that learn the organ of 32x32x16-voxel phantoms (3 mm voxels) in ~20 epochs on a CPU."""
    return {"epochs": 20, "lr": 1e-2, "patch_size": (32, 32, 16), "channels": (8, 16, 32), "strides": (2, 2),
            "deep_supervision": False, "num_res_units": 0, "batch_size": 2, "samples_per_case": 1,
            "val_interval": 20, "progress": False, "device": "cpu"}
