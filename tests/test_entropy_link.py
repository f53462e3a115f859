"""Tests for stabnb.entropy_link: the join against dense Jacobians, envelope, ρ, the figure."""

from __future__ import annotations

import json
import math

import matplotlib
import pytest
import torch
from matplotlib.figure import Figure
from torch.func import jacrev

from stabnb.attribution import AttributionStability
from stabnb.entropy_link import (
    EntropyLinkTable,
    envelope,
    per_sample_table,
    rank_correlation,
)
from stabnb.models import MLP
from stabnb.plotting import plot_entropy_link

matplotlib.use("Agg")
DT = torch.float64


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = MLP(6, (8,), 3, activation="tanh").to(DT).eval()
    x = torch.rand(7, 6, generator=torch.Generator().manual_seed(1), dtype=DT)
    result = AttributionStability(model, num_samples=3).measure(
        x, generator=torch.Generator().manual_seed(2))
    return model, x, result


def table_of(**columns) -> EntropyLinkTable:
    return EntropyLinkTable({k: torch.tensor(v, dtype=DT) for k, v in columns.items()}, {})


def test_table_matches_dense_jacobians_and_probe(setup):
    model, x, result = setup
    table = per_sample_table(model, x, None, result)
    assert len(table) == 7
    for i in range(7):
        s = torch.linalg.svdvals(jacrev(model)(x[i:i + 1]).reshape(3, 6))
        p = s**2 / (s**2).sum()
        assert torch.allclose(table["operator_norm"][i], s[0])
        assert torch.allclose(table["frobenius_norm"][i], s.norm())
        assert torch.allclose(table["spectral_entropy"][i], -(p * p.log()).sum())
        assert torch.allclose(table["stable_rank"][i], (s**2).sum() / s[0] ** 2)
    assert torch.equal(table["relative_l2"], result.relative_l2)
    assert torch.equal(table["target"], result.target.to(DT))
    assert (table["stable_rank"] <= table["effective_rank"] + 1e-12).all()
    record = json.loads(json.dumps(table.to_dict()))
    assert len(record["columns"]["spectral_entropy"]) == 7
    assert record["settings"]["probe"]["num_samples"] == 3


def test_table_refuses_mismatched_inputs_or_target(setup):
    model, x, result = setup
    with pytest.raises(ValueError, match="6 samples"):
        per_sample_table(model, x[:6], None, result)
    with pytest.raises(ValueError, match="target differs"):
        per_sample_table(model, x, (result.target + 1) % 3, result)
    assert len(per_sample_table(model, x, result.target, result)) == 7
    with pytest.raises(KeyError, match="'entropy'"):
        per_sample_table(model, x, None, result)["entropy"]


def test_envelope_is_max_per_quantile_bin():
    table = table_of(spectral_entropy=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, math.nan],
                     relative_l2=[5.0, 1.0, 2.0, 0.5, 3.0, 9.0, math.nan, 1.0])
    bound = envelope(table, num_bins=2)                            # 6 finite rows
    assert bound.num_dropped == 2
    assert bound.edges.tolist() == [0.1, 0.3, 0.6]
    # bins [0.1, 0.3) = {5, 1}, [0.3, 0.6] = {2, 0.5, 3, 9}
    assert bound.maximum.tolist() == [5.0, 9.0] and bound.count.tolist() == [2, 4]
    tied = envelope(table_of(spectral_entropy=[1.0] * 4, relative_l2=[1.0, 4.0, 2.0, 3.0]))
    assert tied.maximum.tolist() == [4.0] and tied.count.tolist() == [4]
    with pytest.raises(ValueError, match="num_bins=0"):
        envelope(table, num_bins=0)


def test_rank_correlation_extremes_and_seed():
    xs = [0.1, 0.4, 0.2, 0.9, 0.5, 0.3, 0.8, 0.7, 0.6, 1.0]
    up = rank_correlation(table_of(spectral_entropy=xs, relative_l2=[2 * v for v in xs]))
    down = rank_correlation(table_of(spectral_entropy=xs, relative_l2=[-v for v in xs]))
    assert up.rho == pytest.approx(1.0) and down.rho == pytest.approx(-1.0)
    assert up.p_value < 0.01 and up.n == 10
    noisy = table_of(spectral_entropy=xs, relative_l2=[0.3, 0.1, 0.9, 0.2, 0.5, 0.8, 0.4, 0.6,
                                                       0.7, 0.0])
    assert rank_correlation(noisy, seed=3) == rank_correlation(noisy, seed=3)
    assert 0 < rank_correlation(noisy).p_value <= 1
    with pytest.raises(ValueError, match="at least 3"):
        rank_correlation(table_of(spectral_entropy=[1.0, 2.0], relative_l2=[1.0, 2.0]))


def test_plot_returns_figure(setup):
    model, x, result = setup
    table = per_sample_table(model, x, None, result)
    fig = plot_entropy_link({"baseline": table, "again": table}, num_bins=3)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "spectral entropy" and len(ax.get_legend().get_texts()) == 2
