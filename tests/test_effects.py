"""Tests for stabnb.effects, stabnb.claims and stabnb.stats: t intervals, tables over seeds, paired changes, decision rules."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from stabnb.claims import attribution_claims, entropy_envelope_claims, summaries_claim
from stabnb.data import data_availability
from stabnb.effects import (
    DecisionRule,
    effects_table,
    format_table,
    instability,
    modest_strengths,
    records_frame,
    regularizer_effects,
    relative_change_table,
    summary_table,
)
from stabnb.entropy_link import EntropyLinkTable
from stabnb.stats import Interval, seed_interval

# Student-t 0.975 quantiles from standard tables.
T_975 = {1: 12.7062, 2: 4.3027, 3: 3.1824, 4: 2.7764, 5: 2.5706, 9: 2.2622, 30: 2.0423}


@pytest.mark.parametrize("df", sorted(T_975))
def test_seed_interval_uses_student_t_quantiles(df):
    values = [float(v) for v in range(df + 1)]
    got = seed_interval(values)
    sd = pd.Series(values).std()
    assert got.hi - got.mean == pytest.approx(T_975[df] * sd / math.sqrt(df + 1), rel=1e-4)


def test_seed_interval_closed_form():
    got = seed_interval([1.0, 2.0, 3.0])
    half = T_975[2] * 1.0 / math.sqrt(3)                     # sd = 1
    assert (got.mean, got.n) == (2.0, 3)
    assert got.lo == pytest.approx(2 - half, abs=1e-4) and got.hi == pytest.approx(2 + half, abs=1e-4)
    assert got.excludes(-1.0) and got.excludes(5.0) and not got.excludes(0.0)


def test_seed_interval_one_seed_and_non_finite():
    one = seed_interval([0.3, math.nan])
    assert one.n == 1 and math.isnan(one.lo) and not one.excludes(0.0)
    assert one.format(2) == "0.30" and one.to_dict()["lo"] is None
    with pytest.raises(ValueError, match="no finite value"):
        seed_interval([math.nan])


def _records(effect=0.5, noise=(0.0, 0.01, -0.01), acc_drop=0.002):
    """Baseline and two λ of one regulariser; instability cut by ``effect`` at λ=0.1."""
    rows = []
    for seed, eps in enumerate(noise):
        base = 0.4 + 0.05 * seed
        rows.append({"model": "mlp", "regularizer": "none", "strength": 0.0, "seed": seed,
                     "accuracy": 0.95, "gmsi": 10.0 + seed, "sal.relative_l2": base,
                     "sal.spearman": 0.9})
        for strength, cut, drop in ((0.1, effect, acc_drop), (1.0, 0.9, 0.05)):
            rows.append({"model": "mlp", "regularizer": "reg", "strength": strength, "seed": seed,
                         "accuracy": 0.95 - drop, "gmsi": (10.0 + seed) * 1.05,
                         "sal.relative_l2": base * (1 - cut + eps), "sal.spearman": 0.95})
    return pd.DataFrame(rows)


def test_records_frame_names_missing_columns():
    with pytest.raises(ValueError, match=r"lack column\(s\) \['gmsi'\]"):
        records_frame([{"model": "m", "regularizer": "none", "strength": 0.0, "seed": 0}], ["gmsi"])
    with pytest.raises(ValueError, match="no study records"):
        records_frame([])


def test_summary_table_means_and_intervals():
    table = summary_table(_records(), ["accuracy", "gmsi"])
    row = table[(table.regularizer == "none") & (table.metric == "gmsi")].iloc[0]
    expected = seed_interval([10.0, 11.0, 12.0])
    assert (row["mean"], row["n"]) == (11.0, 3)
    assert row["lo"] == pytest.approx(expected.lo) and row["hi"] == pytest.approx(expected.hi)
    grid = format_table(table)
    assert list(grid.columns) == ["accuracy", "gmsi"] and grid.shape[0] == 3


def test_relative_change_is_paired_by_seed():
    table = relative_change_table(_records(noise=(0.0, 0.0, 0.0)), ["sal.relative_l2", "gmsi"])
    row = table[(table.strength == 0.1) & (table.metric == "sal.relative_l2")].iloc[0]
    # every seed is cut by exactly 50 %, whatever its baseline: a zero-width interval.
    assert row["mean"] == pytest.approx(-0.5) and row["hi"] - row["lo"] == pytest.approx(0, abs=1e-12)
    gmsi = table[(table.strength == 0.1) & (table.metric == "gmsi")].iloc[0]
    assert gmsi["mean"] == pytest.approx(0.05)
    assert "+5.0 [+5.0, +5.0]" in format_table(table, percent=True).to_string()


def test_instability_flips_similarities():
    frame = pd.DataFrame({"a.spearman": [0.95], "a.relative_l2": [0.2]})
    assert instability(frame, "a.spearman").iloc[0] == pytest.approx(0.05)
    assert instability(frame, "a.relative_l2").iloc[0] == pytest.approx(0.2)
    change = relative_change_table(_records(), ["sal.spearman"], as_instability=True)
    assert change["mean"].iloc[0] == pytest.approx(-0.5)      # 1 − ρ: 0.10 → 0.05


def test_modest_strength_uses_accuracy_only():
    assert modest_strengths(_records()) == {("mlp", "reg"): 0.1}
    assert modest_strengths(_records(acc_drop=0.02)) == {("mlp", "reg"): None}
    no_base = _records()[lambda f: f.regularizer != "none"]
    with pytest.raises(ValueError, match="no baseline"):
        modest_strengths(no_base)


@pytest.mark.parametrize("effect, noise, expected", [
    (0.5, (0.0, 0.01, -0.01), True),        # clearly ≥ 20 %
    (0.05, (0.0, 0.01, -0.01), False),      # clearly below 20 %
    (0.3, (0.0, 0.4, -0.4), None),          # too noisy to tell
    (0.5, (0.0,), None),                    # one seed: no interval
])
def test_decision_rule(effect, noise, expected):
    effects = regularizer_effects(_records(effect, noise), metric="sal.relative_l2",
                                  summaries=("gmsi",))
    (e,) = effects
    assert e.strength == 0.1 and e.passed is expected
    assert e.improvement.mean == pytest.approx(effect, abs=1e-9)
    assert e.accuracy_change.mean == pytest.approx(-0.2)
    claim, any_spectral = attribution_claims(effects, effects, model="mlp", spectral=("reg",))
    assert claim.passed is expected and claim.name == "attribution_improves[mlp/reg]"
    assert "reduction +" in claim.summary and "spectral penalty" in claim.statement
    assert any_spectral.name == "attribution_improves[mlp/any spectral]"
    assert any_spectral.passed is expected
    assert effects_table(effects).shape[0] == 1


def test_no_modest_strength_fails_the_regulariser():
    (e,) = regularizer_effects(_records(acc_drop=0.03), metric="sal.relative_l2")
    assert e.strength is None and e.passed is False
    claim, _ = attribution_claims([e], [e], model="mlp")
    assert claim.passed is False and "no modest λ" in claim.summary
    assert "our extension" in claim.statement
    assert summaries_claim([e], model="mlp").passed is None


def test_summaries_claim():
    effects = regularizer_effects(_records(), metric="sal.relative_l2", summaries=("gmsi",))
    assert summaries_claim(effects, model="mlp").passed is True           # GMSI +5 %
    tight = DecisionRule(max_summary_change=0.01)
    assert summaries_claim(effects, model="mlp", rule=tight).passed is False
    with pytest.raises(ValueError, match="no effect for model"):
        attribution_claims(effects, effects, model="cnn")


def _table(entropy, instability_values):
    return EntropyLinkTable({"spectral_entropy": torch.tensor(entropy, dtype=torch.float64),
                             "relative_l2": torch.tensor(instability_values, dtype=torch.float64)},
                            {})


def _envelope_tables(direction: float, seeds: int = 3, n: int = 150):
    tables = {}
    for seed in range(seeds):
        g = torch.Generator().manual_seed(seed)
        h = torch.rand(n, generator=g, dtype=torch.float64)
        # instability filling the region under a line in h: a moving envelope, a loose ordering
        top = h if direction > 0 else 1 - h
        y = top * torch.rand(n, generator=g, dtype=torch.float64) ** 4
        tables[seed] = _table(h.tolist(), y.tolist())
    return tables


def test_entropy_envelope_claims_judge_the_predicted_direction():
    rising = entropy_envelope_claims(_envelope_tables(+1), label="mnist", num_resamples=200)
    envelope, ordering = rising
    assert envelope.name == "E5_envelope[mnist]" and envelope.passed is True
    assert envelope.numbers["slope"].lo > 0
    assert ordering.passed is True and abs(ordering.numbers["rho"].mean) < 0.5
    falling = entropy_envelope_claims(_envelope_tables(-1), label="mnist", num_resamples=200)
    assert falling[0].passed is False                      # the envelope falls: not as predicted
    assert entropy_envelope_claims(_envelope_tables(-1), label="mnist", predicted="falling",
                                   num_resamples=200)[0].passed is True
    with pytest.raises(ValueError, match="predicted='up'"):
        entropy_envelope_claims(_envelope_tables(1), label="m", predicted="up")


def test_rigid_ordering_is_not_reproduced():
    g = torch.Generator().manual_seed(0)
    h = torch.rand(200, generator=g, dtype=torch.float64)
    tables = {0: _table(h.tolist(), (h + 0.01 * torch.rand(200, generator=g,
                                                            dtype=torch.float64)).tolist())}
    _, ordering = entropy_envelope_claims(tables, label="m", num_resamples=200)
    assert ordering.passed is False


def test_bootstrap_effects_from_per_image_samples():
    """Two-level bootstrap: the interval widens with between-image spread the seed t-interval
    never sees, and is centred on the pooled effect."""
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(3):
        base = rng.uniform(0.2, 1.0, 64)
        for name, strength, values in (("none", 0.0, base), ("reg", 0.1, base * 0.5)):
            rows += [{"model": "mlp", "regularizer": name, "strength": strength, "seed": seed,
                      "image": i, "sal.relative_l2": v} for i, v in enumerate(values)]
    samples = pd.DataFrame(rows)
    (e,) = regularizer_effects(_records(), metric="sal.relative_l2", samples=samples,
                               num_resamples=500)
    assert e.improvement.mean == pytest.approx(0.5)
    assert e.improvement.lo == pytest.approx(0.5) and e.improvement.n == 192  # exact halving
    with pytest.raises(ValueError, match="samples lack"):
        regularizer_effects(_records(), metric="sal.relative_l2",
                            samples=samples.drop(columns="image"))


def test_bonferroni_rule():
    rule = DecisionRule().bonferroni(3)
    assert rule.confidence == pytest.approx(1 - 0.05 / 3)
    with pytest.raises(ValueError, match="num_tests=0"):
        DecisionRule().bonferroni(0)


def test_interval_format():
    assert Interval(0.25, 0.1, 0.4, 3).format(0, scale=100, signed=True) == "+25 [+10, +40]"


def test_data_availability_reports_instead_of_raising(tmp_path):
    missing = data_availability("cifar100", root=tmp_path, offline_root=tmp_path)
    assert missing.available is False and "no source has cifar100/train" in missing.reason
    assert missing.to_dict()["sources"] == {}
    with pytest.raises(ValueError, match="unknown"):
        data_availability("imagenet")


def test_experiment_figures():
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from stabnb.plotting import plot_regularizer_effects, plot_strength_sweep

    records = _records()
    fig = plot_strength_sweep(summary_table(records, ["accuracy", "sal.relative_l2"]),
                              ["accuracy", "sal.relative_l2"], model="mlp")
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    effects = regularizer_effects(records, metric="sal.relative_l2", summaries=("gmsi",))
    assert isinstance(plot_regularizer_effects(effects, model="mlp"), Figure)
