"""Tests for stabnb.frontier (Pareto table, penalties against controls), the frontier choice of
stabnb.effects.modest_strengths, the control and mechanism claims, and stabnb.presets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stabnb.claims import control_claims, mechanism_claim
from stabnb.effects import modest_strengths, regularizer_effects
from stabnb.frontier import comparisons_table, control_comparisons, pareto_table
from stabnb.presets import PROFILE_SIZES, profile_sizes, profile_table, regularisation_config
from stabnb.study import DEFAULT_STRENGTHS

# Per cell: (accuracy, instability) — seed offsets added below.
CELLS = {("none", 0.0): (0.950, 1.00),
         ("pen", 0.1): (0.948, 0.70), ("pen", 0.3): (0.945, 0.50), ("pen", 1.0): (0.920, 0.30),
         ("noise_augmentation", 1.0): (0.951, 0.80)}


def _records(seeds=(0, 1, 2)):
    rows = []
    for seed in seeds:
        for (name, strength), (acc, unstable) in CELLS.items():
            rows.append({"model": "mlp", "regularizer": name, "strength": strength, "seed": seed,
                         "accuracy": acc + 0.001 * seed, "heldout.relative_l2": unstable * (1 + 0.02 * seed),
                         "mechanism.gate_flips": unstable * (1 + 0.01 * seed)})
    return pd.DataFrame(rows)


def _samples(seeds=(0, 1, 2), images=6):
    rng = np.random.default_rng(0)
    rows = []
    for seed in seeds:
        jitter = rng.uniform(0.9, 1.1, images)
        for (name, strength), (_, unstable) in CELLS.items():
            for image in range(images):
                rows.append({"model": "mlp", "regularizer": name, "strength": strength,
                             "seed": seed, "image": image,
                             "heldout.relative_l2": unstable * jitter[image]})
    return pd.DataFrame(rows)


def test_modest_strength_is_the_most_stable_affordable_point():
    records = _records()
    assert modest_strengths(records)[("mlp", "pen")] == 0.3              # largest affordable
    chosen = modest_strengths(records, metric="heldout.relative_l2")
    assert chosen[("mlp", "pen")] == 0.3                                 # λ=1 costs 3 points
    flipped = records.assign(**{"heldout.relative_l2": np.where(
        (records["regularizer"] == "pen") & (records["strength"] == 0.1), 0.2,
        records["heldout.relative_l2"])})
    assert modest_strengths(flipped, metric="heldout.relative_l2")[("mlp", "pen")] == 0.1


def test_pareto_table_marks_budget_front_and_choice():
    records = _records()
    effects = regularizer_effects(records, metric="heldout.relative_l2")
    table = pareto_table(records, metric="heldout.relative_l2", effects=effects).set_index(
        ["regularizer", "strength"])
    assert table.loc[("pen", 1.0), "Δ accuracy (pt)"] == pytest.approx(-3.0)
    assert not table.loc[("pen", 1.0), "within budget"] and table.loc[("pen", 0.3), "within budget"]
    assert table.loc[("pen", 0.3), "chosen"] and not table.loc[("pen", 0.1), "chosen"]
    # (0.951, 0.80) and (0.945, 0.50) are on the front; (0.950, 1.00) is beaten by the control.
    assert table.loc[("noise_augmentation", 1.0), "pareto"] and table.loc[("pen", 0.3), "pareto"]
    assert not table.loc[("none", 0.0), "pareto"]
    assert table.loc[("pen", 0.3), "instability"] == pytest.approx(0.5 * 1.02)
    assert (table["seeds"] == 3).all()


def test_control_comparison_is_the_difference_of_paired_reductions():
    records, samples = _records(), _samples()
    effects = regularizer_effects(records, metric="heldout.relative_l2", samples=samples,
                                  num_resamples=200)
    (comparison,) = control_comparisons(effects, samples, controls=("noise_augmentation",),
                                        num_resamples=200)
    assert (comparison.penalty, comparison.penalty_strength) == ("pen", 0.3)
    assert comparison.difference.mean == pytest.approx((0.80 - 0.50) / 1.00)  # same jitter
    assert comparison.passed is True
    assert "penalty better" in comparisons_table([comparison]).iloc[0].to_string()
    (claim,) = control_claims([comparison], model="mlp", name="E9_beats_controls")
    assert claim.name == "E9_beats_controls[mlp/pen]" and claim.passed is True
    assert "noise_augmentation (λ=1) +30" in claim.summary


def test_mechanism_claim_correlates_flip_and_instability_changes():
    records = _records()
    (claim,) = mechanism_claim(records, model="mlp", metric="heldout.relative_l2", name="M")
    assert claim.numbers["cells"] == 12 and claim.numbers["rho"].mean > 0.9
    assert claim.passed is True
    assert mechanism_claim(records.drop(columns="mechanism.gate_flips"), model="mlp",
                           metric="heldout.relative_l2") == []


def test_presets_build_the_profiles_and_refuse_unknowns():
    smoke = regularisation_config("mnist", "smoke", seed=3)
    assert smoke.seeds == (3,) and list(smoke.models) == ["mlp"]
    assert smoke.regularizers == {"input_curvature": DEFAULT_STRENGTHS["mnist"]["input_curvature"][-1:],
                                  "noise_augmentation": DEFAULT_STRENGTHS["mnist"]["noise_augmentation"][-1:]}
    quick = regularisation_config("cifar10", "quick")
    assert all(len(g) == 2 for g in quick.regularizers.values()) and len(quick.regularizers) == 6
    paper = regularisation_config("cifar10", "paper")
    assert paper.models["resnet"].architecture == "resnet_fast"
    assert paper.models["resnet"].kwargs == {"widths": [64, 256, 256]}
    assert paper.train_config(0, "resnet").lr == 1.3 and paper.train_config(0, "cnn").lr == 0.1
    assert (paper.train.augment, paper.train.label_smoothing) == ("flip_translate", 0.2)
    assert paper.regularizers == DEFAULT_STRENGTHS["cifar10"] and paper.train_size is None
    assert regularisation_config("mnist", "quick").fingerprint() == \
        regularisation_config("mnist", "quick", epochs=None).fingerprint()   # None keeps
    assert regularisation_config("mnist", "quick", num_seeds=2).seeds == (0, 1)
    assert profile_sizes("mnist", "quick", lr=0.1)["lr"] == 0.1
    assert list(profile_table("cifar10").columns) == ["smoke", "quick", "paper"]
    with pytest.raises(ValueError, match="unknown size"):
        regularisation_config("mnist", "quick", epoch=3)
    with pytest.raises(ValueError, match="dataset='svhn'"):
        regularisation_config("svhn", "quick")
    with pytest.raises(ValueError, match="profile='fast'"):
        regularisation_config("mnist", "fast")
    with pytest.raises(ValueError, match="regularizers"):
        regularisation_config("mnist", "quick", regularizers=("dropout",))
    assert set(PROFILE_SIZES) == {"mnist", "cifar10", "cifar100"}


def test_smoke_and_quick_profiles_keep_their_fingerprints():
    """The published smoke and quick studies live in folders keyed by these: new training
    options must leave them (and so the studies' numbers) as they were."""
    expected = {("mnist", "smoke"): "2edbf8e685816edf", ("mnist", "quick"): "7e2c74f8d49df9a3",
                ("cifar10", "smoke"): "7183d5513447aa56", ("cifar10", "quick"): "44a605b904d3000d",
                ("cifar100", "smoke"): "4cbecb7ee037b32a",
                ("cifar100", "quick"): "67b5bb6511da5082"}
    assert {key: regularisation_config(*key).fingerprint() for key in expected} == expected


def test_every_grid_has_the_same_number_of_points():
    for dataset, grids in DEFAULT_STRENGTHS.items():
        assert len({len(g) for g in grids.values()}) == 1, dataset
