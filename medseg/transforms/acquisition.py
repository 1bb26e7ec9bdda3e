"""Acquisition shifts: what another scanner or protocol does to an image, as pure functions.

Used twice: by the robustness check (:mod:`medseg.evaluation.robustness`, on raw intensities in HU or
MR units, with the voxel spacing in mm) and, for the bias field, by training augmentation
(:class:`RandBiasFieldd`, on normalised patches).

- :func:`offset`: ``x + delta`` inside ``mask``.
- :func:`contrast`: ``(x - c) * factor + c`` inside ``mask``, ``c`` the mean inside ``mask``.
- :func:`add_noise`: ``x + N(0, sd^2)`` inside ``mask`` (Gaussian; ``sd`` in image units).
- :func:`blur`: Gaussian of ``sigma_mm`` per axis (in mm, converted with the spacing); a softer
  reconstruction kernel when applied in-plane.
- :func:`thicker_slices`: every ``factor`` adjacent slices along ``axis`` averaged into one slice
  (a box slice profile ``factor`` times as thick), then linearly interpolated back to the original
  slice positions, so the image keeps its grid and affine while its through-plane detail is lost.
- :func:`bias_field`: ``exp(sum c_ijk P_i(x) P_j(y) P_k(z))`` with Legendre polynomials ``P`` on
  [-1, 1] per axis, ``i + j + k <= degree`` (MONAI ``RandBiasField``'s field); :func:`bounded_bias_field`
  rescales its exponent to a stated amplitude (a coil's field stays within tens of percent, while
  random Legendre coefficients alone give ratios of 10x across a patch); :func:`apply_bias_field`
  multiplies ``x - floor`` by it so a zero background stays zero.

Arrays are ``(X, Y, Z)`` numpy (one channel) unless stated; outputs are float32.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable
from scipy import ndimage

__all__ = ["offset", "contrast", "add_noise", "blur", "thicker_slices", "bias_field", "bias_coefficients",
           "bounded_bias_field", "apply_bias_field", "RandBiasFieldd"]


def _mask(x: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    return np.ones(x.shape, bool) if mask is None else np.asarray(mask, bool)


def offset(x: np.ndarray, delta: float, mask: np.ndarray | None = None) -> np.ndarray:
    out = np.asarray(x, np.float32).copy()
    m = _mask(out, mask)
    out[m] += np.float32(delta)
    return out


def contrast(x: np.ndarray, factor: float, mask: np.ndarray | None = None) -> np.ndarray:
    out = np.asarray(x, np.float32).copy()
    m = _mask(out, mask)
    if m.any():
        centre = out[m].mean()
        out[m] = (out[m] - centre) * np.float32(factor) + centre
    return out


def add_noise(x: np.ndarray, sd: float, rng: np.random.Generator, mask: np.ndarray | None = None) -> np.ndarray:
    out = np.asarray(x, np.float32).copy()
    m = _mask(out, mask)
    out[m] += rng.normal(0.0, sd, size=int(m.sum())).astype(np.float32)
    return out


def blur(x: np.ndarray, sigma_mm: Sequence[float], spacing: Sequence[float]) -> np.ndarray:
    sigma = [s / float(sp) for s, sp in zip(sigma_mm, spacing, strict=True)]
    return ndimage.gaussian_filter(np.asarray(x, np.float32), sigma=sigma, mode="nearest").astype(np.float32)


def thicker_slices(x: np.ndarray, factor: int, axis: int) -> np.ndarray:
    """Slices ``factor`` times as thick along ``axis`` (box profile), back on the original slice grid."""
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor!r}")
    a = np.moveaxis(np.asarray(x, np.float32), axis, 0)
    n = a.shape[0]
    groups = [a[k:k + factor].mean(axis=0) for k in range(0, n, factor)]
    centres = np.asarray([k + (min(factor, n - k) - 1) / 2 for k in range(0, n, factor)])
    thick = np.stack(groups)
    pos = np.clip(np.interp(np.arange(n), centres, np.arange(len(centres))), 0, len(centres) - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, len(centres) - 1)
    w = (pos - lo).reshape((-1,) + (1,) * (a.ndim - 1)).astype(np.float32)
    out = (1 - w) * thick[lo] + w * thick[hi]
    return np.moveaxis(out, 0, axis).astype(np.float32)


def bias_coefficients(degree: int, coeff_max: float, rng: np.random.Generator) -> np.ndarray:
    """``(degree+1,)*3`` Legendre coefficients, uniform in ``[-coeff_max, coeff_max]`` for ``0 < i+j+k <= degree``."""
    c = np.zeros((degree + 1,) * 3)
    for i in range(degree + 1):
        for j in range(degree + 1 - i):
            for k in range(degree + 1 - i - j):
                if i + j + k:
                    c[i, j, k] = rng.uniform(-coeff_max, coeff_max)
    return c


def bias_field(shape: Sequence[int], coeffs: np.ndarray) -> np.ndarray:
    """``exp`` of the Legendre series ``coeffs`` ``(d+1, d+1, d+1)`` on a ``shape`` grid spanning [-1, 1] per axis."""
    from numpy.polynomial import legendre

    axes = [np.linspace(-1.0, 1.0, int(n)) for n in shape]
    return np.exp(legendre.leggrid3d(*axes, coeffs)).astype(np.float32)


def bounded_bias_field(shape: Sequence[int], degree: int, amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """A random field of ``degree`` (:func:`bias_coefficients` with unit range) whose log spans exactly
    ``[-amplitude, amplitude]`` at its extreme: values within ``[exp(-amplitude), exp(amplitude)]``."""
    log_field = np.log(bias_field(shape, bias_coefficients(degree, 1.0, rng)))
    peak = max(float(np.abs(log_field).max()), 1e-6)
    return np.exp(float(amplitude) * log_field / peak).astype(np.float32)


def apply_bias_field(x: np.ndarray | torch.Tensor, field: np.ndarray, floor: float | None = None) -> Any:
    """``(x - floor) * field + floor`` (``floor``: ``x.min()`` when None) for ``x`` ``(*spatial)`` or ``(C, *spatial)``."""
    if isinstance(x, torch.Tensor):
        f = torch.as_tensor(field, dtype=x.dtype, device=x.device)
        lo = x.min() if floor is None else floor
        return (x - lo) * f + lo
    arr = np.asarray(x, np.float32)
    lo = arr.min() if floor is None else floor
    return ((arr - lo) * field + lo).astype(np.float32)


class RandBiasFieldd(Randomizable, MapTransform):
    """With probability ``prob``, a smooth multiplicative field of ``degree`` whose log amplitude is drawn
    uniformly in ``[0, amplitude_max]`` (:func:`bounded_bias_field`), applied to ``x - min`` per channel
    (:func:`apply_bias_field`).

    MONAI's ``RandBiasField`` multiplies the values themselves, which on a z-scored image (mean 0) flips
    nothing dark to bright but scales the dark and bright sides in opposite directions; measured from the
    minimum, the field brightens and darkens tissue as a coil does. MONAI's field is also unbounded: its
    coefficients, summed over 19 terms of degree 3, reach ratios of several times across a patch.
    """

    def __init__(self, keys: KeysCollection, prob: float = 0.3, degree: int = 3, amplitude_max: float = 0.3,
                 allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob!r}")
        if degree < 1 or amplitude_max < 0:
            raise ValueError(f"degree must be >= 1 and amplitude_max >= 0, got {degree!r} and {amplitude_max!r}")
        self.prob, self.degree, self.amplitude_max = float(prob), int(degree), float(amplitude_max)
        self.rng: np.random.Generator | None = None
        self.amplitude = 0.0

    def randomize(self, data: Any = None) -> None:
        do = self.R.rand() < self.prob
        self.amplitude = float(self.R.uniform(0.0, self.amplitude_max))
        self.rng = np.random.default_rng(self.R.randint(2**31)) if do else None

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        if self.rng is None:
            return d
        field: np.ndarray | None = None
        for key in self.key_iterator(d):
            img = d[key]
            if field is None:
                field = bounded_bias_field(img.shape[1:], self.degree, self.amplitude, self.rng)
            channels = [apply_bias_field(img[c], field) for c in range(img.shape[0])]
            d[key] = torch.stack(channels) if isinstance(img, torch.Tensor) else np.stack(channels)
        return d
