"""Paired percentile bootstrap: cases with known answers and the argument checks."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.metrics.bootstrap import bootstrap_mean_ci, paired_bootstrap_ci


def test_constant_differences_collapse_the_interval():
    # a - b = 0.25 for every case: every resample has mean 0.25, so low = estimate = high = 0.25
    rng = np.random.default_rng(3)
    b = rng.uniform(0.2, 0.7, size=17)
    ci = paired_bootstrap_ci(b + 0.25, b, n_boot=500)
    assert ci.estimate == pytest.approx(0.25)
    assert ci.low == pytest.approx(0.25)
    assert ci.high == pytest.approx(0.25)
    assert (ci.n, ci.n_boot, ci.confidence) == (17, 500, 0.95)


def test_large_sample_matches_the_normal_interval():
    # n = 4000 differences ~ N(0.1, 0.3^2): the bootstrap distribution of the mean is close to normal,
    # so the percentile interval is mean +- 1.96 * sd / sqrt(n) (half-width ~0.0093) to within ~5%
    rng = np.random.default_rng(0)
    a = rng.normal(0.6, 0.2, size=4000)
    b = a - rng.normal(0.1, 0.3, size=4000)
    d = a - b
    half = 1.959964 * d.std(ddof=1) / np.sqrt(d.size)
    ci = paired_bootstrap_ci(a, b, n_boot=4000, seed=1)
    assert ci.estimate == pytest.approx(d.mean())
    assert ci.low == pytest.approx(d.mean() - half, abs=0.05 * half)
    assert ci.high == pytest.approx(d.mean() + half, abs=0.05 * half)


def test_ninety_percent_interval_is_narrower_and_inside():
    d = np.random.default_rng(2).normal(size=50)
    wide, narrow = bootstrap_mean_ci(d, confidence=0.95), bootstrap_mean_ci(d, confidence=0.90)
    assert wide.low < narrow.low < narrow.high < wide.high


def test_same_seed_same_interval_other_seed_other_interval():
    d = np.random.default_rng(5).normal(size=30)
    assert bootstrap_mean_ci(d, seed=4) == bootstrap_mean_ci(d, seed=4)
    assert bootstrap_mean_ci(d, seed=4).low != bootstrap_mean_ci(d, seed=5).low


@pytest.mark.parametrize(("a", "b", "kwargs", "message"), [
    ([1.0, 2.0], [1.0], {}, r"a and b must pair up one-to-one, got shapes \(2,\) and \(1,\)"),
    ([], [], {}, r"values must be a non-empty 1D array, got shape \(0,\)"),
    ([1.0, np.nan], [0.0, 0.0], {}, "values must be finite, got 1 non-finite value"),
    ([1.0], [0.0], {"n_boot": 0}, "n_boot must be >= 1, got 0"),
    ([1.0], [0.0], {"confidence": 1.0}, r"confidence must be in \(0, 1\), got 1.0"),
], ids=["shapes", "empty", "nan", "n_boot", "confidence"])
def test_bad_arguments_name_the_parameter(a, b, kwargs, message):
    with pytest.raises(ValueError, match=message):
        paired_bootstrap_ci(np.array(a), np.array(b), **kwargs)
