"""The bundle's multi_gpu_train override under torchrun: 2 CPU processes (Gloo), no hang, same metric as 1 process."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from tests.bundle.conftest import BUNDLE, HAS_FIRE, TINY_OVERRIDES, monai_bundle

pytestmark = pytest.mark.skipif(not HAS_FIRE, reason="python -m monai.bundle needs the fire package")


def _cli(overrides: dict) -> list[str]:
    import json

    out = []
    for key, value in overrides.items():
        out += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    return out


@pytest.mark.slow
def test_torchrun_two_processes_train_and_validate_like_one(tmp_path, tiny_dataset):
    bundle = tmp_path / "b"
    shutil.copytree(BUNDLE, bundle)
    data = {"dataset_dir": str(tiny_dataset), **TINY_OVERRIDES}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "monai.bundle", "run", "--config_file", "['configs/train.json','configs/multi_gpu_train.json']",
           "--epochs", "2", *_cli(data)]
    # a deadlock (one rank in a collective the other never reaches) shows up as this timeout
    proc = subprocess.run(cmd, cwd=bundle, capture_output=True, text=True, encoding="utf-8", errors="replace",
                          timeout=150)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert sorted(p.name for p in (bundle / "models").iterdir() if p.name != ".gitkeep") == ["model.pt"]
    # rank 0 alone logs; both ranks validated their half of the cases and all-reduced the sums
    best = [float(v) for v in re.findall(r"Key metric: val_mean_dice best value: (\S+) at epoch", log)]
    assert len(best) == 2, log[-4000:]  # one line per validation (epochs 1 and 2), rank 0 only

    monai_bundle("run", bundle, config_file=["configs/train.json", "configs/evaluate.json"], **data)
    rows = dict(line.split(",")[:2] for line in (bundle / "eval" / "metrics.csv").read_text(encoding="utf-8").splitlines())
    assert float(rows["val_mean_dice"]) == pytest.approx(best[-1], abs=1e-9)

