"""Spectral summaries: closed forms, batching, and property-based identities."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stabnb.summaries import (
    condition_number,
    effective_rank,
    numerical_rank,
    spectral_entropy,
    stable_rank,
    summarize_spectrum,
)

DT = torch.float64


def test_closed_forms():
    r = 7
    flat = torch.ones(r, dtype=DT)
    for kind in ("squared", "roy_vetterli", "eigen"):
        assert spectral_entropy(flat, kind=kind).item() == pytest.approx(math.log(r))
        assert spectral_entropy(flat, kind=kind, normalized=True).item() == pytest.approx(1.0)
        assert effective_rank(flat, kind=kind).item() == pytest.approx(r)
    rank_one = torch.tensor([3.0, 0.0, 0.0], dtype=DT)
    assert spectral_entropy(rank_one).item() == 0.0
    assert stable_rank(rank_one).item() == 1.0
    assert condition_number(rank_one).item() == math.inf
    s = torch.tensor([2.0, 1.0], dtype=DT)
    p = torch.tensor([0.8, 0.2], dtype=DT)
    assert spectral_entropy(s).item() == pytest.approx(float(-(p * p.log()).sum()))
    q = torch.tensor([2 / 3, 1 / 3], dtype=DT)
    assert spectral_entropy(s, kind="roy_vetterli").item() == pytest.approx(
        float(-(q * q.log()).sum()))
    assert stable_rank(s).item() == pytest.approx(1.25)
    assert condition_number(s).item() == 2.0


def test_batched_over_leading_dims():
    g = torch.Generator().manual_seed(0)
    values = torch.rand(2, 3, 5, dtype=DT, generator=g)
    out = spectral_entropy(values)
    assert out.shape == (2, 3)
    torch.testing.assert_close(out[1, 2], spectral_entropy(values[1, 2]))
    summary = summarize_spectrum(values)
    assert summary.stable_rank.shape == (2, 3)
    json.dumps(summary.to_dict())


def test_eigen_kind_tolerates_roundoff_only():
    assert spectral_entropy(torch.tensor([1.0, -1e-12], dtype=DT), kind="eigen").item() == 0.0
    with pytest.raises(ValueError, match="non-negative"):
        spectral_entropy(torch.tensor([1.0, -0.1], dtype=DT), kind="eigen")


def test_bad_values():
    with pytest.raises(ValueError, match="kind='bogus'"):
        spectral_entropy(torch.ones(3), kind="bogus")
    with pytest.raises(ValueError, match="NaN"):
        spectral_entropy(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="identically zero"):
        stable_rank(torch.zeros(3))
    with pytest.raises(ValueError, match="floating-point"):
        spectral_entropy(torch.ones(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="at least 2"):
        spectral_entropy(torch.ones(1), normalized=True)


matrices = st.tuples(st.integers(1, 8), st.integers(1, 8), st.integers(0, 2**31 - 1),
                     st.floats(0.0, 6.0))


def _matrix(rows, cols, seed, decay):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(rows, cols, dtype=DT, generator=g)
    return A * torch.logspace(0, -decay, cols, dtype=DT)        # vary the spectral concentration


@settings(max_examples=60, deadline=None)
@given(matrices)
def test_rank_inequalities(spec):
    A = _matrix(*spec)
    s = torch.linalg.svdvals(A)
    srank, erank, rank = stable_rank(s).item(), effective_rank(s).item(), numerical_rank(s).item()
    tol = 1e-9
    assert 1 - tol <= srank <= erank * (1 + tol)
    assert erank <= rank * (1 + tol) + 1e-6 * (len(s) - rank)   # values below rtol weigh ~0
    if len(s) > 1:
        assert 0 <= spectral_entropy(s, normalized=True).item() <= 1 + tol


@settings(max_examples=40, deadline=None)
@given(matrices, st.integers(0, 2**31 - 1))
def test_orthogonal_invariance(spec, seed):
    A = _matrix(*spec)
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(A.shape[0], A.shape[0], dtype=DT, generator=g))
    V, _ = torch.linalg.qr(torch.randn(A.shape[1], A.shape[1], dtype=DT, generator=g))
    before = summarize_spectrum(torch.linalg.svdvals(A))
    after = summarize_spectrum(torch.linalg.svdvals(U @ A @ V))
    for name in ("operator_norm", "frobenius_norm", "stable_rank", "entropy", "effective_rank"):
        torch.testing.assert_close(getattr(after, name), getattr(before, name), rtol=1e-7,
                                   atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.0, 1e3, allow_nan=False), min_size=1, max_size=12))
def test_inequalities_on_raw_values(values):
    s = torch.tensor(values, dtype=DT)
    if float(s.max()) == 0.0:
        return
    nonzero = int((s > 0).sum())
    srank, erank = stable_rank(s).item(), effective_rank(s).item()
    assert 1 - 1e-12 <= srank <= erank * (1 + 1e-12) <= nonzero * (1 + 1e-9)
    torch.testing.assert_close(effective_rank(s.flip(0)), effective_rank(s))
    torch.testing.assert_close(effective_rank(3.5 * s), effective_rank(s))
