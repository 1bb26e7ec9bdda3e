"""Acquisition shifts of the robustness battery: each does what its docstring states, by hand-checkable cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medseg.transforms import acquisition as acq


def _ramp(n: int = 12) -> np.ndarray:
    return np.broadcast_to(np.arange(n, dtype=np.float32) * 3.0, (4, 5, n)).copy()


def test_thicker_slices_by_one_changes_nothing():
    x = np.random.default_rng(0).normal(size=(4, 5, 9)).astype(np.float32)
    assert np.allclose(acq.thicker_slices(x, 1, axis=2), x)


def test_thicker_slices_keep_a_linear_ramp_inside_and_lose_detail():
    # the mean of two slices of a ramp is the ramp at their centre, and linear interpolation between
    # centres gives the ramp back except beyond the outer centres (clamped)
    out = acq.thicker_slices(_ramp(), 2, axis=2)
    assert out.shape == (4, 5, 12)
    assert np.allclose(out[..., 1:-1], _ramp()[..., 1:-1])
    stripes = np.zeros((3, 3, 12), np.float32)
    stripes[..., ::2] = 1.0  # alternating slices: all detail along z
    assert np.allclose(acq.thicker_slices(stripes, 2, axis=2), 0.5)


def test_offset_contrast_noise_inside_the_mask_only():
    x = np.zeros((6, 6, 6), np.float32)
    x[1:5, 1:5, 1:5] = 100.0
    x[2:4, 2:4, 2:4] = 200.0
    mask = x != 0
    assert np.array_equal(acq.offset(x, 10.0, mask), np.where(mask, x + 10, 0))
    c = acq.contrast(x, 1.3, mask)
    assert c[~mask].max() == 0 and c[mask].mean() == pytest.approx(x[mask].mean(), rel=1e-5)
    assert (c[2, 2, 2] - c[1, 1, 1]) == pytest.approx(1.3 * 100.0, rel=1e-5)
    n = acq.add_noise(np.zeros((40, 40, 40), np.float32), 40.0, np.random.default_rng(0))
    assert n.std() == pytest.approx(40.0, rel=0.02) and abs(n.mean()) < 1.0


def test_blur_equals_scipy_with_sigma_in_voxels():
    x = np.random.default_rng(1).normal(size=(10, 10, 6)).astype(np.float32)
    ref = ndimage.gaussian_filter(x, sigma=(1.25, 1.25, 0.0), mode="nearest")
    assert np.allclose(acq.blur(x, (1.0, 1.0, 0.0), (0.8, 0.8, 2.5)), ref, atol=1e-6)


def test_bias_field_is_one_without_coefficients_and_keeps_the_floor():
    assert np.allclose(acq.bias_field((4, 5, 6), np.zeros((4, 4, 4))), 1.0)
    x = np.array([[[0.0, 10.0, 20.0]]], np.float32)
    assert np.allclose(acq.apply_bias_field(x, np.full(x.shape, 1.2, np.float32), floor=0.0), [[[0.0, 12.0, 24.0]]])
