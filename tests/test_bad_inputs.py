"""Bad-input matrix: every broken dataset is refused by ``medseg check`` and ``medseg train``.

Each case starts from a tiny valid MSD dataset (8x8x8 volumes, built here with nibabel), breaks
one thing, and asserts through the real CLI: exit code 2, a message naming the file and the
problem, no traceback, and nothing written.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.cli.main import main
from medseg.data.check import check_dataset

SHAPE = (8, 8, 8)
AFFINE = np.array([[0.8, 0, 0, -10.0], [0, 0.8, 0, 20.0], [0, 0, 2.5, 5.0], [0, 0, 0, 1]])


def _save(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE, qform: np.ndarray | None = None) -> None:
    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine if qform is None else qform, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.to_filename(path)


def _label(seed: int) -> np.ndarray:
    lab = np.zeros(SHAPE, np.uint8)
    lab[2:6, 2:6, 2:6] = 1  # organ: 64 voxels
    lab[3 + seed % 2, 3, 3] = 2  # lesion: one voxel
    return lab


def make_dataset(root: Path) -> Path:
    """A valid MSD dataset: 2 training cases and 1 test case (test label in labelsTs)."""
    rng = np.random.default_rng(0)
    entries = {"training": [], "test": []}
    for i, kind in enumerate(["training", "training", "test"]):
        sub = "Tr" if kind == "training" else "Ts"
        name = f"case_{i:03d}.nii.gz"
        _save(root / f"images{sub}" / name, rng.normal(0, 100, SHAPE).astype(np.float32))
        _save(root / f"labels{sub}" / name, _label(i))
        entries[kind].append({"image": f"./images{sub}/{name}", "label": f"./labels{sub}/{name}"})
    meta = {"name": "tiny", "modality": {"0": "CT"}, "labels": {"0": "background", "1": "organ", "2": "lesion"},
            "numTraining": 2, "numTest": 1, **entries}
    (root / "dataset.json").write_text(json.dumps(meta, indent=2))
    return root


# --- the breakages: each returns the file that must be named ------------------------------------


def truncated_gz(root: Path) -> Path:
    f = root / "imagesTr/case_000.nii.gz"
    f.write_bytes(f.read_bytes()[: f.stat().st_size * 2 // 3])
    return f


def corrupted_gzip_byte(root: Path) -> Path:
    f = root / "imagesTr/case_001.nii.gz"
    raw = bytearray(f.read_bytes())
    raw[len(raw) // 2] ^= 0x10  # one flipped bit in the deflate stream; the CRC-32 catches it
    f.write_bytes(bytes(raw))
    return f


def empty_file(root: Path) -> Path:
    f = root / "labelsTr/case_000.nii.gz"
    f.write_bytes(b"")
    return f


def shape_mismatch(root: Path) -> Path:
    f = root / "labelsTr/case_001.nii.gz"
    _save(f, _label(1)[:, :, :6])
    return f


def _relabel_geometry(affine: np.ndarray) -> Callable[[Path], Path]:
    def breaker(root: Path) -> Path:
        f = root / "labelsTr/case_000.nii.gz"
        _save(f, _label(0), affine)
        return f
    return breaker


spacing_mismatch = _relabel_geometry(AFFINE @ np.diag([1, 1, 1.2, 1]))  # z spacing 2.5 -> 3.0 mm
origin_mismatch = _relabel_geometry(AFFINE + np.array([[0, 0, 0, 5.0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]))
direction_mismatch = _relabel_geometry(AFFINE @ np.diag([-1, 1, 1, 1]))  # x axis flipped, same origin


def qform_sform_disagree(root: Path) -> Path:
    f = root / "imagesTr/case_001.nii.gz"
    shifted = AFFINE.copy()
    shifted[:3, 3] += (12.0, 0.0, 0.0)  # qform 12 mm away from the sform
    _save(f, np.ones(SHAPE, np.float32), AFFINE, qform=shifted)
    return f


def label_4d(root: Path) -> Path:
    f = root / "labelsTr/case_001.nii.gz"
    _save(f, np.stack([_label(1), _label(1)], axis=-1))
    return f


def float_labels(root: Path) -> Path:
    f = root / "labelsTr/case_000.nii.gz"
    lab = _label(0).astype(np.float32)
    lab[lab == 1] = 0.9999  # an int cast would make the organ background
    _save(f, lab)
    return f


def label_outside_map(root: Path) -> Path:
    f = root / "labelsTr/case_001.nii.gz"
    lab = _label(1)
    lab[0, 0, 0] = 3  # the label map stops at 2
    _save(f, lab)
    return f


def _bad_value(value: float) -> Callable[[Path], Path]:
    def breaker(root: Path) -> Path:
        f = root / "imagesTr/case_000.nii.gz"
        img = np.zeros(SHAPE, np.float32)
        img[1, 2, 3] = value
        _save(f, img)
        return f
    return breaker


nan_image = _bad_value(float("nan"))
inf_image = _bad_value(float("inf"))


def missing_label(root: Path) -> Path:
    f = root / "labelsTr/case_001.nii.gz"
    f.unlink()
    return f


def missing_test_image(root: Path) -> Path:
    f = root / "imagesTs/case_002.nii.gz"
    f.unlink()
    return f


def count_mismatch(root: Path) -> Path:
    f = root / "dataset.json"
    meta = json.loads(f.read_text(encoding="utf-8"))
    meta["numTraining"] = 3
    f.write_text(json.dumps(meta))
    return f


# id -> (breaker, problem text, a value that must be shown)
CASES: dict[str, tuple[Callable[[Path], Path], str, str]] = {
    "truncated_gz": (truncated_gz, "truncated gzip stream", "bytes on disk"),
    "corrupted_gzip_byte": (corrupted_gzip_byte, "corrupted gzip stream", "bytes on disk"),
    "empty_file": (empty_file, "empty label file", "0 bytes"),
    "shape_mismatch": (shape_mismatch, "shape differs", "(8, 8, 6)"),
    "spacing_mismatch": (spacing_mismatch, "spacing differs", "3."),
    "origin_mismatch": (origin_mismatch, "origin differs", "-5."),
    "direction_mismatch": (direction_mismatch, "direction differs", "-1."),
    "qform_sform_disagree": (qform_sform_disagree, "qform and sform disagree", "12 mm"),
    "label_4d": (label_4d, "label is 4D", "(8, 8, 8, 2)"),
    "float_labels_0.9999": (float_labels, "label values are not integers", "0.9999"),
    "label_outside_map": (label_outside_map, "label values outside the dataset.json label map", "3"),
    "nan_image": (nan_image, "non-finite values", "1 NaN"),
    "inf_image": (inf_image, "non-finite values", "1 Inf"),
    "missing_label": (missing_label, "label file not found", ""),
    "missing_test_image": (missing_test_image, "image file not found", ""),
    "count_mismatch": (count_mismatch, "numTraining does not match", "numTraining=3, cases=2"),
}


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(params=list(CASES), ids=list(CASES))
def bad(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, Path, str, str]:
    root = make_dataset(tmp_path / "ds")
    breaker, problem, value = CASES[request.param]
    return root, breaker(root), problem, value


def test_valid_dataset_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_dataset(tmp_path / "ds")
    assert main(["check", str(root)]) == 0
    out = capsys.readouterr().out
    assert "2 training and 1 test cases checked, 0 error(s), 0 warning(s)" in out


def test_api_reports_the_problem(bad: tuple[Path, Path, str, str]) -> None:
    root, file, problem, value = bad
    report = check_dataset(root)
    hits = [p for p in report.errors if p.file == str(file) and problem in p.problem]
    assert hits, f"no {problem!r} error for {file}; got {[str(p) for p in report.errors]}"
    assert value in str(hits[0])


def test_check_cli_refuses(bad: tuple[Path, Path, str, str], tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    root, file, problem, value = bad
    before = _snapshot(tmp_path)
    assert main(["check", str(root)]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("medseg check: error: dataset ")
    line = next((ln for ln in err.splitlines() if str(file) in ln and problem in ln), None)
    assert line is not None, err
    assert value in line
    assert "Traceback" not in out + err
    assert _snapshot(tmp_path) == before


def test_train_refuses_before_training(bad: tuple[Path, Path, str, str], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    root, file, problem, _ = bad
    run_dir = tmp_path / "run"
    before = _snapshot(tmp_path)
    code = main(["train", "--data", str(root), "--out", str(run_dir), "--epochs", "1",
                 "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 2, err
    assert err.startswith("medseg train: error: ")
    assert str(file) in err and problem in err, err
    assert "Traceback" not in out + err
    assert _snapshot(tmp_path) == before  # no run directory, no MLflow store, data untouched


def test_subprocess_no_traceback(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds")
    truncated_gz(root)
    float_labels(root)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "medseg.cli.main", "check", str(root)], capture_output=True,
                          text=True, encoding="utf-8", errors="replace", env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "truncated gzip stream" in proc.stderr and "0.9999" in proc.stderr  # both, in one pass
    assert "Traceback" not in proc.stdout + proc.stderr


def test_corrupted_byte_is_invisible_to_nibabel(tmp_path: Path) -> None:
    """Why the whole stream is read: nibabel stops at the last voxel and never checks the CRC."""
    root = make_dataset(tmp_path / "ds")
    f = root / "imagesTr/case_001.nii.gz"
    raw = bytearray(f.read_bytes())
    raw[-6] ^= 0xFF  # inside the CRC-32 trailer: the voxel data decompresses fine
    f.write_bytes(bytes(raw))
    assert nib.load(f).get_fdata().shape == SHAPE
    with pytest.raises(gzip.BadGzipFile):
        gzip.decompress(bytes(raw))
    report = check_dataset(root)
    assert [p.file for p in report.errors] == [str(f)]
    assert "CRC check failed" in report.errors[0].problem
