"""Foreground intensity statistics weigh every case the same, as nnU-Net v2's fingerprint extractor does.

Dataset: 4 MR-like cases with mixed spacings (1.0 mm and 1.5 mm, so the fine cases hold ~3.4x the
voxels of the coarse ones over the same anatomy) and different intensity levels. Two independent
references of nnU-Net's rule:

- exact: the equal-weight mixture of the cases' foreground distributions (each case weight 1/4,
  each voxel 1/(4 n_case)), which nnU-Net's per-case sampling with replacement estimates;
- literal: the rule run here, a fixed number of draws per case with replacement (numpy
  ``RandomState(1234)`` per case, as nnU-Net), pooled.

medseg must agree with both within 1%; pooling every voxel (the former rule) does not.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from medseg.data.datalist import load_dataset
from medseg.plan import extract_fingerprint

CASES = {  # case: (spacing mm, foreground mean, foreground sd)
    "mix_000": (1.0, 300.0, 40.0), "mix_001": (1.5, 520.0, 60.0),
    "mix_002": (1.0, 340.0, 50.0), "mix_003": (1.5, 480.0, 30.0),
}
KEYS = ("mean", "std", "median", "percentile_00_5", "percentile_99_5")


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    (root / "imagesTr").mkdir()
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(5)
    foreground = {}
    for case, (mm, mean, sd) in CASES.items():
        n = int(round(30 / mm))  # 30 mm field of view
        grid = np.stack(np.meshgrid(*[np.arange(n) * mm - 15] * 3, indexing="ij"))
        label = (np.sqrt((grid ** 2).sum(0)) < 11).astype(np.uint8)  # an 11 mm ball
        image = rng.normal(100, 10, size=label.shape).astype(np.float32)
        image[label > 0] = rng.gamma((mean / sd) ** 2, sd ** 2 / mean, size=int(label.sum()))
        affine = np.diag([mm, mm, mm, 1.0])
        nib.save(nib.Nifti1Image(image, affine), root / "imagesTr" / f"{case}_0000.nii.gz")
        nib.save(nib.Nifti1Image(label, affine), root / "labelsTr" / f"{case}.nii.gz")
        foreground[case] = image[label > 0].astype(np.float64)
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T1"}, "labels": {"background": 0, "ball": 1}, "numTraining": len(CASES),
        "file_ending": ".nii.gz"}))
    return root, foreground


def _equal_weight_mixture(foreground: dict[str, np.ndarray]) -> dict[str, float]:
    values = np.concatenate(list(foreground.values()))
    weights = np.concatenate([np.full(v.size, 1.0 / (len(foreground) * v.size)) for v in foreground.values()])
    mean = float(np.sum(weights * values))
    q = np.percentile(values, [0.5, 50, 99.5], weights=weights, method="inverted_cdf")
    return {"mean": mean, "std": float(np.sqrt(np.sum(weights * (values - mean) ** 2))), "median": q[1],
            "percentile_00_5": q[0], "percentile_99_5": q[2]}


def _nnunet_rule(foreground: dict[str, np.ndarray], per_case: int = 200_000) -> dict[str, float]:
    pooled = np.concatenate([np.random.RandomState(1234).choice(v, per_case, replace=True)
                             for v in foreground.values()])
    low, median, high = np.percentile(pooled, (0.5, 50.0, 99.5))
    return {"mean": pooled.mean(), "std": pooled.std(), "median": median, "percentile_00_5": low,
            "percentile_99_5": high}


def test_intensity_statistics_weigh_each_case_equally(mixed):
    root, foreground = mixed
    fp = extract_fingerprint(load_dataset(root))
    assert sorted({s[0] for s in fp["spacings"]}) == [1.0, 1.5]
    got = fp["foreground_intensity_properties_per_channel"]["0"]
    exact, literal = _equal_weight_mixture(foreground), _nnunet_rule(foreground)
    for key in KEYS:
        assert got[key] == pytest.approx(exact[key], rel=0.01), key
        assert got[key] == pytest.approx(literal[key], rel=0.01), key
    pooled = np.concatenate(list(foreground.values()))
    assert abs(pooled.mean() - exact["mean"]) / exact["mean"] > 0.03  # pooling every voxel is a different rule
    assert got["min"] >= pooled.min() and got["max"] <= pooled.max()


def test_the_statistics_are_seeded(mixed):
    root, _ = mixed
    dataset = load_dataset(root)
    first = extract_fingerprint(dataset, workers=1)["foreground_intensity_properties_per_channel"]
    assert extract_fingerprint(dataset, workers=2)["foreground_intensity_properties_per_channel"] == first
