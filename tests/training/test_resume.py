"""Crash safety end to end: SIGKILL a training mid-epoch, resume it, and find one complete run.

Runs the real ``medseg train`` in a subprocess on a tiny synthetic dataset (16 cases of 32x32x16
voxels, 2-fold split so 8 training iterations per epoch, 16^3 patches, a 3-level U-Net).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("resume")]  # one worker, file order

EPOCHS = 4
CLI = [sys.executable, "-m", "medseg.cli.main"]
TINY = ["--patch-size", "16", "16", "16", "--channels", "8", "16", "32", "--batch-size", "1", "--folds", "2",
        "--num-workers", "0", "--no-progress", "--experiment", "resume-test"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONWARNINGS": "ignore", "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}


def _train(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "train", *args], capture_output=True, text=True, encoding="utf-8", errors="replace", env=_env(), timeout=timeout)


def _epoch(path: Path) -> int:
    from medseg.utils.trust import safe_torch_load

    return int(safe_torch_load(path)["epoch"])


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Start a 4-epoch training, SIGKILL it inside epoch 2 (after its first checkpoint), resume it."""
    from medseg.data.synth import SynthConfig, synthesise_dataset

    base = tmp_path_factory.mktemp("resume")
    data, run = base / "data", base / "run"
    synthesise_dataset(data, SynthConfig(train_cases=16, test_cases=1, size=32, seed=0))
    uri = f"sqlite:///{base / 'mlflow.db'}"
    args = ["--data", str(data), "--out", str(run), "--tracking-uri", uri, *TINY]

    proc = subprocess.Popen([*CLI, "train", *args, "--epochs", str(EPOCHS)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, encoding="utf-8", errors="replace", env=_env())
    lines: list[str] = []
    epoch1_done = threading.Event()

    def read() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if "SupervisedTrainer: Epoch[1] Complete" in line:  # epoch 1's handlers (checkpoint) are done
                epoch1_done.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    epoch1_done.wait(timeout=180)
    time.sleep(0.05)  # epoch 2 has begun: 8 iterations of ~0.1 s each lie ahead
    alive = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    reader.join(timeout=10)
    log = "".join(lines)
    assert epoch1_done.is_set() and alive, f"training was not killed inside epoch 2:\n{log}"
    assert proc.returncode == -signal.SIGKILL
    ckpts = sorted(p.name for p in (run / "checkpoints").glob("last_epoch=*.pt"))
    assert ckpts == ["last_epoch=1.pt"], f"killed after epoch 2 completed: {ckpts}\n{log}"
    journal_before = (run / "metrics.jsonl").read_text(encoding="utf-8")

    resumed = _train(*args, "--epochs", str(EPOCHS), "--resume")
    return {"run": run, "uri": uri, "resumed": resumed, "data": data, "journal_before": journal_before}


def _copy_run(src: Path, dst: Path) -> Path:
    """Copy a run folder; its config.json records the folder, so point that at the copy.

    (``--resume --out COPY`` should resume COPY on its own: see test_moved_run_directory_resumes_in_place.)
    """
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text(encoding="utf-8"))
    cfg["out"] = str(dst)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def _mlflow_runs(uri: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("resume-test")
    return client, client.search_runs([exp.experiment_id])


def test_resume_finishes_in_one_mlflow_run_without_gaps(killed_and_resumed: dict) -> None:
    res = killed_and_resumed["resumed"]
    assert res.returncode == 0, res.stdout + res.stderr
    run = killed_and_resumed["run"]
    assert f"resuming from {run / 'checkpoints' / 'last_epoch=1.pt'} (epoch 1)" in res.stderr
    assert [json.loads(x)["epoch"] for x in killed_and_resumed["journal_before"].splitlines()] == [1]
    assert _epoch(run / "checkpoints" / f"last_epoch={EPOCHS}.pt") == EPOCHS
    client, runs = _mlflow_runs(killed_and_resumed["uri"])
    assert len(runs) == 1
    assert runs[0].info.status == "FINISHED"
    history = client.get_metric_history(runs[0].info.run_id, "train_loss")
    assert sorted(m.step for m in history) == list(range(1, EPOCHS + 1))  # one value per epoch, no gap
    journal = [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    assert [r["epoch"] for r in journal] == list(range(1, EPOCHS + 1))


def test_resume_restores_optimizer_and_scheduler(killed_and_resumed: dict) -> None:
    from medseg.utils.trust import safe_torch_load

    state = safe_torch_load(killed_and_resumed["run"] / "checkpoints" / f"last_epoch={EPOCHS}.pt")
    assert state["epoch"] == EPOCHS
    assert state["scheduler"]["last_epoch"] == EPOCHS  # stepped once per epoch across the crash
    iterations = state["trainer"]["iteration"]
    assert iterations == EPOCHS * state["trainer"]["epoch_length"]
    # AdamW's step count would restart at 0 if the optimizer state were not restored
    assert {int(s["step"]) for s in state["optimizer"]["state"].values()} == {iterations}


def test_truncated_newest_checkpoint_is_reported_and_previous_used(killed_and_resumed: dict, tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    from medseg.cli.main import main

    run = _copy_run(killed_and_resumed["run"], tmp_path / "run")
    newest = run / "checkpoints" / f"last_epoch={EPOCHS}.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    caplog.set_level("INFO")
    assert main(["train", "--data", str(killed_and_resumed["data"]), "--out", str(run), "--epochs", str(EPOCHS + 1),
                 "--resume", "--no-progress"]) == 0
    messages = [r.getMessage() for r in caplog.records]
    assert any(str(newest) in m and "truncated or corrupt" in m for m in messages), caplog.text
    previous = run / "checkpoints" / f"last_epoch={EPOCHS - 1}.pt"
    assert f"resuming from {previous} (epoch {EPOCHS - 1})" in messages
    assert _epoch(run / "checkpoints" / f"last_epoch={EPOCHS + 1}.pt") == EPOCHS + 1
    client, runs = _mlflow_runs(killed_and_resumed["uri"])
    assert len(runs) == 1
    assert sorted(m.step for m in client.get_metric_history(runs[0].info.run_id, "train_loss")) == \
        list(range(1, EPOCHS + 2))


def test_checkpoint_with_pickled_object_is_refused(killed_and_resumed: dict, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str],
                                                   caplog: pytest.LogCaptureFixture) -> None:
    from medseg.cli.main import main

    run = _copy_run(killed_and_resumed["run"], tmp_path / "run")
    for old in (run / "checkpoints").glob("*.pt"):
        old.unlink()
    evil = run / "checkpoints" / "last_epoch=9.pt"
    torch.save({"epoch": 9, "model": {}, "payload": _Payload(tmp_path / "pwned")}, evil)
    assert main(["train", "--data", str(killed_and_resumed["data"]), "--out", str(run), "--resume",
                 "--no-progress"]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("medseg train: error: --resume: no readable checkpoint in ")
    reported = [r.getMessage() for r in caplog.records if str(evil) in r.getMessage()]
    assert reported and "pickled object" in reported[0], caplog.text
    assert "Traceback" not in out + err
    assert not (tmp_path / "pwned").exists()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last_epoch=9.pt"]


def test_resume_without_checkpoint_is_an_error(killed_and_resumed: dict, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from medseg.cli.main import main

    run = _copy_run(killed_and_resumed["run"], tmp_path / "run")
    shutil.rmtree(run / "checkpoints")
    data = str(killed_and_resumed["data"])
    assert main(["train", "--data", data, "--out", str(run), "--resume", "--no-progress"]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("medseg train: error: --resume: no readable checkpoint in ")
    assert "Traceback" not in out + err
    assert not (run / "checkpoints").exists()
    assert main(["train", "--data", data, "--out", str(tmp_path / "never"), "--resume"]) == 2
    assert "not a training run directory" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_moved_run_directory_resumes_in_place(killed_and_resumed: dict, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from medseg.cli.main import main

    run = tmp_path / "moved"
    shutil.copytree(killed_and_resumed["run"], run)
    shutil.rmtree(run / "checkpoints")  # nothing to resume here: must be refused, not resume the original
    assert main(["train", "--data", str(killed_and_resumed["data"]), "--out", str(run), "--resume",
                 "--no-progress"]) == 2
    assert f"no readable checkpoint in {run / 'checkpoints'}" in capsys.readouterr().err


class _Payload:
    """Unpickling this would run a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))
