"""Tests for stabnb.stats: intervals over seeds and images, Fisher z, quantile regression."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from stabnb.stats import fisher_z_interval, paired_bootstrap, quantile_slope


def test_paired_bootstrap_covers_the_mean_and_keeps_pairs():
    rng = np.random.default_rng(1)
    groups = [(x := rng.normal(1.0, 0.3, 80), x + 0.1) for _ in range(4)]
    diff = paired_bootstrap(groups, lambda a, b: float((b - a).mean()), num_resamples=300)
    assert diff.mean == pytest.approx(0.1) and diff.lo == pytest.approx(0.1)  # pairing kept
    mean = paired_bootstrap(groups, lambda a, b: float(a.mean()), num_resamples=300)
    assert mean.lo < mean.mean < mean.hi and mean.n == 320
    again = paired_bootstrap(groups, lambda a, b: float(a.mean()), num_resamples=300)
    assert again == mean                                                   # one seed, one output


def test_paired_bootstrap_refuses_bad_input():
    with pytest.raises(ValueError, match="no seed"):
        paired_bootstrap([], np.mean)
    with pytest.raises(ValueError, match="same images"):
        paired_bootstrap([(np.ones(3), np.ones(4))], lambda a, b: 0.0)
    with pytest.raises(ValueError, match="too few"):
        paired_bootstrap([(np.ones(3),)], np.mean, num_resamples=10)


def test_fisher_z_interval_matches_closed_form():
    got = fisher_z_interval(0.3, 103)
    half = scipy_stats.norm.ppf(0.975) * math.sqrt(1.06 / 100)
    assert got.lo == pytest.approx(math.tanh(math.atanh(0.3) - half))
    assert got.hi == pytest.approx(math.tanh(math.atanh(0.3) + half))
    with pytest.raises(ValueError, match="at least 4"):
        fisher_z_interval(0.1, 3)


def test_quantile_slope_recovers_an_envelope():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, 400)
    y = 2 * x * rng.uniform(0, 1, 400)            # the q-quantile of y given x is 2q·x
    assert quantile_slope(x, y, quantile=0.9) == pytest.approx(1.8, abs=0.15)
    assert quantile_slope(x, y, quantile=0.5) == pytest.approx(1.0, abs=0.15)
    with pytest.raises(ValueError, match="quantile=1"):
        quantile_slope(x, y, quantile=1.0)
