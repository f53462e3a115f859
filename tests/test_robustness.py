"""Tests for stabnb.robustness and stabnb.validity: hand computations on tiny models, the ε-ball,
determinism, refusals, the held-out split, the correlations, the claims and the population."""

from __future__ import annotations

import math
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats as scipy_stats
from torch import nn

from stabnb.models import build_model, initialize
from stabnb.robustness import (
    RobustnessConfig,
    autoattack_accuracy,
    check_epsilon,
    check_sigma,
    corrupt,
    evaluate_robustness,
    forward_sensitivity,
    noise_accuracy,
    pgd_attack,
)
from stabnb.stats import paired_bootstrap
from stabnb.study import Cell, ModelSpec, ProbeConfig, StudyConfig, run_study
from stabnb.train import TrainConfig, evaluate_accuracy
from stabnb.validity import (
    ball_identity,
    choose_target,
    population_studies,
    positive_control,
    predictive_validity,
    rank_correlations,
    robustness_preset,
    robustness_table,
    snapshot_config,
    spearman_interval,
    split_halves,
    validity_claims,
)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def tiny():
    model = initialize(build_model("mlp", (1, 6, 6), 3, widths=(12,)), _generator(0)).eval()
    x = torch.rand(24, 1, 6, 6, generator=_generator(1))
    y = torch.randint(0, 3, (24,), generator=_generator(2))
    return model, x, y


def test_noise_accuracy_equals_a_hand_loop(tiny):
    model, x, y = tiny
    got = noise_accuracy(model, x, y, (0.1, 0.5), generator=_generator(7))
    xi = torch.randn(x.shape, generator=_generator(7))
    for sigma in (0.1, 0.5):
        correct = sum(int(model((x[i] + sigma * xi[i]).clamp(0, 1)[None]).argmax() == y[i])
                      for i in range(len(x)))
        assert got[sigma] == correct / len(x)


@pytest.mark.parametrize("norm, eps", [("Linf", 0.05), ("L2", 0.3)])
def test_pgd_stays_in_the_ball_and_in_pixels_and_is_seeded(tiny, norm, eps):
    model, x, y = tiny
    state = torch.random.get_rng_state()
    adversarial = pgd_attack(model, x, y, norm=norm, eps=eps, steps=5, generator=_generator(3))
    assert torch.equal(state, torch.random.get_rng_state())           # global stream untouched
    delta = (adversarial - x).flatten(1)
    size = delta.abs().amax(1) if norm == "Linf" else delta.norm(dim=1)
    assert adversarial.shape == x.shape and float(size.max()) <= eps * (1 + 1e-5)
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    again = pgd_attack(model, x, y, norm=norm, eps=eps, steps=5, generator=_generator(3))
    other = pgd_attack(model, x, y, norm=norm, eps=eps, steps=5, generator=_generator(4))
    assert torch.equal(adversarial, again) and not torch.equal(adversarial, other)
    config = RobustnessConfig(epsilons={norm: (eps,)}, steps=3, num_images=8)
    assert ball_identity(model, x, y, config).passed


def test_pgd_lowers_accuracy_and_autoattack_runs(tiny):
    model, x, y = tiny
    clean = evaluate_accuracy(model, x, y)
    attacked = evaluate_accuracy(model, pgd_attack(model, x, y, eps=0.3, steps=10), y)
    assert attacked <= clean
    assert 0 <= autoattack_accuracy(model, x, y, eps=0.3, num_classes=3) <= attacked


def test_forward_sensitivity_equals_a_hand_computation():
    weight = torch.randn(4, 9, generator=_generator(5), dtype=torch.float64)
    model = nn.Sequential(nn.Flatten(), nn.Linear(9, 4, bias=True)).double()
    with torch.no_grad():
        model[1].weight.copy_(weight)
    x = torch.rand(5, 1, 3, 3, generator=_generator(6), dtype=torch.float64)
    got = forward_sensitivity(model, x, sigma=0.1, num_draws=3, generator=_generator(8))
    draws = _generator(8)
    hand = torch.zeros(5, dtype=torch.float64)
    for _ in range(3):
        delta = 0.1 * torch.randn(x.shape, generator=draws, dtype=torch.float64)
        hand += (delta.flatten(1) @ weight.T).norm(dim=1) / delta.flatten(1).norm(dim=1) / 3
    torch.testing.assert_close(got, hand)
    assert float(got.max()) <= float(torch.linalg.matrix_norm(weight, ord=2)) + 1e-12


def test_corruptions_are_deterministic_shape_preserving_and_exact():
    x = torch.rand(3, 2, 7, 7, generator=_generator(9))
    for kind, severity in (("blur", 1.0), ("contrast", 0.5), ("translate", 2)):
        out = corrupt(x, kind, severity)
        assert out.shape == x.shape and torch.equal(out, corrupt(x, kind, severity))
        assert out.min() >= 0 and out.max() <= 1
    mean = x.mean(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(corrupt(x, "contrast", 0.25), mean + 0.25 * (x - mean))
    shifted = corrupt(x, "translate", 2)
    assert torch.equal(shifted[..., 2:, 2:], x[..., :-2, :-2])
    assert shifted[..., :2, :].abs().sum() == 0 and shifted[..., :, :2].abs().sum() == 0
    flat = torch.full((1, 1, 5, 5), 0.4)
    torch.testing.assert_close(corrupt(flat, "blur", 1.5), flat)        # constants stay put
    spike = torch.zeros(1, 1, 9, 9)
    spike[..., 4, 4] = 1.0
    assert math.isclose(float(corrupt(spike, "blur", 0.8).sum()), 1.0, rel_tol=1e-6)
    with pytest.raises(ValueError, match="corruption 'fog' is unknown"):
        corrupt(x, "fog", 1)
    with pytest.raises(ValueError, match=r"contrast severity=1.5 must lie in \(0, 1\)"):
        corrupt(x, "contrast", 1.5)
    with pytest.raises(ValueError, match="whole number of pixels"):
        corrupt(x, "translate", 1.5)


def test_missing_torchattacks_names_the_extra(tiny, monkeypatch):
    model, x, y = tiny
    monkeypatch.setitem(sys.modules, "torchattacks", None)
    with pytest.raises(ImportError, match=r"needs torchattacks; pip install --no-deps 'torchattacks>=3.5'"):
        pgd_attack(model, x, y, eps=0.1)
    noise_accuracy(model, x, y, (0.1,))                                 # the rest still works


@pytest.mark.parametrize("eps", [0, -0.1, 1.5, float("nan"), True])
def test_epsilon_out_of_range_is_refused(tiny, eps):
    model, x, y = tiny
    with pytest.raises(ValueError, match="0 < eps ≤ 1"):
        pgd_attack(model, x, y, eps=eps)
    with pytest.raises(ValueError, match="0 < eps ≤ 1"):
        RobustnessConfig(epsilons={"L2": (eps,)})


@pytest.mark.parametrize("sigma", [0, -1.0, float("inf")])
def test_sigma_out_of_range_is_refused(tiny, sigma):
    model, x, y = tiny
    with pytest.raises(ValueError, match="must be finite and > 0"):
        noise_accuracy(model, x, y, (0.1, sigma))
    with pytest.raises(ValueError, match="must be finite and > 0"):
        forward_sensitivity(model, x, sigma=sigma)


def test_other_refusals(tiny):
    model, x, y = tiny
    with pytest.raises(ValueError, match="norm='L1' is unknown"):
        check_epsilon(0.1, "L1")
    with pytest.raises(ValueError, match=r"pass image batches \(N, C, H, W\)"):
        noise_accuracy(model, x.flatten(1), y, (0.1,))
    with pytest.raises(ValueError, match="one class per image"):
        pgd_attack(model, x, y[:3], eps=0.1)
    with pytest.raises(ValueError, match=r"corruptions \['fog'\] are unknown"):
        RobustnessConfig(corruptions={"fog": (1,)})
    assert check_sigma(1) == 1.0


def test_evaluate_robustness_row_is_deterministic(tiny):
    model, x, y = tiny
    config = RobustnessConfig(num_images=16, steps=3, sigmas=(0.2,),
                              epsilons={"Linf": (0.05,), "L2": (0.5,)},
                              corruptions={"blur": (1.0,), "translate": (1,)})
    row = evaluate_robustness(model, x, y, config, num_classes=3)
    assert list(row) == ["clean_accuracy", "noise@0.2", "pgd_linf@0.05", "pgd_l2@0.5", "blur@1",
                         "translate@1", "forward_sensitivity"]
    assert row == evaluate_robustness(model, x, y, config, num_classes=3)
    assert row["clean_accuracy"] == evaluate_accuracy(model, x[:16], y[:16])
    assert config.fingerprint() != RobustnessConfig().fingerprint()


def test_held_out_split_is_deterministic_balanced_and_order_free():
    names = [f"net{i}" for i in range(11)]
    halves = split_halves(names)
    assert halves == split_halves(names) and sorted(set(halves)) == ["fit", "heldout"]
    assert abs(halves.count("fit") - halves.count("heldout")) <= 1
    reordered = dict(zip(names[::-1], split_halves(names[::-1])))
    assert reordered == dict(zip(names, halves))
    assert split_halves(names, seed=1) != halves


def _population_frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(4):
        for regularizer, strength, norm_shift, gain in (("none", 0.0, 0.0, 0.0),
                                                        ("jacobian_frobenius", 1e-3, -1.0, 0.1)):
            norm = 3 + norm_shift + 0.1 * rng.standard_normal()
            rows.append({"study": "S", "model": "mlp", "seed": seed, "regularizer": regularizer,
                         "strength": strength, "jacobian.operator_norm": norm,
                         "gmsi": 10 * norm, "pgd_l2@0.5": 0.5 + gain + 0.01 * seed,
                         "pgd_l2@1": 0.0})
    frame = pd.DataFrame(rows)
    frame["half"] = ["fit", "heldout"] * 4
    return frame


def test_rank_correlations_match_scipy_and_claims_read_the_sides():
    frame = _population_frame()
    table = rank_correlations(frame, ["gmsi"], ["pgd_l2@0.5", "pgd_l2@1"], num_resamples=200)
    held = frame[frame["half"] == "heldout"]
    row = table[(table["half"] == "heldout") & (table["target"] == "pgd_l2@0.5")].iloc[0]
    assert math.isclose(row["rho"], scipy_stats.spearmanr(held["gmsi"], held["pgd_l2@0.5"])[0])
    assert row["lo"] <= row["rho"] <= row["hi"] and row["n"] == 4
    constant = table[table["target"] == "pgd_l2@1"]
    assert constant["rho"].isna().all()                                 # a constant target
    assert choose_target(frame[frame["half"] == "fit"], ["pgd_l2@1", "pgd_l2@0.5"]) == "pgd_l2@0.5"
    claims = validity_claims(table, target="pgd_l2@0.5", label="toy", quantities=("gmsi", "ntk"))
    assert claims[0].passed == (True if row["hi"] < 0 else False if row["lo"] > 0 else None)
    assert claims[1].passed is None and "undefined" in claims[1].summary


def test_spearman_interval_is_the_one_level_paired_bootstrap():
    rng = np.random.default_rng(3)
    a = rng.standard_normal(20)
    b = a + rng.standard_normal(20)

    def rho(x, y):
        return scipy_stats.spearmanr(x, y)[0]

    expected = paired_bootstrap([(a, b)], rho, num_resamples=300, seed=4)
    got = spearman_interval(a, b, num_resamples=300, seed=4)
    assert got.mean == pytest.approx(expected.mean) and got.n == 20
    assert (got.lo, got.hi) == pytest.approx((expected.lo, expected.hi))
    with pytest.raises(ValueError, match="too few"):
        spearman_interval(a, b, num_resamples=10)


def test_positive_control_pairs_by_seed():
    claim = positive_control(_population_frame(), target="pgd_l2@0.5", label="toy")
    assert claim.passed is True and "pairs=4" in claim.summary
    assert claim.numbers["accuracy_change"].mean == pytest.approx(0.1)
    worse = _population_frame().assign(**{"pgd_l2@0.5": lambda f: 1 - f["pgd_l2@0.5"]})
    assert positive_control(worse, target="pgd_l2@0.5", label="toy").passed is False
    none = _population_frame().query("regularizer == 'none'")
    assert positive_control(none, target="pgd_l2@0.5", label="toy").passed is None


TEACHER = {
    "dataset": "teacher", "seeds": [0],
    "models": {"mlp": {"architecture": "mlp", "kwargs": {"widths": [8]}}},
    "regularizers": {"jacobian_frobenius": [0.01]},
    "teacher": {"dim": 6, "num_classes": 3, "widths": [8], "n_train": 128, "n_test": 64},
    "train": {"epochs": 2, "batch_size": 64},
    "probe": {"eval_size": 64, "probe_size": 8, "gmsi_size": 4, "methods": ["saliency"],
              "num_draws": 2},
}


def test_load_model_gives_the_network_the_study_evaluated(tmp_path):
    config = StudyConfig.from_dict(TEACHER)
    study = run_study(config, tmp_path, device="cpu", progress_bar=False)
    from stabnb.study import load_study_data
    data = load_study_data(config, 0)
    for record in study.records.to_dict("records"):
        cell = Cell(record["model"], record["regularizer"], record["strength"], record["seed"])
        model = study.load_model(cell)
        assert not model.training
        assert evaluate_accuracy(model, data.test_x, data.test_y) == record["accuracy"]
    with pytest.raises(FileNotFoundError, match="is not finished"):
        study.load_model(Cell("mlp", "none", 0.0, 5))
    snap = snapshot_config(config, 1)
    assert snap.regularizers == {} and snap.train.epochs == 1 and config.train.epochs == 2


def test_robustness_table_on_real_mnist_reuses_its_cache(offline_root, tmp_path):
    config = StudyConfig(
        dataset="mnist", models={"mlp": ModelSpec("mlp", {"widths": [16]})},
        regularizers={"jacobian_frobenius": (1e-3,)}, seeds=(0,),
        train=TrainConfig(epochs=1, batch_size=64),
        probe=ProbeConfig(methods=("saliency",), eval_size=64, probe_size=4, gmsi_size=2,
                          num_draws=2), train_size=128)
    study = run_study(config, tmp_path / "s", device="cpu", progress_bar=False)
    robustness = {"mnist": RobustnessConfig.for_dataset(
        "mnist", num_images=16, steps=2, sigmas=(0.2,), corruptions={"contrast": (0.5,)})}
    table = robustness_table({"S": study}, robustness, progress_bar=False)
    assert len(table) == 2 and set(table["half"]) == {"fit", "heldout"}
    assert {"gmsi", "pgd_l2@0.5", "pgd_linf@0.1", "forward_sensitivity"} <= set(table)
    assert (table["pgd_linf@0.1"] <= 1).all() and table["epochs"].eq(1).all()
    cached = sorted((tmp_path / "s" / "robustness").rglob("*.json"))
    assert len(cached) == 2
    pd.testing.assert_frame_equal(robustness_table({"S": study}, robustness,
                                                   progress_bar=False), table)
    with pytest.raises(ValueError, match="no RobustnessConfig for dataset 'mnist'"):
        robustness_table({"S": study}, {})


def test_presets_and_the_smoke_population():
    quick = robustness_preset("cifar10", "quick", num_images=128, steps=5)
    assert quick.epsilons["Linf"] == (1 / 255,) and len(quick.epsilons["L2"]) == 2
    smoke = robustness_preset("mnist", "smoke", num_images=64, steps=5)
    assert smoke == RobustnessConfig.for_dataset("mnist", num_images=64, steps=5)
    with pytest.raises(ValueError, match="profile='full' is unknown"):
        robustness_preset("mnist", "full", num_images=1, steps=1)
    with pytest.raises(ValueError, match="no default ε grid for dataset='teacher'"):
        RobustnessConfig.for_dataset("teacher")
    studies, snapshots = population_studies("smoke")
    assert list(studies) == list(snapshots) == ["E7_smoke_mnist"]
    assert "jacobian_frobenius" in studies["E7_smoke_mnist"].regularizers   # the control's penalty


def test_predictive_validity_chooses_on_the_fitting_half_and_makes_the_claims():
    frame = _population_frame().assign(dataset="mnist", network=lambda f: f.index.astype(str),
                                       clean_accuracy=0.9)
    result = predictive_validity(frame, num_resamples=200)
    assert result.targets == {"mnist": "pgd_l2@0.5"}
    assert {c.name for c in result.claims} >= {"E7_predicts[mnist/gmsi]", "E7_control[mnist]"}
    assert set(result.within["family"]) == {"jacobian_frobenius", "training length"}
    assert set(result.correlations["half"]) == {"fit", "heldout"}


def test_scatter_and_heatmap_draw_every_predictor():
    import stabnb.plotting as plotting

    frame = _population_frame()
    fig = plotting.plot_predictor_scatter(frame, ["gmsi", "jacobian.operator_norm"], "pgd_l2@0.5")
    assert sum(ax.get_visible() for ax in fig.axes) == 2
    table = rank_correlations(frame, ["gmsi"], ["pgd_l2@0.5", "pgd_l2@1"], num_resamples=100)
    fig = plotting.plot_correlation_heatmap(table)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert len(texts) == 2 and "n/a" in texts                          # the constant target
