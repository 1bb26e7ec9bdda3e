from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from medseg.errors import InputError
from medseg.inference.predict import predict


def _permuted_copy(src, dst):
    """Same physical image stored with voxel axes (z, x, y) and the first axis reversed: 'SLA'-like."""
    img = nib.load(src)
    data = np.asarray(img.dataobj)
    perm = np.transpose(data, (2, 0, 1))[::-1]
    affine = img.affine[:, [2, 0, 1, 3]].copy()
    n0 = data.shape[2]
    affine[:3, 3] += affine[:3, 0] * (n0 - 1)
    affine[:3, 0] *= -1
    out = nib.Nifti1Image(np.ascontiguousarray(perm), affine)
    out.set_qform(affine, code=1)
    out.set_sform(affine, code=1)
    nib.save(out, dst)
    return affine


@pytest.mark.parametrize("case", ["lps", "permuted"])
def test_mask_has_input_shape_affine_and_integer_dtype(tiny_run, tiny_dataset, tmp_path, case):
    src = tiny_dataset / "imagesTr/case_002.nii.gz"  # stored LPS, 0.8 x 0.8 x 2.5 mm
    if case == "permuted":
        src_path = tmp_path / "in" / "case_p.nii.gz"
        src_path.parent.mkdir()
        _permuted_copy(tiny_dataset / "imagesTr/case_000.nii.gz", src_path)
    else:
        src_path = src
    [out] = predict(tiny_run.run_dir, src_path, tmp_path / "pred", device="cpu")
    ref, mask = nib.load(src_path), nib.load(out)
    assert mask.shape == ref.shape
    np.testing.assert_allclose(mask.affine, ref.affine, atol=1e-4)
    assert nib.aff2axcodes(mask.affine) == nib.aff2axcodes(ref.affine)
    assert mask.get_data_dtype() == np.uint8
    assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1, 2}


def test_prediction_follows_the_anatomy_in_any_orientation(tiny_run, tiny_dataset, tmp_path):
    """The permuted copy's mask, mapped back, equals the original's mask (same physical prediction)."""
    src = tiny_dataset / "imagesTr/case_000.nii.gz"
    permuted = tmp_path / "in" / "case_000.nii.gz"
    permuted.parent.mkdir()
    _permuted_copy(src, permuted)
    [a] = predict(tiny_run.run_dir, src, tmp_path / "a", device="cpu")
    [b] = predict(tiny_run.run_dir, permuted, tmp_path / "b", device="cpu")
    ma = np.asarray(nib.load(a).dataobj)
    mb = np.asarray(nib.load(b).dataobj)[::-1]
    back = np.transpose(mb, (1, 2, 0))
    assert (back == ma).mean() > 0.99


def test_bad_inputs(tiny_run, tmp_path):
    with pytest.raises(InputError, match="no such file or directory"):
        predict(tiny_run.run_dir, tmp_path / "missing.nii.gz", tmp_path / "out")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match=r"not a NIfTI file \(.nii or .nii.gz\)"):
        predict(tiny_run.run_dir, tmp_path / "notes.txt", tmp_path / "out")
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(InputError, match="broken.nii.gz: cannot be read as a 3D image"):
        predict(tiny_run.run_dir, broken, tmp_path / "out")
    assert not (tmp_path / "out" / "broken.nii.gz").exists()
    with pytest.raises(InputError, match="--model .*: no such file or directory"):
        predict(tmp_path / "nope", broken, tmp_path / "out")


def test_same_case_twice_in_a_folder(tiny_run, tiny_dataset, tmp_path):
    import shutil

    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(tiny_dataset / "imagesTr/case_000.nii.gz", folder / "a.nii.gz")
    nib.save(nib.load(folder / "a.nii.gz"), folder / "a.nii")
    with pytest.raises(InputError, match="a.nii and a.nii.gz are the same case 'a'; keep one"):
        predict(tiny_run.run_dir, folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()
