"""Bootstrap confidence intervals for paired differences (percentile method, seeded).

Comparing two methods on the same cases, the statistic is the mean of the paired differences
``d_i = a_i - b_i``. Its bootstrap distribution is built by resampling the *pairs* with replacement
``n_boot`` times; the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of the
resampled means are the interval (Efron & Tibshirani 1993, *An Introduction to the Bootstrap*,
Chapman & Hall, ch. 13, "percentile interval").

Convention: pairs are the unit of resampling (the case, or the case within a seed), so the interval
reflects case-to-case variation of the difference; quantiles use numpy's default linear
interpolation. With constant differences every resample has the same mean and the interval
collapses to that constant.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["BootstrapCI", "bootstrap_mean_ci", "paired_bootstrap_ci"]


@dataclass(frozen=True)
class BootstrapCI:
    """A point estimate with its bootstrap interval.

    Attributes:
        estimate: the statistic on the full sample (mean of the differences).
        low, high: the interval bounds.
        n: number of (paired) observations.
        n_boot: bootstrap resamples drawn.
        confidence: the interval's nominal coverage (e.g. 0.95).
    """

    estimate: float
    low: float
    high: float
    n: int
    n_boot: int
    confidence: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def bootstrap_mean_ci(values: np.ndarray, n_boot: int = 2000, confidence: float = 0.95,
                      seed: int = 0) -> BootstrapCI:
    """Percentile bootstrap interval of the mean of ``values``.

    Args:
        values: ``(N,)`` finite floats (e.g. paired differences), ``N >= 1``.
        n_boot: resamples (>= 1).
        confidence: coverage in (0, 1).
        seed: seed of the resampling generator (same seed, same interval).

    Returns:
        :class:`BootstrapCI` with ``estimate = mean(values)``.

    Raises:
        ValueError: empty or non-finite ``values``, a non-1D array, or a bad ``n_boot`` / ``confidence``.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"values must be a non-empty 1D array, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"values must be finite, got {int(np.sum(~np.isfinite(x)))} non-finite value(s)")
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot!r}")
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(int(n_boot), x.size))
    means = x[idx].mean(axis=1)
    tail = (1.0 - float(confidence)) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return BootstrapCI(float(x.mean()), float(low), float(high), int(x.size), int(n_boot), float(confidence))


def paired_bootstrap_ci(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, confidence: float = 0.95,
                        seed: int = 0) -> BootstrapCI:
    """Percentile bootstrap interval of ``mean(a - b)``, resampling the pairs ``(a_i, b_i)``.

    Args:
        a: ``(N,)`` scores of the method under test, one per pair (case, or case x seed).
        b: ``(N,)`` scores of the reference method on the same pairs, in the same order.
        n_boot, confidence, seed: as :func:`bootstrap_mean_ci`.

    Returns:
        :class:`BootstrapCI` of the mean difference ``a - b`` (positive: ``a`` scores higher).

    Raises:
        ValueError: ``a`` and ``b`` of different shapes, or as :func:`bootstrap_mean_ci`.

    Example:
        >>> ci = paired_bootstrap_ci(np.array([0.9, 0.8]), np.array([0.7, 0.6]))  # constant difference
        >>> round(ci.low, 6), round(ci.high, 6)
        (0.2, 0.2)
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"a and b must pair up one-to-one, got shapes {x.shape} and {y.shape}")
    return bootstrap_mean_ci(x - y, n_boot=n_boot, confidence=confidence, seed=seed)
