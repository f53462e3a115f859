"""Ranks and Spearman's ρ against scipy.stats (ties, batching, dims, dtypes)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats
from scipy import stats as sps

from stabnb.stats import (
    average_ranks,
    fisher_z_interval,
    paired_bootstrap,
    quantile_slope,
    rank_correlation,
    sort,
    sorted_average_ranks,
    spearman,
)


def _with_ties(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 6, shape, generator=g).to(torch.float64)   # many ties


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("dim", [-1, 0, 1])
def test_average_ranks_match_scipy(dtype, dim):
    for values in (_with_ties((4, 7, 9)), torch.randn(4, 7, 9, dtype=torch.float64)):
        values = values.to(dtype)
        expected = sps.rankdata(values.numpy(), method="average", axis=dim)
        ranks = average_ranks(values, dim=dim)
        assert ranks.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
        np.testing.assert_array_equal(ranks.numpy(), expected)
    assert average_ranks(torch.tensor([3.0, 1.0, 3.0])).tolist() == [2.5, 1.0, 2.5]
    assert average_ranks(torch.full((2, 5), 7.0)).tolist() == [[3.0] * 5] * 2
    assert average_ranks(torch.tensor([[4.0]])).tolist() == [[1.0]]


def test_sorted_average_ranks_reuses_a_sort():
    values = _with_ties((3, 50))
    ordered, order = values.sort(dim=0)
    torch.testing.assert_close(sorted_average_ranks(ordered, order, dim=0),
                               average_ranks(values, dim=0))


@pytest.mark.parametrize("ties", [True, False])
def test_spearman_matches_scipy_and_broadcasts(ties):
    make = _with_ties if ties else (lambda shape, seed=0: torch.randn(
        shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)))
    a, b = make((5, 1, 40), 1), make((5, 3, 40), 2)
    rho = spearman(a, b)
    assert rho.shape == (5, 3)
    for i in range(5):
        for k in range(3):
            expected = sps.spearmanr(a[i, 0].numpy(), b[i, k].numpy()).statistic
            assert float(rho[i, k]) == pytest.approx(expected, abs=1e-12)
    torch.testing.assert_close(spearman(a.transpose(1, 2), b.transpose(1, 2), dim=1), rho)


def test_constant_vectors_and_length_check():
    flat, ramp = torch.ones(6), torch.arange(6.0)
    assert float(spearman(flat, flat)) == 1.0 and float(spearman(flat, ramp)) == 0.0
    assert float(rank_correlation(average_ranks(ramp), average_ranks(-ramp))) == -1.0
    with pytest.raises(ValueError, match="same length along dim=-1; got 6 and 5"):
        spearman(ramp, ramp[:5])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sort_equals_stable_torch_sort(dtype):
    values = torch.randn(6, 5, 300, dtype=dtype, generator=torch.Generator().manual_seed(3))
    values[0, 0, :40] = 0.5                                  # ties
    values[1, 2, :3] = torch.tensor([-0.0, 0.0, -0.0])       # signed zeros tie too
    values[2, 1, :2] = torch.tensor([torch.finfo(dtype).max, -torch.finfo(dtype).tiny])
    for dim in (-1, 1):
        ordered, order = sort(values, dim)
        expected, expected_order = torch.sort(values, dim=dim, stable=True)
        torch.testing.assert_close(ordered, expected, rtol=0, atol=0)
        assert torch.equal(order, expected_order)


def test_sort_in_row_blocks_on_threads_equals_one_block():
    # 2 threads, rows of 3072 (the CIFAR attribution size): the rows are sorted in 2 blocks
    values = torch.randn(64, 11, 3072, generator=torch.Generator().manual_seed(4))
    values[0, :, :50] = -1.25                                 # ties across the block boundary
    values[40, 3, :7] = torch.tensor([-0.0, 0.0, -0.0, 0.0, -0.0, 0.0, -0.0])
    values[63, 10, :3] = torch.tensor([float("inf"), -float("inf"), 0.0])
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        ordered, order = sort(values)
    finally:
        torch.set_num_threads(threads)
    expected, expected_order = torch.sort(values + 0.0, stable=True)
    assert torch.equal(order, expected_order)
    assert torch.equal(ordered, expected) and not bool(ordered.signbit()[ordered == 0].any())


# --- intervals
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


def test_sort_of_empty_rows_is_empty():
    ordered, order = sort(torch.randn(5, 0))
    assert ordered.shape == order.shape == (5, 0)
