"""A bundle's inference on DICOM: the datalist converts each qualifying series, SaveDicomSegd writes its SEG."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import highdicom as hd
import nibabel as nib
import numpy as np
import pytest
from monai.transforms import LoadImage

from medseg.bundle.dicom_seg import SaveDicomSegd, inference_datalist
from medseg.data.datalist import LabelSpec
from medseg.io.dicom_series import discover_series
from medseg.io.dicom_volume import read_series_volume
from tests.io.dicom_factory import affine_of, rotation, save, series_datasets, write_series

PLAN = SimpleNamespace(label_spec=LabelSpec(names={0: "background", 1: "organ", 2: "lesion"}))


def _folder(tmp_path):
    vox = np.random.default_rng(0).integers(-100, 100, (12, 10, 6)).astype(np.int16)
    aff = affine_of(rotation(2, 0.6, 0.8), (0.8, 0.6, 2.5), (1.0, 2.0, 3.0))
    write_series(tmp_path / "study" / "a", vox, aff, series_uid="1.2.826.0.1.3680043.10.8")
    broken = series_datasets(vox, aff, series_uid="1.2.826.0.1.3680043.10.9")
    del broken[2]
    save(broken, tmp_path / "study" / "b")
    return tmp_path / "study"


def test_datalist_converts_each_qualifying_series(tmp_path):
    items = inference_datalist(str(_folder(tmp_path)), work_dir=str(tmp_path / "work"))
    assert [item["image"] for item in items] == [str(tmp_path / "work" / "1.2.826.0.1.3680043.10.8.nii.gz")]
    [series] = [s for s in discover_series(tmp_path / "study") if s.qualifies]
    voxels, affine = read_series_volume(series)
    img = nib.load(items[0]["image"])
    np.testing.assert_array_equal(np.asarray(img.dataobj), voxels)
    np.testing.assert_allclose(img.affine, affine, atol=1e-5)


def test_save_dicom_segd_writes_the_prediction_as_seg_of_its_series(tmp_path):
    [item] = inference_datalist(str(_folder(tmp_path)), work_dir=str(tmp_path / "work"))
    image = LoadImage(image_only=True, ensure_channel_first=True)(item["image"])
    pred = (image > 50).long() + (image > 90).long()  # (1, X, Y, Z) labels 0..2, meta of the image
    SaveDicomSegd(keys="pred", output_dir=str(tmp_path / "out"), plan=PLAN, enabled=False)({"pred": pred})
    assert not (tmp_path / "out").exists()
    SaveDicomSegd(keys="pred", output_dir=str(tmp_path / "out"), plan=PLAN, algorithm="bundle")({"pred": pred})
    seg = hd.seg.segread(tmp_path / "out" / "1.2.826.0.1.3680043.10.8.seg.dcm")
    [series] = [s for s in discover_series(tmp_path / "study") if s.qualifies]
    pixels = seg.get_pixels_by_source_instance([s.sop_instance_uid for s in series.slices], combine_segments=True,
                                               assert_missing_frames_are_empty=True)
    np.testing.assert_array_equal(pixels.transpose(2, 1, 0), np.asarray(pred[0]))
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["organ", "lesion"]


@pytest.mark.slow
def test_bundle_inference_on_a_dicom_study_writes_seg(tmp_path):
    import torch
    from monai.bundle import ConfigParser

    from tests.bundle.conftest import BUNDLE, TINY_OVERRIDES, monai_bundle

    bundle = tmp_path / "b"
    shutil.copytree(BUNDLE, bundle)
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser.update(TINY_OVERRIDES)
    torch.manual_seed(0)
    torch.save({"model": parser.get_parsed_content("network_def").state_dict()}, bundle / "models" / "model.pt")
    study = _folder(tmp_path)
    monai_bundle("run", bundle, config_file="configs/inference.json", output_dir=str(tmp_path / "seg"),
                 dataset_dir=str(study), write_dicom_seg=True, device="cpu", **TINY_OVERRIDES)
    assert sorted(p.name for p in (tmp_path / "seg").iterdir()) == [
        "1.2.826.0.1.3680043.10.8.seg.dcm", "1.2.826.0.1.3680043.10.8_seg.nii.gz"]
    seg = hd.seg.segread(tmp_path / "seg" / "1.2.826.0.1.3680043.10.8.seg.dcm")
    mask = np.asarray(nib.load(tmp_path / "seg" / "1.2.826.0.1.3680043.10.8_seg.nii.gz").dataobj)
    [series] = [s for s in discover_series(study) if s.qualifies]
    pixels = seg.get_pixels_by_source_instance([s.sop_instance_uid for s in series.slices], combine_segments=True,
                                               assert_missing_frames_are_empty=True)
    np.testing.assert_array_equal(pixels.transpose(2, 1, 0), mask)
