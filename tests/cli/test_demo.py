"""The demo that `make demo` runs: the module the Makefile names, end to end on a tiny dataset."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from mlflow import MlflowClient

ROOT = Path(__file__).resolve().parents[2]


def _demo_module() -> str:
    match = re.search(r"^demo:.*\n\t\$\(PY\) -m ([\w.]+)", (ROOT / "Makefile").read_text(encoding="utf-8"), re.M)
    assert match, "Makefile has no 'demo' target running a module"
    return match.group(1)


def test_make_demo_runs_the_pipeline_end_to_end(tmp_path):
    out = tmp_path / "demo"
    res = subprocess.run([sys.executable, "-m", _demo_module(), "--out", str(out), "--epochs", "1",
                          "--train-cases", "6", "--test-cases", "2", "--size", "32"],
                         capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    for line in ("organ", "lesion", "report.html", "mlflow ui --backend-store-uri"):
        assert line in res.stdout
    assert sorted(p.name for p in (out / "predictions").iterdir()) == ["case_006.nii.gz", "case_007.nii.gz"]
    for name in ("metrics.csv", "summary.json", "report.html"):
        assert (out / "report" / name).is_file()
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("medseg-demo").experiment_id])
    assert run.info.status == "FINISHED"
    assert "evaluation" in {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "eval_dice_organ" in run.data.metrics and len(client.get_metric_history(run.info.run_id, "train_loss")) == 1
