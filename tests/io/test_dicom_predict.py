"""medseg predict on DICOM: the mask of a series equals the mask of the same volume as NIfTI, in every orientation;
studies with several series; --series-uid; each refusal exits 2 naming the series; DICOM SEG written beside."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom.data
import pytest

from medseg.cli.main import main
from medseg.errors import InputError
from medseg.inference.predict import predict
from medseg.io.dicom_series import discover_series
from tests.io.dicom_factory import (
    affine_of,
    assert_same_in_patient_space,
    rotation,
    save,
    series_datasets,
    write_series,
)
from tests.io.test_dicom_series import REFUSALS

DICOMDIR_TESTS = Path(pydicom.data.__file__).parent / "test_files" / "dicomdirtests"
# the test image's own affine, then other directions with the same voxel sizes (3-4-5 cosines: exact decimals)
DIRECTIONS = {
    "sagittal": np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]),
    "coronal-lps": np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, -1.0, 0.0]]),
    "oblique": rotation(0, 0.8, 0.6) @ rotation(2, 0.6, 0.8),
}


def _test_image(tiny_dataset: Path, case: str = "case_006") -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(tiny_dataset / "imagesTs" / f"{case}.nii.gz")
    return np.asarray(img.dataobj).astype(np.int16), img.affine


def _phantom(tiny_dataset: Path, direction: str) -> tuple[np.ndarray, np.ndarray]:
    vox, aff = _test_image(tiny_dataset)
    if direction == "as-stored":
        return vox, aff
    return vox, affine_of(DIRECTIONS[direction], tuple(np.linalg.norm(aff[:3, :3], axis=0)), (12.0, -30.0, 8.0))


def _run(*args) -> int:
    try:
        return main(["predict", *map(str, args)])
    except SystemExit as exc:  # argparse usage errors
        return int(exc.code)


@pytest.mark.parametrize("direction", ["as-stored", *DIRECTIONS])
def test_series_mask_equals_the_nifti_mask_in_patient_space(tiny_run, tiny_dataset, tmp_path, direction):
    vox, aff = _phantom(tiny_dataset, direction)
    nib.save(nib.Nifti1Image(vox, aff), tmp_path / "case.nii.gz")
    write_series(tmp_path / "dicom" / "case", vox, aff)
    [from_nifti] = predict(tiny_run.run_dir, tmp_path / "case.nii.gz", tmp_path / "pred_nifti", device="cpu")
    from_dicom, seg_file = predict(tiny_run.run_dir, tmp_path / "dicom" / "case", tmp_path / "pred_dicom",
                                   device="cpu", output_format="both")
    a, b = nib.load(from_dicom), nib.load(from_nifti)
    assert from_dicom.name == "case.nii.gz" and seg_file.name == "case.seg.dcm" and a.get_data_dtype() == np.uint8
    assert np.asarray(b.dataobj).any()  # the model finds something, so the comparison means something
    assert_same_in_patient_space(np.asarray(a.dataobj), a.affine, np.asarray(b.dataobj), b.affine, atol=1e-4)
    [series] = discover_series(tmp_path / "dicom" / "case")
    seg = hd.seg.segread(seg_file)
    pixels = seg.get_pixels_by_source_instance([s.sop_instance_uid for s in series.slices], combine_segments=True,
                                               assert_missing_frames_are_empty=True)
    np.testing.assert_array_equal(pixels.transpose(2, 1, 0), np.asarray(a.dataobj))  # SEG == NIfTI mask


def test_study_folder_predicts_every_qualifying_series_and_lists_all(tiny_run, tiny_dataset, tmp_path):
    vox, aff = _test_image(tiny_dataset)
    study = {"uid": "1.2.826.0.1.3680043.10.1", "for": "1.2.826.0.1.3680043.10.2"}
    write_series(tmp_path / "export" / "PAT1" / "ST1" / "SE1", vox, aff, series_uid="1.2.826.0.1.3680043.10.3",
                 study=study)
    write_series(tmp_path / "export" / "PAT1" / "ST1" / "SE2", vox, _phantom(tiny_dataset, "oblique")[1],
                 modality="MR", series_uid="1.2.826.0.1.3680043.10.4", study=study)
    broken = series_datasets(vox, aff, series_uid="1.2.826.0.1.3680043.10.5", study=study)
    del broken[5]
    save(broken, tmp_path / "export" / "PAT1" / "ST1" / "SE3")
    written = predict(tiny_run.run_dir, tmp_path / "export", tmp_path / "out", device="cpu")
    assert sorted(p.name for p in written) == ["1.2.826.0.1.3680043.10.3.nii.gz", "1.2.826.0.1.3680043.10.4.nii.gz"]
    rows = {r["series_uid"]: r for r in csv.DictReader((tmp_path / "out" / "series.csv").open(encoding="utf-8"))}
    assert rows["1.2.826.0.1.3680043.10.4"]["status"] == "ok"
    assert rows["1.2.826.0.1.3680043.10.4"]["output"] == "1.2.826.0.1.3680043.10.4.nii.gz"
    assert rows["1.2.826.0.1.3680043.10.5"]["status"] == "skipped"
    assert rows["1.2.826.0.1.3680043.10.5"]["reason"].startswith("missing slices")
    assert rows["1.2.826.0.1.3680043.10.5"]["output"] == ""
    assert _run("--model", tiny_run.run_dir, "--input", tmp_path / "export", "--output", tmp_path / "one",
                "--series-uid", "1.2.826.0.1.3680043.10.4", "--device", "cpu") == 0
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == ["1.2.826.0.1.3680043.10.4.nii.gz", "series.csv"]


@pytest.mark.parametrize(("breaks", "reason"), REFUSALS, ids=[f.__name__.strip("_") for f, _ in REFUSALS])
def test_each_refusal_exits_2_naming_the_series(tiny_run, tmp_path, capsys, breaks, reason):
    datasets = series_datasets(np.zeros((10, 8, 6), np.int16), affine_of(np.eye(3), (0.8, 0.6, 2.5), (0, 0, 0)),
                               series_uid="1.2.826.0.1.3680043.10.77")
    breaks(datasets)
    save(datasets, tmp_path / "in")
    assert _run("--model", tiny_run.run_dir, "--input", tmp_path / "in", "--output", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "series 1.2.826.0.1.3680043.10.77 cannot be predicted: " in err and reason in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_pydicom_bundled_folders(tiny_run, tmp_path, capsys):
    # 77654033/CT2: one slice 202.5 mm from three others 1.25 mm apart: refused, not a 68.3 mm spacing
    assert _run("--model", tiny_run.run_dir, "--input", DICOMDIR_TESTS / "77654033" / "CT2", "--output",
                tmp_path / "a") == 2
    assert "missing slices: a gap of 202.50 mm" in capsys.readouterr().err
    # 98892003/MR2: three pilot series, each refused when chosen alone
    mr2 = [s for s in discover_series(DICOMDIR_TESTS / "98892003" / "MR2")]
    assert len(mr2) == 3
    assert _run("--model", tiny_run.run_dir, "--input", DICOMDIR_TESTS / "98892003", "--output", tmp_path / "b",
                "--series-uid", mr2[0].uid) == 2
    assert f"series {mr2[0].uid} cannot be predicted: mixed orientation" in capsys.readouterr().err
    # 98892001: a scout (skipped, with its reason) and a 5-slice axial CT (predicted), NIfTI and SEG
    assert _run("--model", tiny_run.run_dir, "--input", DICOMDIR_TESTS / "98892001", "--output", tmp_path / "c",
                "--output-format", "both", "--device", "cpu") == 0
    names = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert names == ["1.3.6.1.4.1.5962.1.1.0.0.0.1194734704.16302.0.6.nii.gz",
                     "1.3.6.1.4.1.5962.1.1.0.0.0.1194734704.16302.0.6.seg.dcm", "series.csv"]
    assert "localizer/scout images" in (tmp_path / "c" / "series.csv").read_text(encoding="utf-8")


def test_dicom_seg_for_nifti_input_and_series_uid_for_nifti_are_refused(tiny_run, tiny_dataset, tmp_path, capsys):
    image = tiny_dataset / "imagesTs" / "case_006.nii.gz"
    assert _run("--model", tiny_run.run_dir, "--input", image, "--output", tmp_path / "o",
                "--output-format", "dicom-seg") == 2
    assert "DICOM SEG is written for DICOM input only" in capsys.readouterr().err
    with pytest.raises(InputError, match="--series-uid: applies to DICOM input only"):
        predict(tiny_run.run_dir, image, tmp_path / "o", device="cpu", series_uids=["1.2.3"])


def test_terminal_shows_no_third_party_warnings(tiny_run, tmp_path):
    res = subprocess.run([sys.executable, "-m", "medseg.cli.main", "predict", "--model", str(tiny_run.run_dir),
                          "--input", str(DICOMDIR_TESTS / "98892001" / "CT5N"), "--output", str(tmp_path / "o"),
                          "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    foreign = [line for line in res.stderr.splitlines()
               if line.strip() and not line.startswith(("INFO medseg", "WARNING medseg", "1.3.6", "series_uid"))]
    assert foreign == [], res.stderr


def test_label_codes_from_a_file_or_the_training_dataset(tmp_path):
    from medseg.inference.dicom_cases import load_label_codes

    entry = {"category": ["SCT", "123037004", "Anatomical Structure"], "type": ["SCT", "10200004", "Liver"]}
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "liver"},
                                                       "label_codes": {"liver": entry}}))
    (tmp_path / "codes.json").write_text(json.dumps({"liver": entry}))
    expected = {"liver": (("SCT", "123037004", "Anatomical Structure"), ("SCT", "10200004", "Liver"))}
    assert load_label_codes(None, {"data": str(tmp_path)}) == expected  # the run's training dataset
    assert load_label_codes(tmp_path / "dataset.json") == expected
    assert load_label_codes(tmp_path / "codes.json") == expected  # the bare map
    assert load_label_codes(None, {"data": str(tmp_path / "gone")}) == {}
    with pytest.raises(InputError, match="--label-codes .*nope.json: cannot be read as JSON"):
        load_label_codes(tmp_path / "nope.json")
