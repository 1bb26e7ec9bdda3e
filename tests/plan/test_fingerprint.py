"""The fingerprint equals the same quantities computed here with nibabel, numpy and scipy.

Dataset: nnU-Net v2 layout, 2 MR channels (zero outside the body, so the nonzero crop is not the
whole volume), organ, lesions and vessels; case_002 is stored LPS, case_001 with its voxel axes
permuted (z first, reversed) and case_003 with a larger z spacing, so only a reader that reorients
to RAS gets the x, y, z spacings and shapes right.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from medseg.data.datalist import load_dataset
from medseg.data.synth import SynthConfig, synthesise_dataset
from medseg.plan import extract_fingerprint

SPACING = (2.0, 2.0, 3.0)
LABEL_VALUES = (1, 2, 3)  # organ, lesion, vessel


def _restore(path, transform) -> None:
    img = nib.load(path)
    data, affine = transform(np.asarray(img.dataobj), img.affine)
    out = nib.Nifti1Image(np.ascontiguousarray(data), affine)
    out.set_qform(affine, code=1)
    out.set_sform(affine, code=1)
    nib.save(out, path)


def _permute(data, affine):
    """Voxel axes (x, y, z) -> (z reversed, x, y): the same physical image, orientation 'IRA'."""
    perm = np.transpose(data, (2, 0, 1))[::-1]
    new = affine[:, [2, 0, 1, 3]].copy()
    new[:3, 3] += new[:3, 0] * (data.shape[2] - 1)
    new[:3, 0] *= -1
    return perm, new


def _stretch_z(data, affine):
    new = affine.copy()
    new[:3, 2] *= 1.2
    return data, new


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fp") / "ds"
    synthesise_dataset(root, SynthConfig(train_cases=5, test_cases=0, size=32, spacing=SPACING, seed=21,
                                         layout="nnunet", channels=2, modality="MR", vessels=True, lesions=(1, 4)))
    for name, transform in (("case_001", _permute), ("case_003", _stretch_z)):
        for f in (*(root / "imagesTr").glob(f"{name}_*.nii.gz"), root / "labelsTr" / f"{name}.nii.gz"):
            _restore(f, transform)
    return root


def _ras(path):
    """(voxels in RAS axis order, spacing x, y, z) with nibabel's orientation utilities."""
    img = nib.load(path)
    ornt = nib.orientations.io_orientation(img.affine)  # input axis i -> RAS axis ornt[i, 0], flipped if -1
    data = nib.orientations.apply_orientation(np.asarray(img.dataobj), ornt)
    spacing = np.empty(3)
    spacing[ornt[:, 0].astype(int)] = np.linalg.norm(img.affine[:3, :3], axis=0)
    return data, spacing


def _expected(root):
    ids = [f"case_{k:03d}" for k in range(5)]
    out = {"spacings": [], "shapes": [], "fg": [[], []], "voxels": {v: [] for v in LABEL_VALUES},
           "volumes": {v: [] for v in LABEL_VALUES}, "components": {v: [] for v in LABEL_VALUES}, "total": 0}
    for cid in ids:
        chans = [_ras(root / "imagesTr" / f"{cid}_{c:04d}.nii.gz") for c in range(2)]
        label, spacing = _ras(root / "labelsTr" / f"{cid}.nii.gz")
        np.testing.assert_allclose(chans[1][1], spacing)
        nonzero = (chans[0][0] != 0) | (chans[1][0] != 0)
        idx = np.argwhere(nonzero)
        out["shapes"].append(list(idx.max(axis=0) - idx.min(axis=0) + 1))
        out["spacings"].append(list(spacing))
        for c in range(2):
            out["fg"][c].append(chans[c][0][label > 0].astype(np.float64))
        for v in LABEL_VALUES:
            mask = label == v
            out["voxels"][v].append(int(mask.sum()))
            out["volumes"][v].append(mask.sum() * np.prod(spacing))
            out["components"][v].append(ndimage.label(mask, structure=np.ones((3, 3, 3)))[1])
        out["total"] += label.size
    return ids, out


def test_fingerprint_matches_an_independent_computation(dataset_root):
    fp = extract_fingerprint(load_dataset(dataset_root))
    ids, exp = _expected(dataset_root)
    assert fp["case_ids"] == ids
    assert fp["orientations"] == ["RAS", "IRA", "LPS", "RAS", "RAS"]
    np.testing.assert_allclose(fp["spacings"], exp["spacings"], rtol=1e-6)
    assert fp["spacings"][1] == pytest.approx([2.0, 2.0, 3.0]) and fp["spacings"][3] == pytest.approx([2, 2, 3.6])
    assert fp["shapes_after_crop"] == exp["shapes"]
    assert fp["shapes_after_crop"][1][2] == 16 and fp["shapes_after_crop"][0][0] < 32  # z stays 3rd; body crop
    assert fp["channel_names"] == {"0": "T1", "1": "T2"}
    for c in range(2):
        # nnU-Net's rule: each case weighs the same (the equal-weight mixture of the cases' foregrounds,
        # estimated from a seeded sample per case; tests/plan/test_intensity_stats.py), min / max over the samples
        cases = exp["fg"][c]
        v = np.concatenate(cases)
        w = np.concatenate([np.full(x.size, 1.0 / (len(cases) * x.size)) for x in cases])
        mean = float(np.sum(w * v))
        q = np.percentile(v, [0.5, 50, 99.5], weights=w, method="inverted_cdf")
        want = {"mean": mean, "std": np.sqrt(np.sum(w * (v - mean) ** 2)), "median": q[1], "min": v.min(),
                "max": v.max(), "percentile_99_5": q[2], "percentile_00_5": q[0]}
        got = fp["foreground_intensity_properties_per_channel"][str(c)]
        assert set(got) == set(want)
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=0.01), (c, key)
    t1, t2 = (fp["foreground_intensity_properties_per_channel"][c]["mean"] for c in "01")
    assert abs(t1 - t2) > 10  # two contrasts, not one channel counted twice
    for v in LABEL_VALUES:
        got = fp["class_voxels"][str(v)]
        assert got["voxels"] == exp["voxels"][v]
        np.testing.assert_allclose(got["volume_mm3"], exp["volumes"][v], rtol=1e-9)
        assert got["components"] == exp["components"][v]
        assert got["fraction_of_foreground_cases"] == pytest.approx(np.mean([n > 0 for n in exp["voxels"][v]]))
        assert fp["class_frequency"][str(v)] == pytest.approx(sum(exp["voxels"][v]) / exp["total"], rel=1e-12)
    assert max(fp["class_voxels"]["2"]["components"]) >= 2  # several lesions: components are counted
    assert fp["class_voxels"]["1"]["volume_mm3"][3] == pytest.approx(exp["voxels"][1][3] * 2 * 2 * 3.6)
    fractions = [np.prod(s) / 32 / 32 / 16 for s in exp["shapes"]]
    assert fp["median_relative_size_after_cropping"] == pytest.approx(float(np.median(fractions)))
