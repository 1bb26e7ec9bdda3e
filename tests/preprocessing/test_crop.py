"""The dark-rim crop: cropping to the nonzero region happens on the raw image, before normalisation.

An MR image (zero outside a box) has a labelled rim on the box's outer layer whose values are
below the mean: after a per-case z-score they are negative, so a crop to the positive voxels of the
*normalised* image (MONAI's default ``select_fn``) would cut the rim away. Every labelled voxel
must survive training pre-processing (everything before the first random transform), validation
and inference pre-processing. The plan's spacing equals the input spacing, so counts are exact.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from monai import transforms as mt

from medseg.data.datalist import LabelSpec
from medseg.plan import ChannelNorm, NetworkPlan, Plan
from medseg.preprocessing.pipeline import (
    inference_transforms,
    preprocessing,
    train_transforms,
    val_transforms,
)

SHAPE, SPACING = (20, 22, 10), (1.0, 1.0, 2.0)
BOX = (slice(4, 16), slice(3, 19), slice(2, 8))  # the nonzero region: 12 x 16 x 6 voxels


def _phantom(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = np.zeros(SHAPE, np.float32)
    label = np.zeros(SHAPE, np.uint8)
    image[BOX] = rng.normal(400, 20, size=image[BOX].shape)
    inner = tuple(slice(s.start + 1, s.stop - 1) for s in BOX)
    rim = np.zeros(SHAPE, bool)
    rim[BOX] = True
    rim[inner] = False
    image[rim] = rng.uniform(40, 80, size=int(rim.sum()))  # dark, but nonzero
    label[rim] = 1
    label[8:12, 9:13, 4:6] = 2
    image[label == 2] = 700
    return image, label


def _save(path, data, lps: bool = False) -> str:
    affine = np.diag([*SPACING, 1.0])
    if lps:  # the same physical image stored with x and y reversed
        data = data[::-1, ::-1]
        affine = affine @ np.array([[-1, 0, 0, SHAPE[0] - 1], [0, -1, 0, SHAPE[1] - 1], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), affine), path)
    return str(path)


def _plan(channels: int = 1) -> Plan:
    return Plan(spacing=SPACING, patch_size=(8, 8, 4), batch_size=2, samples_per_case=1, network=NetworkPlan(),
                normalization=(ChannelNorm("zscore"),) * channels, class_ratios=(1.0, 1.0, 1.0),
                label_spec=LabelSpec({0: "background", 1: "rim", 2: "core"}),
                channel_names={c: f"MR{c}" for c in range(channels)})


def _deterministic_train_part(plan: Plan) -> mt.Compose:
    steps = train_transforms(plan).transforms
    first_random = next(i for i, t in enumerate(steps) if isinstance(t, mt.Randomizable))
    # without the padding to the box the sampler reads around each patch (medseg.preprocessing.augment)
    return mt.Compose([t for t in steps[:first_random] if not isinstance(t, (mt.BorderPadd, mt.SpatialPadd))])


def _counts(label) -> list[int]:
    lab = np.asarray(label).round().astype(int)
    return [int((lab == v).sum()) for v in (1, 2)]


@pytest.mark.parametrize("lps", [False, True], ids=["ras", "lps"])
def test_every_labelled_voxel_survives_preprocessing(tmp_path, lps):
    image, label = _phantom()
    expected = _counts(label)
    data = {"image": _save(tmp_path / "img.nii.gz", image, lps), "label": _save(tmp_path / "lab.nii.gz", label, lps)}
    plan = _plan()
    # the condition the test is about: the rim is below the mean, negative once z-scored
    assert image[label == 1].mean() < image[image != 0].mean()
    for name, pipeline in (("train", _deterministic_train_part(plan)), ("val", val_transforms(plan)),
                           ("preprocessing", mt.Compose(preprocessing(plan)))):
        out = pipeline(dict(data))
        assert _counts(out["label"]) == expected, name
        assert tuple(out["label"].shape[1:]) == (12, 16, 6), name  # cropped to the nonzero box, nothing more
        normalised = np.asarray(out["image"][0])
        assert (normalised[np.asarray(out["label"][0]) == 1] < 0).all(), name
    inferred = inference_transforms(plan)({"image": data["image"]})
    assert tuple(inferred["image"].shape) == (1, 12, 16, 6)
    # the naive order (normalise, then crop to positive voxels) loses the rim: this data can catch it
    naive = mt.Compose([mt.LoadImaged(keys=["image", "label"], ensure_channel_first=True),
                        mt.NormalizeIntensityd(keys="image", nonzero=True),
                        mt.CropForegroundd(keys=["image", "label"], source_key="image")])(dict(data))
    assert _counts(naive["label"])[0] < expected[0]


def test_the_crop_keeps_the_nonzero_region_of_any_channel(tmp_path):
    """Channel 0 is zero over the rim (a smaller field of view); channel 1 covers it: nothing is lost."""
    image, label = _phantom(1)
    ch0 = np.zeros_like(image)
    ch0[6:14, 6:16, 3:7] = image[6:14, 6:16, 3:7]
    files = [_save(tmp_path / "c_0000.nii.gz", ch0), _save(tmp_path / "c_0001.nii.gz", image)]
    data = {"image": files, "label": _save(tmp_path / "c.nii.gz", label)}
    plan = _plan(2)
    for pipeline in (_deterministic_train_part(plan), val_transforms(plan)):
        out = pipeline(dict(data))
        assert out["image"].shape[0] == 2
        assert _counts(out["label"]) == _counts(label)
        assert tuple(out["label"].shape[1:]) == (12, 16, 6)
