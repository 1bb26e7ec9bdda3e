"""``benchmarks/gpu_check.py --quick``: its tables, its JSON, and what it says without CUDA."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.losses import LOSSES
from medseg.metrics import CONVENTIONS, METRIC_NAMES

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
# packages of the test and onnx extras: the script must run with a plain `pip install -e .`
EXTRAS = ("pytest", "hypothesis", "medpy", "surface_distance", "onnx", "onnxruntime", "onnxscript")


def _script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_quick_run_prints_tables_and_writes_json(tmp_path):
    out = tmp_path / "report" / "gpu.json"
    code = (f"import runpy, sys; sys.modules.update(dict.fromkeys({EXTRAS!r})); "
            f"sys.argv = ['gpu_check.py', '--quick', '--json', {str(out)!r}]; "
            f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8",
                          errors="replace", timeout=300, cwd=SCRIPT.parents[1])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout
    for title in ("== training", "== inference", "== agreement"):
        assert title in text
    report = json.loads(out.read_text(encoding="utf-8"))
    assert set(report) >= {"environment", "cuda_available", "training", "inference", "agreement", "tolerances",
                           "passed", "seconds"}
    assert report["quick"] is True and report["passed"] is True
    assert report["cuda_available"] == torch.cuda.is_available()

    (train,) = [r for r in report["training"] if r["precision"] == "fp32"]
    assert train["steps_per_s"] > 0 and np.isfinite(train["final_loss"])
    assert all(r["volumes_per_s"] > 0 for r in report["inference"])

    rows = report["agreement"]
    checked = {(r["check"], r["name"]) for r in rows}
    for name in LOSSES.names:  # every registered loss, value and gradient
        assert {("loss value", name), ("loss gradient", name)} <= checked, name
    for convention in CONVENTIONS:
        assert {(f"metric {convention}", m) for m in METRIC_NAMES} <= checked
    reference = [r for r in rows if r["check"].startswith("vs MONAI")]
    assert {r["name"] for r in reference} == set(METRIC_NAMES)
    assert all(r["status"] == "PASS" for r in reference)  # runs on any device
    if torch.cuda.is_available():
        assert all(r["status"] == "PASS" for r in rows)
        assert "CUDA not found" not in text
    else:
        assert "CUDA not found" in text.splitlines()[1]  # said up front, and again at the end
        assert text.rstrip().splitlines()[-2] == "CUDA not found: only the CPU part ran."
        device_rows = [r for r in rows if not r["check"].startswith("vs MONAI")]
        assert all(r["status"] == "SKIP" and r["other"] is None for r in device_rows)
        assert [r["precision"] for r in report["training"]] == ["fp32"]
        assert all(r["peak_mem_mb"] is None for r in report["training"] + report["inference"])


def test_comparison_fails_beyond_its_tolerance():
    gc = _script()
    cpu = np.array([1e-4, -2e-4, 3e-4])
    # tolerance 1e-8 + 1e-4 * 3e-4 = 4e-8: a 1e-8 difference passes, 1e-6 fails
    assert gc._compare("loss gradient", "x", cpu, cpu + 1e-8)["status"] == "PASS"
    row = gc._compare("loss gradient", "x", cpu, cpu + 1e-6)
    assert row["status"] == "FAIL" and row["max_abs_diff"] == pytest.approx(1e-6)
    assert row["tolerance"] == pytest.approx(4e-8)
    assert gc._compare("loss value", "x", np.array([2.0]), None)["status"] == "SKIP"
