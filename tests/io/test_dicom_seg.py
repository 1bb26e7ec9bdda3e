"""DICOM SEG output: read back with highdicom it equals the mask, frame by source instance; references and
frame positions are the source's; regions overlap; empty predictions; codes; dciodvfy finds no error."""

from __future__ import annotations

import logging
import shutil
import subprocess

import highdicom as hd
import numpy as np
import pydicom
import pytest

from medseg.errors import InputError
from medseg.io import dicom_libs
from medseg.io.dicom_seg import GENERIC_CODE, Segment, parse_label_codes, segments_for, write_dicom_seg
from medseg.io.dicom_series import discover_series
from tests.io.dicom_factory import affine_of, multiframe, rotation, series_datasets, write_series

LABELS = {0: "background", 1: "liver", 2: "tumour"}
CODES = {"liver": {"category": ["SCT", "123037004", "Anatomical Structure"], "type": ["SCT", "10200004", "Liver"]}}


def _series(tmp_path, direction=None, multi=False):
    vox = np.random.default_rng(0).integers(-100, 100, (10, 8, 6)).astype(np.int16)
    aff = affine_of(rotation(0, 0.8, 0.6) if direction is None else direction, (0.8, 0.6, 2.5), (4.0, -2.0, 7.0))
    if multi:
        [series] = discover_series(multiframe(series_datasets(vox, aff), tmp_path / "mf.dcm"))
    else:
        write_series(tmp_path / "src", vox, aff)
        [series] = discover_series(tmp_path / "src")
    return series


def _labels(shape=(10, 8, 6)) -> np.ndarray:
    lab = np.zeros(shape, np.uint8)
    lab[2:6, 1:5, 1:4] = 1
    lab[3:5, 2:4, 2] = 2
    return lab


@pytest.mark.parametrize("multi", [False, True], ids=["single-frame-source", "multi-frame-source"])
def test_seg_reads_back_as_the_mask_by_source_instance(tmp_path, multi):
    series = _series(tmp_path, multi=multi)
    lab = _labels()
    out = write_dicom_seg(lab, series, segments_for(LABELS, None, parse_label_codes(CODES, "x")),
                          tmp_path / "p.seg.dcm", algorithm="tiny_run", version="9.9")
    seg = hd.seg.segread(out)
    assert seg.SegmentationType == "BINARY" and seg.NumberOfFrames == 3 + 1  # liver on 3 slices, tumour on 1
    if multi:
        pixels = seg.get_pixels_by_source_frame(series.slices[0].sop_instance_uid, [s.frame for s in series.slices],
                                                combine_segments=True, assert_missing_frames_are_empty=True)
    else:
        pixels = seg.get_pixels_by_source_instance([s.sop_instance_uid for s in series.slices],
                                                   combine_segments=True, assert_missing_frames_are_empty=True)
    np.testing.assert_array_equal(pixels.transpose(2, 1, 0), lab)  # (slices, rows, columns) -> (x, y, z)


def test_references_positions_and_identifiers_are_the_sources(tmp_path):
    series = _series(tmp_path)
    out = write_dicom_seg(_labels(), series, segments_for(LABELS), tmp_path / "p.seg.dcm", algorithm="tiny_run")
    seg, src = pydicom.dcmread(out), pydicom.dcmread(series.files[0])
    for key in ("StudyInstanceUID", "PatientID", "PatientName", "FrameOfReferenceUID"):
        assert seg[key].value == src[key].value
    assert seg.SeriesInstanceUID != src.SeriesInstanceUID and seg.Modality == "SEG"
    by_uid = {s.sop_instance_uid: s for s in series.slices}
    [ref_series] = seg.ReferencedSeriesSequence
    assert ref_series.SeriesInstanceUID == series.uid
    assert {i.ReferencedSOPInstanceUID for i in ref_series.ReferencedInstanceSequence} <= set(by_uid)
    for frame in seg.PerFrameFunctionalGroupsSequence:
        [source] = frame.DerivationImageSequence[0].SourceImageSequence
        ipp = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
        np.testing.assert_allclose(ipp, by_uid[source.ReferencedSOPInstanceUID].position, atol=1e-6)
    ori = [float(v) for v in seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient]
    np.testing.assert_allclose(ori, series.slices[0].orientation, atol=1e-9)
    [ident] = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence
    assert seg.SegmentSequence[0].SegmentAlgorithmName == "tiny_run"
    assert ident.AlgorithmName == "tiny_run" and ident.AlgorithmVersion == __import__("medseg").__version__
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["liver", "tumour"]


def test_regions_overlap_one_segment_each(tmp_path):
    series = _series(tmp_path, direction=np.eye(3))
    lab = _labels()  # label 2 inside label 1: region "whole" = {1, 2}, region "core" = {2}
    segments = segments_for({1: "whole", 2: "core"}, {"whole": (1, 2), "core": (2,)})
    seg = hd.seg.segread(write_dicom_seg(lab, series, segments, tmp_path / "r.seg.dcm", algorithm="m"))
    stack = seg.get_pixels_by_source_instance([s.sop_instance_uid for s in series.slices],
                                              assert_missing_frames_are_empty=True)  # (slices, rows, cols, 2)
    np.testing.assert_array_equal(stack[..., 0].transpose(2, 1, 0), np.isin(lab, (1, 2)))
    np.testing.assert_array_equal(stack[..., 1].transpose(2, 1, 0), lab == 2)
    assert (stack.sum(-1) == 2).any()  # voxels in both segments


def test_empty_prediction_writes_a_valid_seg(tmp_path):
    series = _series(tmp_path)
    out = write_dicom_seg(np.zeros((10, 8, 6), np.uint8), series, segments_for(LABELS), tmp_path / "e.seg.dcm",
                          algorithm="m")
    seg = hd.seg.segread(out)
    assert seg.NumberOfFrames == 6 * 2  # no frame omitted: every source slice, every segment, all zero
    assert not seg.get_pixels_by_source_instance([s.sop_instance_uid for s in series.slices]).any()


def test_label_codes_and_the_generic_code(caplog):
    with caplog.at_level(logging.WARNING, logger="medseg.io.dicom_seg"):
        segs = segments_for(LABELS, None, parse_label_codes(CODES, "dataset.json"))
    assert segs[0] == Segment("liver", (1,), ("SCT", "123037004", "Anatomical Structure"), ("SCT", "10200004", "Liver"))
    assert segs[1] == Segment("tumour", (2,), GENERIC_CODE, GENERIC_CODE)
    assert "no label_codes entry for tumour; using the generic code Tissue (SCT 85756007)" in caplog.text


@pytest.mark.parametrize(("raw", "message"), [
    ([1], "label_codes must map label names to codes, got list"),
    ({"liver": {"type": ["SCT", "1", "x"]}}, r"label_codes\['liver'\]: expected \{\"category\""),
    ({"liver": {"category": ["SCT", "1"], "type": ["SCT", "1", "x"]}},
     r"label_codes\['liver'\].category: expected \[scheme, value, meaning\]"),
], ids=["not-a-map", "no-category", "two-strings"])
def test_bad_label_codes(raw, message):
    with pytest.raises(InputError, match=message):
        parse_label_codes(raw, "dataset.json")


def test_wrong_grid_and_no_segments_are_refused(tmp_path):
    series = _series(tmp_path)
    with pytest.raises(ValueError, match=r"label map shape \(8, 10, 6\) is not the series grid \(10, 8, 6\)"):
        write_dicom_seg(np.zeros((8, 10, 6), np.uint8), series, segments_for(LABELS), tmp_path / "x.dcm", "m")
    with pytest.raises(InputError, match="no foreground label to encode"):
        write_dicom_seg(_labels(), series, [], tmp_path / "x.dcm", "m")
    assert not (tmp_path / "x.dcm").exists()


def test_missing_extra_is_a_clear_message(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_highdicom(name, *args, **kwargs):
        if name == "highdicom":
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_highdicom)
    monkeypatch.delitem(__import__("sys").modules, "highdicom")
    with pytest.raises(InputError, match=r'DICOM SEG output: highdicom is not installed\. DICOM needs the optional '
                                         r'extra: pip install "medseg\[dicom\]"'):
        dicom_libs.require_highdicom("DICOM SEG output")


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (Debian package dicom3tools) not installed")
@pytest.mark.parametrize("case", ["labels", "regions", "empty", "multi-frame"])
def test_dciodvfy_reports_no_error(tmp_path, case):
    series = _series(tmp_path, multi=case == "multi-frame")
    lab = np.zeros((10, 8, 6), np.uint8) if case == "empty" else _labels()
    segments = segments_for({1: "whole", 2: "core"}, {"whole": (1, 2), "core": (2,)}) if case == "regions" \
        else segments_for(LABELS, None, parse_label_codes(CODES, "x"))
    out = write_dicom_seg(lab, series, segments, tmp_path / "v.seg.dcm", algorithm="tiny_run")
    res = subprocess.run(["dciodvfy", str(out)], capture_output=True, text=True, timeout=60)
    report = res.stdout + res.stderr
    assert "Segmentation" in report  # the IOD it checked against
    assert [line for line in report.splitlines() if line.startswith("Error")] == [], report
