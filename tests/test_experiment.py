"""Tests for stabnb.experiment: the regularisation protocol on a tiny teacher study."""

from __future__ import annotations

import json

from stabnb.effects import DecisionRule
from stabnb.experiment import regularisation_experiment
from stabnb.study import StudyConfig

TINY = {
    "dataset": "teacher", "seeds": [0, 1],
    "models": {"tanh": {"architecture": "mlp", "kwargs": {"widths": [16], "activation": "tanh"}},
               "relu": {"architecture": "mlp", "kwargs": {"widths": [16], "activation": "relu"}}},
    "regularizers": {"jacobian_spectral": [0.01], "noise_augmentation": [1.0]},
    "teacher": {"dim": 64, "num_classes": 3, "widths": [16], "n_train": 256, "n_test": 64},
    "train": {"epochs": 1, "batch_size": 64},
    "probe": {"eval_size": 64, "probe_size": 8, "gmsi_size": 4, "methods": ["saliency"],
              "num_draws": 2},
}


def test_experiment_builds_effects_tables_and_claims(tmp_path):
    config = StudyConfig.from_dict(TINY)
    result = regularisation_experiment(config, rule=DecisionRule(), out_dir=tmp_path, name="T",
                                       device="cpu")
    assert len(result.records) == 2 * 2 * 3                          # 2 models × 2 seeds × 3
    names = [c.name for c in result.claims]
    assert names == [
        f"T_{claim}[{model}{part}]" for model in ("tanh", "relu") for claim, part in (
            ("attribution_improves", "/jacobian_spectral"),
            ("attribution_improves", "/noise_augmentation"),
            ("attribution_improves", "/any spectral"), ("summaries_change_little", ""),
            ("beats_controls", "/jacobian_spectral"))] + ["T_fewer_gate_flips[relu]"]  # ReLU only
    # the judged metric is the held-out one; each regulariser sits at a point of its frontier
    assert {e.metric for e in result.effects} == {"heldout.relative_l2"}
    assert result.pareto["chosen"].sum() == sum(e.strength is not None for e in result.effects)
    assert {(c.penalty, c.control) for c in result.comparisons} <= {
        ("jacobian_spectral", "noise_augmentation")}
    assert "training family (Gaussian σ=0.05, labelled)" in result.families.columns
    for text in result.families.stack():                 # "+m [lo, hi]": reductions, lo ≤ hi
        if "[" in text:
            lo, hi = (float(v) for v in text.split("[")[1].rstrip("]").split(","))
            assert lo <= float(text.split()[0]) <= hi, text
    # intervals from the two-level bootstrap over seeds × probe images (the per-sample tables)
    assert result.settings["intervals"] == "bootstrap over seeds × probe images"
    assert result.effects[0].improvement is None or result.effects[0].improvement.n == 2 * 8
    assert {e.model for e in result.effects} == {"tanh", "relu"}
    assert set(result.changes) == {"saliency"}
    for name in ("summary.csv", "sweep.csv", "changes_saliency.csv", "secondary.csv",
                 "pareto.csv", "families.csv", "quality.csv", "comparisons.csv", "effects.json"):
        assert (tmp_path / "tables" / name).exists(), name
    saved = json.loads((tmp_path / "tables" / "effects.json").read_text())
    assert saved["settings"]["name"] == "T" and len(saved["claims"]) == len(result.claims)
    again = regularisation_experiment(config, out_dir=tmp_path, name="T", device="cpu")
    assert [c.line() for c in again.claims] == [c.line() for c in result.claims]
