"""DICOM discovery and checks: pydicom's bundled study folders, and phantom series broken one way at a time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom.data
import pytest

from medseg.errors import InputError
from medseg.io.dicom_checks import SLICE_GAP_ATOL_MM, SLICE_GAP_RTOL, TILT_TOLERANCE_PIXELS
from medseg.io.dicom_series import discover_series, select_series, series_csv, series_table
from tests.io.dicom_factory import affine_of, multiframe, save, series_datasets, write_series

DICOMDIR_TESTS = Path(pydicom.data.__file__).parent / "test_files" / "dicomdirtests"
SPACING = (0.8, 0.6, 2.5)


def _voxels(shape=(10, 8, 6)) -> np.ndarray:
    return np.random.default_rng(0).integers(-100, 100, shape).astype(np.int16)


def _axial(n: int = 6) -> list:
    return series_datasets(_voxels((10, 8, n)), affine_of(np.eye(3), SPACING, (10.0, -20.0, 30.0)))


def _only(folder: Path):
    [series] = discover_series(folder)
    return series


def test_pydicom_study_folders_every_series_listed_with_its_verdict():
    found = {".".join(s.uid.split(".")[-3:]): s for s in discover_series(DICOMDIR_TESTS)}
    # 77654033/CT2: 3 slices 1.25 mm apart and one 202.5 mm away -> 161 slices missing (not a 68.3 mm spacing)
    assert found["28319.0.2"].reason.startswith("missing slices: a gap of 202.50 mm")
    assert "161 slice(s) missing" in found["28319.0.2"].reason
    assert found["16302.0.6"].qualifies  # 98892001/CT5N: 5 axial slices, 2.5 mm
    assert found["16302.0.6"].slice_spacing == pytest.approx(2.5)
    assert found["16302.0.2"].reason.startswith("localizer/scout images")  # 98892001/CT2N
    assert found["5534.0.10"].reason == "modality CR is not CT or MR"
    assert found["18148.0.17"].reason.startswith("mixed orientation")  # 98892003/MR2: tri-planar pilot
    assert found["18148.0.15"].reason == "fewer than 3 slices (1)"  # 98892003/MR1
    tiny_alpha = [s for s in found.values() if len(s.slices) == 50]
    assert tiny_alpha[0].reason.startswith("no patient geometry")
    assert len(found) == 14  # the DICOMDIR index files and README.txt are passed over


def test_study_folder_at_any_depth_table_and_csv():
    found = discover_series(DICOMDIR_TESTS / "98892003")
    assert len(found) == 7
    table = series_table(found).splitlines()
    assert table[0].split()[:3] == ["series_uid", "modality", "description"]
    assert len(table) == 8 and all(s.uid in "\n".join(table) for s in found)
    rows = series_csv(found, {found[0].uid: "x.nii.gz"}).splitlines()
    assert rows[0].startswith("series_uid,study_uid,modality") and len(rows) == 8
    assert rows[1].endswith(",x.nii.gz")


def test_phantom_series_qualifies_and_is_sorted_along_the_normal(tmp_path):
    save(_axial(), tmp_path / "s", shuffle_seed=3)
    (tmp_path / "s" / "notes.txt").write_text("not DICOM")
    s = _only(tmp_path)
    assert s.qualifies and s.shape == (10, 8, 6) and s.slice_spacing == pytest.approx(2.5)
    assert [round(sl.position[2], 3) for sl in s.slices] == [30.0 + 2.5 * k for k in range(6)]
    assert s.row()["spacing_mm"] == "0.8x0.6x2.5" and s.row()["orientation"] == "axial"


def _shift(datasets, k, dz):
    pos = [float(v) for v in datasets[k].ImagePositionPatient]
    datasets[k].ImagePositionPatient = [pos[0], pos[1], pos[2] + dz]


def _missing(ds):
    del ds[3]


def _uneven(ds):
    _shift(ds, 3, 0.5)  # gap 3.0 then 2.0 around slice 3


def _within_tolerance(ds):
    _shift(ds, 3, 0.9 * (SLICE_GAP_ATOL_MM + SLICE_GAP_RTOL * 2.5))


def _duplicate(ds):
    ds[4].ImagePositionPatient = ds[3].ImagePositionPatient


def _tilt(ds):  # 10 degrees: each slice shifted along y by 2.5 mm * tan(10 deg) more than the previous
    for k, d in enumerate(ds):
        pos = [float(v) for v in d.ImagePositionPatient]
        d.ImagePositionPatient = [pos[0], pos[1] + k * 2.5 * np.tan(np.radians(10)), pos[2]]


def _mixed_orientation(ds):
    ds[2].ImageOrientationPatient = [0.8, 0.6, 0, -0.6, 0.8, 0]


def _non_orthogonal(ds):
    for d in ds:
        d.ImageOrientationPatient = [1, 0, 0, 0.1, 0.99498744, 0]


def _mixed_rows(ds):
    ds[1].Rows, ds[1].PixelData = 4, ds[1].PixelData[: 4 * 10 * 2]


def _localizer(ds):
    for d in ds:
        d.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]


def _two_slices(ds):
    del ds[2:]


def _no_geometry(ds):
    del ds[0].ImagePositionPatient


def _not_ct(ds):
    for d in ds:
        d.Modality = "PT"


REFUSALS = [
    (_missing, "missing slices: a gap of 5.00 mm after slice 3 of 5 where the spacing is 2.50 mm (1 slice(s) missing)"),
    (_uneven, "uneven slice spacing: gaps from 2.00 to 3.00 mm"),
    (_duplicate, "duplicate slice positions"),
    (_tilt, "gantry tilt or non-orthogonal slices"),
    (_mixed_orientation, "mixed orientation within the series"),
    (_non_orthogonal, "non-orthogonal or non-unit row/column directions"),
    (_mixed_rows, "mixed rows/columns within the series"),
    (_localizer, "localizer/scout images"),
    (_two_slices, "fewer than 3 slices (2)"),
    (_no_geometry, "no patient geometry"),
    (_not_ct, "modality PT is not CT or MR"),
]


@pytest.mark.parametrize(("breaks", "reason"), REFUSALS, ids=[f.__name__.strip("_") for f, _ in REFUSALS])
def test_each_refusal_reason(tmp_path, breaks, reason):
    datasets = _axial()
    breaks(datasets)
    save(datasets, tmp_path / "s")
    s = _only(tmp_path)
    assert not s.qualifies
    assert s.reason.startswith(reason) or reason in s.reason, s.reason


def test_spacing_jitter_within_the_stated_tolerance_qualifies(tmp_path):
    datasets = _axial()
    _within_tolerance(datasets)
    save(datasets, tmp_path / "s")
    assert _only(tmp_path).qualifies


def test_tilt_below_the_stated_tolerance_qualifies(tmp_path):
    datasets = _axial()
    drift = 0.5 * TILT_TOLERANCE_PIXELS * 0.6  # half the tolerance: 0.1 of the 0.6 mm pixel
    for k, d in enumerate(datasets):
        pos = [float(v) for v in d.ImagePositionPatient]
        d.ImagePositionPatient = [pos[0], pos[1] + drift * k / 5, pos[2]]
    save(datasets, tmp_path / "s")
    assert _only(tmp_path).qualifies


def test_multiframe_file_is_one_series_of_frames(tmp_path):
    path = multiframe(series_datasets(_voxels(), affine_of(np.eye(3), SPACING, (0.0, 0.0, 10.0))),
                      tmp_path / "mf" / "enhanced.dcm")
    s = _only(path)
    assert s.qualifies and s.multiframe and s.shape == (10, 8, 6)
    assert sorted(sl.frame for sl in s.slices) == [1, 2, 3, 4, 5, 6]  # highdicom stores them top down
    assert [round(sl.position[2], 3) for sl in s.slices] == [10.0 + 2.5 * k for k in range(6)]


def test_select_series_by_uid(tmp_path):
    vox, aff = _voxels(), affine_of(np.eye(3), SPACING, (0.0, 0.0, 0.0))
    study = {"uid": "1.2.3", "for": "1.2.3.9"}
    write_series(tmp_path / "a", vox, aff, series_uid="1.2.3.1", study=study)
    bad = series_datasets(vox, aff, series_uid="1.2.3.2", study=study)
    _missing(bad)
    save(bad, tmp_path / "b")
    found = discover_series(tmp_path)
    assert [s.uid for s in select_series(found, ["1.2.3.1"], "x")] == ["1.2.3.1"]
    assert len(select_series(found, None, "x")) == 2
    with pytest.raises(InputError, match=r"--series-uid: 9\.9 not found under x \(series there: 1\.2\.3\.1, 1\.2\.3\.2\)"):
        select_series(found, ["9.9"], "x")
    with pytest.raises(InputError, match=r"x: series 1\.2\.3\.2 cannot be predicted: missing slices"):
        select_series(found, ["1.2.3.2"], "x")


def test_folder_without_dicom(tmp_path):
    (tmp_path / "a.txt").write_text("hello")
    assert discover_series(tmp_path) == []
