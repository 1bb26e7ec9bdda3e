"""Every augmentation transform: geometry kept between image and label, intensities in the stated range,
and the transforms medseg writes itself against a reference (MONAI, numpy)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai import transforms as mt

from medseg.transforms.acquisition import (
    RandBiasFieldd,
    apply_bias_field,
    bias_coefficients,
    bias_field,
    bounded_bias_field,
)
from medseg.transforms.spatial import (
    RandPatchAffined,
    RandSimulateLowResolutiond,
    centre_crop,
    patch_affine,
    simulate_low_resolution,
)

BOX, PATCH = (24, 24, 12), (16, 16, 8)


def _pair(seed: int = 0) -> dict[str, torch.Tensor]:
    """A label of three blocks (values 1, 2, 3) and an image derived from it: 10 x label."""
    label = torch.zeros(1, *BOX)
    label[0, 4:12, 5:15, 2:9] = 1
    label[0, 12:20, 8:18, 3:10] = 2
    label[0, 9:14, 16:22, 1:6] = 3
    return {"image": label * 10.0, "label": label.clone()}


def _intensity_input(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, *PATCH, generator=g) * 2.0 + 1.0


# --- spatial: geometry --------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(6))
def test_rand_patch_affine_moves_image_and_label_together(seed):
    t = RandPatchAffined(["image", "label"], PATCH, [[-0.5, 0.5]] * 3, [0.7, 1.4], prob_rotation=1.0, prob_scale=1.0,
                         modes=["nearest", "nearest"], padding_modes=["zeros", "zeros"])
    t.set_random_state(seed)
    out = t(_pair())
    assert tuple(out["image"].shape[1:]) == PATCH == tuple(out["label"].shape[1:])
    # nearest on both: the image is still exactly 10 x the label, voxel for voxel
    assert torch.equal(out["image"], out["label"] * 10.0)
    assert any(abs(a) > 0 for a in t.rotation) and t.scale[0] == t.scale[1] == t.scale[2] != 1.0


def test_rand_patch_affine_bilinear_image_follows_the_nearest_label():
    t = RandPatchAffined(["image", "label"], PATCH, [[-0.5, 0.5]] * 3, [0.8, 1.2], prob_rotation=1.0, prob_scale=1.0,
                         modes=["bilinear", "nearest"], padding_modes=["border", "zeros"])
    t.set_random_state(3)
    out = t(_pair())
    agree = (torch.round(out["image"] / 10.0) == out["label"]).float().mean().item()
    assert agree > 0.9  # only voxels on a block's boundary are mixed by the interpolation


def test_no_rotation_or_scale_is_an_exact_centre_crop():
    t = RandPatchAffined(["image", "label"], PATCH, [[-1, 1]] * 3, [0.7, 1.4], prob_rotation=0.0, prob_scale=0.0)
    data = _pair()
    data["image"] = data["image"] + torch.rand(data["image"].shape)  # interpolation would change these values
    out = t(data)
    assert torch.equal(out["image"], data["image"][:, 4:20, 4:20, 2:10])


def test_patch_affine_quarter_turn_equals_numpy_rot90():
    img = torch.arange(float(np.prod(BOX))).reshape(1, *BOX)
    out = patch_affine(img, (16, 16, 8), rotation=(0.0, 0.0, math.pi / 2), mode="nearest")
    ref = np.rot90(centre_crop(img, (16, 16, 8)).numpy(), k=1, axes=(1, 2))
    # a quarter turn about z, one direction or the other, and nothing else moves
    assert np.array_equal(out.numpy(), ref) or np.array_equal(out.numpy(), np.rot90(ref, k=2, axes=(1, 2)))


def test_patch_affine_scale_above_one_shows_a_larger_region():
    data = _pair()
    small = patch_affine(data["label"], PATCH, scale=(1.4, 1.4, 1.0), mode="nearest", padding_mode="zeros")
    plain = centre_crop(data["label"], PATCH)
    assert (small > 0).sum() < (plain > 0).sum() * 1.05  # structures look smaller


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_flip_keeps_image_and_label_together(axis):
    out = mt.RandFlipd(["image", "label"], prob=1.0, spatial_axis=axis)(_pair())
    assert torch.equal(torch.as_tensor(out["image"]), torch.as_tensor(out["label"]) * 10.0)


# --- low resolution -----------------------------------------------------------------------------------------

def test_low_resolution_equals_monai_on_every_axis():
    x = _intensity_input()
    ref = mt.RandSimulateLowResolution(prob=1.0, zoom_range=(0.5, 0.5))(x)
    assert torch.allclose(simulate_low_resolution(x, 0.5), torch.as_tensor(ref), atol=1e-6)


def test_low_resolution_in_plane_leaves_the_slices_alone_and_stays_in_range():
    x = _intensity_input()
    t = RandSimulateLowResolutiond("image", prob=1.0, zoom_range=(0.5, 0.5), axes=(0, 1))
    out = t({"image": x})["image"]
    assert out.shape == x.shape and x.min() <= out.min() and out.max() <= x.max()  # convex combinations
    # a slice-wise operation: an image constant within each slice stays as it is
    slices = torch.arange(8.0).expand(1, 16, 16, 8).clone()
    assert torch.allclose(simulate_low_resolution(slices, 0.5, axes=(0, 1)), slices)


# --- intensity: statistics in the stated ranges -------------------------------------------------------------

def _draws(transform, n: int = 20):
    x = _intensity_input()
    transform.set_random_state(0)
    return x, [torch.as_tensor(transform({"image": x.clone(), "label": torch.ones_like(x)})["image"]) for _ in range(n)]


def test_noise_sd_within_range():
    x, outs = _draws(mt.RandGaussianNoised("image", prob=1.0, std=0.5, sample_std=True))
    sds = [float((o - x).std()) for o in outs]
    assert max(sds) <= 0.5 * 1.05 and min(sds) >= 0.0 and len(set(round(s, 4) for s in sds)) > 1


def test_blur_stays_within_the_input_range_and_keeps_the_mean():
    x, outs = _draws(mt.RandGaussianSmoothd("image", sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), sigma_z=(0.5, 1.0),
                                            prob=1.0))
    for o in outs:
        assert x.min() <= o.min() and o.max() <= x.max() and o.std() < x.std()


def test_brightness_factor_within_range():
    x, outs = _draws(mt.RandScaleIntensityd("image", factors=(-0.25, 0.25), prob=1.0))
    for o in outs:
        ratio = (o / x)[x.abs() > 0.1]
        assert torch.allclose(ratio, ratio.mean(), atol=1e-4) and 0.75 - 1e-5 <= ratio.mean() <= 1.25 + 1e-5


def test_offset_within_range():
    x, outs = _draws(mt.RandShiftIntensityd("image", offsets=(-2.4, 2.4), prob=1.0))
    for o in outs:
        d = o - x
        assert torch.allclose(d, d.mean(), atol=1e-4) and -2.4 - 1e-5 <= d.mean() <= 2.4 + 1e-5


def test_contrast_keeps_mean_and_range():
    x, outs = _draws(mt.RandScaleIntensityFixedMeand("image", factors=(-0.25, 0.25), fixed_mean=True,
                                                     preserve_range=True, prob=1.0))
    for o in outs:
        assert x.min() - 1e-5 <= o.min() and o.max() <= x.max() + 1e-5
        inside = (o > x.min() + 1e-4) & (o < x.max() - 1e-4)  # not clipped
        factor = ((o - x.mean()) / (x - x.mean()))[inside & ((x - x.mean()).abs() > 0.5)]
        assert 0.75 - 1e-3 <= factor.median() <= 1.25 + 1e-3


@pytest.mark.parametrize("invert", [False, True], ids=["gamma", "inverted gamma"])
def test_gamma_retains_mean_and_std(invert):
    x, outs = _draws(mt.RandAdjustContrastd("image", prob=1.0, gamma=(0.7, 1.5), invert_image=invert,
                                            retain_stats=True))
    for o in outs:
        assert float(o.mean()) == pytest.approx(float(x.mean()), abs=1e-3)
        assert float(o.std()) == pytest.approx(float(x.std()), rel=1e-3)
    assert any(not torch.allclose(o, x) for o in outs)


def test_bias_field_equals_monais_field():
    coeffs = np.zeros((4, 4, 4))
    values = np.random.default_rng(0).uniform(-0.3, 0.3, 20)
    pts = [[i, j, k] for i in range(4) for j in range(4 - i) for k in range(4 - i - j)]
    for (i, j, k), v in zip(pts, values, strict=True):
        coeffs[i, j, k] = v
    ref = np.exp(mt.RandBiasField(degree=3)._generate_random_field(PATCH, 3, values))
    assert np.allclose(bias_field(PATCH, coeffs), ref, rtol=1e-5)


def test_bias_field_ratio_within_range_and_measured_from_the_minimum():
    x, outs = _draws(RandBiasFieldd("image", prob=1.0, degree=3, amplitude_max=0.3))
    peaks = []
    for o in outs:
        ratio = ((o - x.min()) / (x - x.min()))[x > x.min() + 0.5]
        log_ratio = np.log(ratio.numpy())
        assert np.abs(log_ratio).max() <= 0.3 + 1e-4 and ratio.std() > 0
        peaks.append(float(np.abs(log_ratio).max()))
        assert float(o.min()) == pytest.approx(float(x.min()), abs=1e-4)  # the floor stays where it was
    assert max(peaks) > 0.1  # amplitudes are drawn over the range, not all near zero
    assert np.allclose(apply_bias_field(np.zeros(PATCH), np.full(PATCH, 1.5, np.float32), floor=0.0), 0.0)


def test_bounded_bias_field_peaks_at_the_amplitude_while_raw_coefficients_do_not():
    rng = np.random.default_rng(3)
    for amplitude in (0.05, 0.2, 0.3):
        log_field = np.log(bounded_bias_field(PATCH, 3, amplitude, rng))
        assert np.abs(log_field).max() == pytest.approx(amplitude, rel=1e-5)
    raw = bias_field(PATCH, bias_coefficients(3, 0.3, np.random.default_rng(3)))
    assert raw.max() / raw.min() > math.exp(0.6)  # what the bound prevents: far beyond exp(2 * 0.3)


def test_intensity_transforms_leave_the_label_alone():
    data = _pair()
    for t in (RandBiasFieldd("image", prob=1.0), RandSimulateLowResolutiond("image", prob=1.0),
              mt.RandAdjustContrastd("image", prob=1.0, invert_image=True, retain_stats=True)):
        assert torch.equal(torch.as_tensor(t(dict(data))["label"]), data["label"])
