from __future__ import annotations

import subprocess
import sys

import pytest

from medseg.cli.main import COMMANDS


def medseg(*args: str, cwd=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "medseg.cli.main", *args], capture_output=True, text=True, encoding="utf-8", errors="replace",
                          timeout=120, cwd=cwd)


def test_top_level_help():
    res = medseg("--help")
    assert res.returncode == 0
    for name in COMMANDS:
        assert name in res.stdout


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_command_help(command):
    res = medseg(command, "--help")
    assert res.returncode == 0, res.stderr
    assert f"usage: medseg {command}" in res.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["train", "--data", "x"], "the following arguments are required: --out"),
    (["train", "--data", "x", "--out", "y", "--epochs", "many"], "argument --epochs: invalid int value: 'many'"),
    (["synth", "out", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
], ids=["missing-flag", "bad-int", "unknown-flag", "unknown-command"])
def test_usage_errors_exit_2_with_one_line(args, message):
    res = medseg(*args)
    assert res.returncode == 2
    assert message in res.stderr
    assert "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(("args", "message"), [
    (["train", "--data", "{tmp}/nowhere", "--out", "{tmp}/run", "--no-check"], "no dataset.json found"),
    (["train", "--data", "{tmp}", "--out", "{tmp}/run", "--loss-args", "{{bad"], "--loss-args: not valid JSON"),
    (["predict", "--model", "{tmp}/none", "--input", "{tmp}", "--output", "{tmp}/o"], "no such file or directory"),
    (["synth", "{tmp}/d", "--size", "4"], "--size must be between 24 and 512 voxels, got 4"),
    (["train", "--data", "{tmp}", "--out", "{tmp}/run", "--epochs", "0", "--no-check"], "--epochs must be >= 1, got 0"),
], ids=["train-no-dataset", "train-bad-json", "predict-no-model", "synth-bad-size", "train-zero-epochs"])
def test_bad_paths_and_values_exit_2(tmp_path, args, message):
    res = medseg(*[a.format(tmp=tmp_path) for a in args])
    assert res.returncode == 2, res.stderr
    assert message in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_synth_then_predict_through_the_cli(tiny_run, tmp_path):
    res = medseg("synth", str(tmp_path / "d"), "--train-cases", "1", "--test-cases", "1", "--size", "24")
    assert res.returncode == 0, res.stderr
    res = medseg("predict", "--model", str(tiny_run.run_dir), "--input", str(tmp_path / "d/imagesTs"),
                 "--output", str(tmp_path / "p"), "--device", "cpu")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "p" / "case_001.nii.gz").is_file()


def test_help_stays_light_and_conventions_match():
    from medseg.cli.evaluate import HD_CONVENTIONS
    from medseg.metrics import CONVENTIONS

    assert tuple(HD_CONVENTIONS) == tuple(CONVENTIONS)
    code = "import sys, medseg.cli.main as m; m.build_parser(); print('scipy' in sys.modules, 'torch' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=60)
    assert res.stdout.split() == ["False", "False"], res.stderr
