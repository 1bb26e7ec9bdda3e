"""medseg evaluate on DICOM SEG: the same metrics as on the same masks as NIfTI; a SEG off the other side's
grid is refused (exit 2) naming both files."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest

from medseg.cli.main import main
from medseg.errors import InputError
from medseg.evaluation.evaluate import evaluate_folders
from medseg.io.dicom_seg import segments_for, write_dicom_seg
from medseg.io.dicom_series import discover_series
from medseg.io.dicom_volume import series_affine
from tests.io.dicom_factory import affine_of, rotation, write_series

LABELS = {0: "background", 1: "organ", 2: "lesion"}


def _ball(shape, centre, radius) -> np.ndarray:
    grid = np.indices(shape).transpose(1, 2, 3, 0)
    return np.linalg.norm(grid - np.asarray(centre), axis=-1) <= radius


def _masks(shape=(20, 16, 8)) -> tuple[np.ndarray, np.ndarray]:
    gt = _ball(shape, (10, 8, 4), 5).astype(np.uint8)
    gt[_ball(shape, (11, 8, 4), 2)] = 2
    pred = _ball(shape, (11, 7, 4), 5).astype(np.uint8)  # shifted one voxel in x and y
    pred[_ball(shape, (12, 8, 3), 2)] = 2
    return pred, gt


@pytest.fixture
def cases(tmp_path):
    """Two cases on two series (oblique and LPS-stored axial): masks as NIfTI and as SEG, and dataset.json."""
    out = {k: tmp_path / k for k in ("pred_nii", "gt_nii", "pred_seg", "gt_seg")}
    directions = {"case_a": rotation(0, 0.8, 0.6), "case_b": np.diag([-1.0, -1.0, 1.0])}
    for case, direction in directions.items():
        write_series(tmp_path / "src" / case, np.zeros((20, 16, 8), np.int16),
                     affine_of(direction, (0.8, 0.6, 2.5), (5.0, -3.0, 12.0)))
        [series] = discover_series(tmp_path / "src" / case)
        affine = series_affine(series)
        for kind, mask in zip(("pred", "gt"), _masks(), strict=True):
            out[f"{kind}_nii"].mkdir(exist_ok=True)
            nib.save(nib.Nifti1Image(mask, affine), out[f"{kind}_nii"] / f"{case}.nii.gz")
            write_dicom_seg(mask, series, segments_for(LABELS), out[f"{kind}_seg"] / f"{case}.seg.dcm", "m")
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {str(k): v for k, v in LABELS.items()}}))
    out["dataset"] = tmp_path / "dataset.json"
    return out


def _metrics(summary) -> list[dict]:
    with open(summary["outputs"]["metrics_csv"], encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_seg_evaluates_as_its_nifti(cases, tmp_path):
    def run(pred, gt, name, **kw):
        return _metrics(evaluate_folders(cases[pred], cases[gt], tmp_path / name, dataset=cases["dataset"],
                                         progress=False, **kw))

    reference = run("pred_nii", "gt_nii", "ref")
    assert len(reference) == 4 and {r["name"] for r in reference} == {"organ", "lesion"}
    assert 0.3 < float(reference[0]["dice"]) < 0.95  # overlapping, not equal: the metrics mean something
    assert run("pred_seg", "gt_nii", "a") == reference
    assert run("pred_nii", "gt_seg", "b") == reference
    # two SEGs share the span of their frames, not the full volume: only the default worst distance (the
    # image diagonal) depends on the grid, so it is fixed here
    fixed = run("pred_nii", "gt_nii", "ref2", worst_distance=50.0)
    assert run("pred_seg", "gt_seg", "c", worst_distance=50.0) == fixed


def test_single_seg_file_through_the_cli(cases, tmp_path, capsys):
    code = main(["evaluate", str(cases["pred_seg"] / "case_a.seg.dcm"), str(cases["gt_nii"]), "--out",
                 str(tmp_path / "o"), "--dataset", str(cases["dataset"])])
    assert code == 2  # one SEG file against a folder of two cases: case_b has no prediction
    assert "case_b: no prediction in" in capsys.readouterr().err
    (tmp_path / "gt1").mkdir()
    (tmp_path / "gt1" / "case_a.nii.gz").symlink_to(cases["gt_nii"] / "case_a.nii.gz")
    assert main(["evaluate", str(cases["pred_seg"] / "case_a.seg.dcm"), str(tmp_path / "gt1"), "--out",
                 str(tmp_path / "o"), "--dataset", str(cases["dataset"])]) == 0
    assert (tmp_path / "o" / "metrics.csv").is_file()


def test_seg_off_the_other_grid_is_refused_naming_both(cases, tmp_path, capsys):
    img = nib.load(cases["gt_nii"] / "case_a.nii.gz")
    moved = img.affine.copy()
    moved[:3, 3] += 0.5 * img.affine[:3, 0]  # half a voxel along x: same size, other grid
    (tmp_path / "gt_moved").mkdir()
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), moved), tmp_path / "gt_moved" / "case_a.nii.gz")
    seg = cases["pred_seg"] / "case_a.seg.dcm"
    assert main(["evaluate", str(seg), str(tmp_path / "gt_moved"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"{seg} does not lie on the voxel grid of {tmp_path / 'gt_moved' / 'case_a.nii.gz'}" in err
    assert "nothing is resampled" in err and not (tmp_path / "o").exists()


def test_seg_and_nifti_of_one_case_on_one_side_is_refused(cases, tmp_path):
    (cases["pred_seg"] / "case_a.nii.gz").symlink_to(cases["pred_nii"] / "case_a.nii.gz")
    with pytest.raises(InputError, match="case_a given both as DICOM SEG and as NIfTI; keep one"):
        evaluate_folders(cases["pred_seg"], cases["gt_nii"], tmp_path / "o", progress=False)
