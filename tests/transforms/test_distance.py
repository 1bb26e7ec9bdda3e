"""Signed distance maps: scipy reference with anisotropic spacing, metadata spacing, MONAI pipelines."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import CacheDataset, MetaTensor
from monai.transforms import Compose, RandCropByPosNegLabeld, RandFlipd
from scipy.ndimage import distance_transform_edt

from medseg.transforms import SignedDistanceMap, SignedDistanceMapd, mask_signed_distance, signed_distance_map


def _scipy_sdm(mask: np.ndarray, spacing) -> np.ndarray:
    # independent construction: + distance to the object outside, - distance to the background inside
    return distance_transform_edt(~mask, sampling=spacing) - distance_transform_edt(mask, sampling=spacing)


def _label() -> np.ndarray:
    lab = np.zeros((1, 12, 10, 8), dtype=np.int64)
    lab[0, 2:8, 3:9, 1:6] = 1
    lab[0, 4:6, 4:6, 2:4] = 2
    return lab


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.7, 1.3, 3.0)], ids=["iso", "aniso"])
def test_matches_scipy_construction(spacing):
    lab = _label()
    sdm = signed_distance_map(lab, 4, spacing)
    assert sdm.shape == (4, 12, 10, 8) and sdm.dtype == np.float32
    for c in range(3):
        np.testing.assert_allclose(sdm[c], _scipy_sdm(lab[0] == c, spacing), atol=1e-4)
    assert not sdm[3].any()  # class 3 is empty: all zeros


def test_hand_values_shifted_sphere_and_full_class():
    # a voxel one diagonal step from a single-voxel object is sqrt(3) away at unit spacing
    m = np.zeros((5, 5, 5), bool)
    m[2, 2, 2] = True
    d = mask_signed_distance(m)
    assert d[3, 3, 3] == pytest.approx(np.sqrt(3)) and d[2, 2, 2] == pytest.approx(-1.0)
    assert not mask_signed_distance(np.ones((3, 3), bool)).any()  # full: no interface


def test_spacing_from_metatensor_affine():
    lab = torch.from_numpy(_label()).float()
    affine = torch.diag(torch.tensor([0.7, 1.3, 3.0, 1.0], dtype=torch.float64))
    out = SignedDistanceMap(num_classes=3)(MetaTensor(lab, affine=affine))
    assert isinstance(out, MetaTensor) and torch.equal(out.affine, affine)
    np.testing.assert_allclose(out[1].numpy(), _scipy_sdm(_label()[0] == 1, (0.7, 1.3, 3.0)), atol=1e-4)
    plain = SignedDistanceMap(num_classes=3, spacing=(0.7, 1.3, 3.0))(lab)
    torch.testing.assert_close(plain, out.as_tensor())


def test_validation_messages():
    with pytest.raises(ValueError, match=r"num_classes must be an integer >= 1, got 0"):
        SignedDistanceMap(0)
    with pytest.raises(ValueError, match=r"label values must be in \[0, 1\] for num_classes=2, found \[0, 2\]"):
        signed_distance_map(_label(), 2)
    with pytest.raises(ValueError, match=r"spacing must be 3 positive numbers"):
        signed_distance_map(_label(), 3, (1.0, -1.0, 1.0))
    with pytest.raises(ValueError, match=r"channel-first \(1, \*spatial\)"):
        signed_distance_map(_label()[0], 3)


class _CountingSDM(SignedDistanceMapd):
    calls = 0

    def __call__(self, data):
        type(self).calls += 1
        return super().__call__(data)


def test_cached_once_then_cropped_and_flipped_with_the_label():
    lab = MetaTensor(torch.from_numpy(_label()).float(), affine=torch.diag(torch.tensor([0.7, 1.3, 3.0, 1.0])))
    data = [{"image": torch.randn(1, 12, 10, 8), "label": lab}]
    pipeline = Compose([
        _CountingSDM(keys="label", num_classes=3),
        RandCropByPosNegLabeld(keys=["image", "label", "dist"], label_key="label", spatial_size=(6, 6, 4), num_samples=2),
        RandFlipd(keys=["image", "label", "dist"], prob=1.0, spatial_axis=0),
    ])
    pipeline.set_random_state(0)
    ds = CacheDataset(data, pipeline, progress=False)
    assert _CountingSDM.calls == 1
    for _ in range(3):  # epochs: random crops/flips only
        for sample in ds[0]:
            d, y = sample["dist"], sample["label"]
            assert d.shape == (3, 6, 6, 4)
            for c in range(3):  # the map is negative exactly inside its class: moved together
                assert torch.equal(d[c] < 0, y[0] == c)
    assert _CountingSDM.calls == 1
