"""check_dataset: layouts accepted, warnings, tolerances, reports; the bad-input matrix is in
tests/test_bad_inputs.py."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.data.check import Tolerances, check_dataset, ensure_dataset_ok
from medseg.errors import InputError

SHAPE = (8, 8, 8)
AFFINE = np.diag([0.8, 0.8, 2.5, 1.0])
LABELS_MSD = {"0": "background", "1": "organ", "2": "lesion"}


def save(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.to_filename(path)
    return path


def image(seed: int = 0, channels: int | None = None) -> np.ndarray:
    shape = SHAPE if channels is None else (*SHAPE, channels)
    return np.random.default_rng(seed).normal(0, 100, shape).astype(np.float32)


def label(fill: int = 1) -> np.ndarray:
    lab = np.zeros(SHAPE, np.uint8)
    lab[2:5, 2:5, 2:5] = fill
    return lab


def msd(root: Path, n: int = 2, meta: dict | None = None, test: list | None = None) -> Path:
    """An MSD dataset of ``n`` training cases; ``test`` is written as given (paths must exist)."""
    training = []
    for i in range(n):
        save(root / f"imagesTr/c{i}.nii.gz", image(i))
        save(root / f"labelsTr/c{i}.nii.gz", label())
        training.append({"image": f"./imagesTr/c{i}.nii.gz", "label": f"./labelsTr/c{i}.nii.gz"})
    content = {"labels": LABELS_MSD, "modality": {"0": "CT"}, "numTraining": n, "training": training}
    if test is not None:
        content.update(test=test, numTest=len(test))
    content.update(meta or {})
    (root / "dataset.json").write_text(json.dumps(content))
    return root


def nnunet(root: Path, n: int = 2, channels: int = 2) -> Path:
    for i in range(n):
        for c in range(channels):
            save(root / f"imagesTr/case{i}_{c:04d}.nii.gz", image(i + c))
        save(root / f"labelsTr/case{i}.nii.gz", label(2))
    meta = {"channel_names": {str(c): f"MR{c}" for c in range(channels)}, "labels": {"background": 0, "tumour": 1,
            "edema": 2}, "numTraining": n, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def errors(root: Path, **kw) -> list[str]:
    return [str(p) for p in check_dataset(root, **kw).errors]


def test_valid_msd(tmp_path: Path) -> None:
    report = check_dataset(msd(tmp_path))
    assert report.ok and not report.warnings
    assert (report.training_cases, report.test_cases) == (2, 0)


def test_dataset_json_path_is_accepted(tmp_path: Path) -> None:
    assert check_dataset(msd(tmp_path) / "dataset.json").ok


def test_msd_test_list_of_plain_paths(tmp_path: Path) -> None:
    save(tmp_path / "imagesTs/t0.nii.gz", image())
    report = check_dataset(msd(tmp_path, test=["./imagesTs/t0.nii.gz"]))
    assert report.ok and report.test_cases == 1


def test_test_label_is_checked_too(tmp_path: Path) -> None:
    save(tmp_path / "imagesTs/t0.nii.gz", image())
    save(tmp_path / "labelsTs/t0.nii.gz", label(7))
    root = msd(tmp_path, test=[{"image": "./imagesTs/t0.nii.gz", "label": "./labelsTs/t0.nii.gz"}])
    assert errors(root) == [f"{root}/labelsTs/t0.nii.gz: label values outside the dataset.json label map "
                            "[0, 1, 2] [seen: 7]"]


def test_num_test_mismatch(tmp_path: Path) -> None:
    save(tmp_path / "imagesTs/t0.nii.gz", image())
    root = msd(tmp_path, test=["./imagesTs/t0.nii.gz"], meta={"numTest": 4})
    assert errors(root) == [f"{root}/dataset.json: numTest does not match the test cases [seen: numTest=4, cases=1]"]


def test_all_problems_in_one_pass(tmp_path: Path) -> None:
    root = msd(tmp_path, n=3, meta={"numTraining": 4})
    (root / "labelsTr/c0.nii.gz").unlink()
    save(root / "imagesTr/c1.nii.gz", np.full(SHAPE, np.nan, np.float32))
    save(root / "labelsTr/c2.nii.gz", label(1).astype(np.float32) * 0.5)
    found = errors(root)
    assert len(found) == 4, found
    for text in ("numTraining", "c0.nii.gz: label file not found", "c1.nii.gz: image contains non-finite",
                 "c2.nii.gz: label values are not integers: not a label map of integers"):
        assert any(text in e for e in found), (text, found)


def test_background_only_label_is_a_warning(tmp_path: Path) -> None:
    root = msd(tmp_path)
    save(root / "labelsTr/c1.nii.gz", np.zeros(SHAPE, np.uint8))
    report = check_dataset(root)
    assert report.ok
    assert [str(w) for w in report.warnings] == [f"{root}/labelsTr/c1.nii.gz: label is background only "
                                                 "(every voxel is 0)"]
    assert ensure_dataset_ok(root) == [str(report.warnings[0])]


def test_integral_float_labels_are_fine(tmp_path: Path) -> None:
    root = msd(tmp_path)
    save(root / "labelsTr/c0.nii.gz", label(2).astype(np.float32))
    assert check_dataset(root).ok


def test_scaled_integer_labels_are_values_after_scaling(tmp_path: Path) -> None:
    root = msd(tmp_path)
    img = nib.Nifti1Image(label(1).astype(np.int16) * 2, AFFINE)
    img.header.set_slope_inter(1.5, 0)  # stored 2 -> value 3, outside the map
    img.to_filename(root / "labelsTr/c0.nii.gz")
    assert any("label map [0, 1, 2] [seen: 3]" in e for e in errors(root))


def test_geometry_within_tolerance_passes(tmp_path: Path) -> None:
    root = msd(tmp_path)
    nudged = AFFINE.copy()
    nudged[:3, :3] *= 1 + 1e-7  # float noise from another writer
    nudged[:3, 3] += 1e-6
    save(root / "labelsTr/c0.nii.gz", label(), nudged)
    assert check_dataset(root).ok
    assert not check_dataset(root, tolerances=Tolerances(spacing_rtol=1e-9, origin_atol_mm=1e-9)).ok


def test_sform_only_is_fine(tmp_path: Path) -> None:
    root = msd(tmp_path)
    img = nib.Nifti1Image(label(), AFFINE)
    img.set_qform(None, code=0)
    img.set_sform(AFFINE, code=2)
    img.to_filename(root / "labelsTr/c0.nii.gz")
    assert check_dataset(root).ok


@pytest.mark.parametrize(("shape", "expected"), [
    ((*SHAPE, 3), "image is 4D but a 3D single-channel volume is expected"),
    (SHAPE[:2], "image is 2D"),
])
def test_image_dimensionality(tmp_path: Path, shape: tuple[int, ...], expected: str) -> None:
    root = msd(tmp_path)
    save(root / "imagesTr/c0.nii.gz", np.ones(shape, np.float32))
    assert any(expected in e for e in errors(root))


def test_singleton_fourth_axis_is_a_warning(tmp_path: Path) -> None:
    root = msd(tmp_path)
    save(root / "imagesTr/c0.nii.gz", image(0)[..., None])
    report = check_dataset(root)
    assert report.ok
    assert "singleton 4th dimension" in str(report.warnings[0])


def test_msd_multichannel_image(tmp_path: Path) -> None:
    root = msd(tmp_path, meta={"modality": {"0": "FLAIR", "1": "T1"}})
    for i in range(2):
        save(root / f"imagesTr/c{i}.nii.gz", image(i, channels=2))
    assert check_dataset(root).ok
    save(root / "imagesTr/c1.nii.gz", image(1, channels=3))
    assert any("should be 4D with 2 channels" in e and "(8, 8, 8, 3)" in e for e in errors(root))


def test_nnunet_v2_layout(tmp_path: Path) -> None:
    root = nnunet(tmp_path)
    report = check_dataset(root)
    assert report.ok, report.errors
    assert report.training_cases == 2


def test_nnunet_v2_missing_channel_and_orphan_label(tmp_path: Path) -> None:
    root = nnunet(tmp_path)
    (root / "imagesTr/case1_0001.nii.gz").unlink()
    save(root / "labelsTr/case9.nii.gz", label())
    found = errors(root)
    assert f"{root}/imagesTr/case1_0001.nii.gz: channel file missing (2 channel(s) declared) [seen: missing [1]]" \
        in found
    assert f"{root}/labelsTr: label file(s) without an image [seen: case9.nii.gz]" in found


def test_nnunet_v2_missing_label_and_count(tmp_path: Path) -> None:
    root = nnunet(tmp_path, n=3)
    (root / "labelsTr/case2.nii.gz").unlink()
    meta = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    meta["numTraining"] = 2
    (root / "dataset.json").write_text(json.dumps(meta))
    found = errors(root)
    assert found == [f"{root}/dataset.json: numTraining does not match the training cases "
                     "[seen: numTraining=2, cases=3]", f"{root}/labelsTr/case2.nii.gz: label file not found"]


def test_nnunet_v2_explicit_dataset_mapping(tmp_path: Path) -> None:
    root = nnunet(tmp_path)
    meta = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    meta["dataset"] = {f"case{i}": {"images": [f"imagesTr/case{i}_0000.nii.gz", f"imagesTr/case{i}_0001.nii.gz"],
                                    "label": f"labelsTr/case{i}.nii.gz"} for i in range(2)}
    (root / "dataset.json").write_text(json.dumps(meta))
    assert check_dataset(root).ok


@pytest.mark.parametrize(("content", "expected"), [
    (None, "dataset.json not found"),
    ("{oops", "not valid JSON"),
    (json.dumps({"labels": {"0": "background", "2": "lesion"}, "training": [], "numTraining": 0}),
     "labels must be consecutive integers starting at 0 (background) [seen: [0, 2]]"),
    (json.dumps({"labels": {"0": "background"}}), "has neither a 'training' list (MSD) nor a 'file_ending'"),
    (json.dumps({"training": [{"image": "a.nii.gz", "label": "b.nii.gz"}], "numTraining": 1}),
     "missing or empty 'labels' map"),
])
def test_bad_dataset_json(tmp_path: Path, content: str | None, expected: str) -> None:
    if content is not None:
        (tmp_path / "dataset.json").write_text(content)
    found = errors(tmp_path)
    assert any(e.startswith(f"{tmp_path}/dataset.json: ") and expected in e for e in found), found


def test_unlisted_and_duplicate_files_are_warnings(tmp_path: Path) -> None:
    root = msd(tmp_path)
    save(root / "imagesTr/stray.nii.gz", image())
    meta = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    meta["training"].append(meta["training"][0])
    meta["numTraining"] = 3
    (root / "dataset.json").write_text(json.dumps(meta))
    report = check_dataset(root)
    assert report.ok
    text = "\n".join(map(str, report.warnings))
    assert "1 image file(s) not listed in dataset.json [seen: stray.nii.gz]" in text
    assert "c0.nii.gz: listed more than once in dataset.json [seen: 2 times]" in text


def test_uncompressed_nifti_truncated(tmp_path: Path) -> None:
    root = msd(tmp_path)
    f = save(root / "imagesTr/c0.nii", image())
    f.write_bytes(f.read_bytes()[:-100])
    meta = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    meta["training"][0]["image"] = "./imagesTr/c0.nii"
    (root / "dataset.json").write_text(json.dumps(meta))
    assert any(e.startswith(f"{f}: not a readable NIfTI file") and "damaged" in e for e in errors(root))


def test_complete_gzip_of_a_short_nifti(tmp_path: Path) -> None:
    """The gzip stream is intact but the NIfTI inside lacks voxels: still an error."""
    root = msd(tmp_path)
    f = root / "labelsTr/c1.nii.gz"
    f.write_bytes(gzip.compress(gzip.decompress(f.read_bytes())[:-50]))
    assert any(e.startswith(f"{f}: not a readable NIfTI file") for e in errors(root))


def test_not_a_nifti(tmp_path: Path) -> None:
    root = msd(tmp_path)
    f = root / "labelsTr/c1.nii.gz"
    f.write_bytes(b"<html>404 Not Found</html>")
    assert any(e.startswith(f"{f}: corrupted gzip stream") for e in errors(root))


def test_report_to_dict_and_raise(tmp_path: Path) -> None:
    root = msd(tmp_path)
    (root / "labelsTr/c1.nii.gz").unlink()
    report = check_dataset(root, num_workers=1)
    d = json.loads(json.dumps(report.to_dict()))
    assert d["ok"] is False and d["training_cases"] == 2
    assert d["errors"] == [{"severity": "error", "file": f"{root}/labelsTr/c1.nii.gz",
                            "problem": "label file not found", "values": ""}]
    with pytest.raises(InputError) as info:
        ensure_dataset_ok(root)
    assert info.value.problems == [f"{root}/labelsTr/c1.nii.gz: label file not found"]
    assert str(root) in str(info.value).splitlines()[0]


def test_cli_json_report_and_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from medseg.cli.main import main

    root = msd(tmp_path / "ds")
    save(root / "labelsTr/c1.nii.gz", np.zeros(SHAPE, np.uint8))
    out_json = tmp_path / "report.json"
    assert main(["check", str(root), "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "warning: " in out and "background only" in out
    assert "0 error(s), 1 warning(s)" in out
    assert json.loads(out_json.read_text(encoding="utf-8"))["ok"] is True
    (root / "labelsTr/c0.nii.gz").write_bytes(b"")
    assert main(["check", str(root), "--json", str(out_json)]) == 2
    assert "empty label file" in capsys.readouterr().err
    assert json.loads(out_json.read_text(encoding="utf-8"))["errors"][0]["problem"] == "empty label file"


def test_nnunet_v2_nrrd_files_via_simpleitk(tmp_path: Path) -> None:
    import SimpleITK as sitk

    for folder, name, arr, spacing in (("imagesTr", "a_0000.nrrd", np.ones((6, 8, 8), np.float32), (0.8, 0.8, 2.5)),
                                       ("labelsTr", "a.nrrd", np.ones((6, 8, 8), np.uint8), (0.8, 0.8, 2.0))):
        (tmp_path / folder).mkdir()
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing(spacing)
        sitk.WriteImage(img, str(tmp_path / folder / name))
    meta = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "x": 1}, "numTraining": 1, "file_ending": ".nrrd"}
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    # values read correctly (only 0/1), spacing compared in the same (x, y, z) order as NIfTI
    assert errors(tmp_path) == [f"{tmp_path}/labelsTr/a.nrrd: spacing differs: label vs its image "
                                f"{tmp_path}/imagesTr/a_0000.nrrd [seen: label [0.8, 0.8, 2. ] mm, "
                                "image [0.8, 0.8, 2.5] mm]"]
