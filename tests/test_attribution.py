"""Tests for stabnb.attribution: metrics by hand, invariances, Captum agreement, bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch
from captum.attr import InputXGradient, IntegratedGradients, NoiseTunnel, Saliency
from torch import nn

from stabnb.attribution import (
    AttributionStability,
    attribution_method,
    average_ranks,
    cosine_similarity,
    relative_l2,
    spearman_correlation,
    top_k_intersection,
)
from stabnb.models import MLP, SmallCNN

DT = torch.float64


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def mlp() -> nn.Module:
    torch.manual_seed(0)
    return MLP(16, (12,), 4, activation="tanh").to(DT).eval()


@pytest.fixture(scope="module")
def pixels() -> torch.Tensor:
    return 0.2 + 0.6 * torch.rand(5, 1, 4, 4, generator=gen(1), dtype=DT)


# --------------------------------------------------------------------------- metrics by hand

def test_average_ranks_ties_share_their_mean_position():
    values = torch.tensor([[3.0, 1.0, 3.0, 2.0], [0.0, 0.0, 0.0, 0.0]])
    assert average_ranks(values).tolist() == [[3.5, 1.0, 3.5, 2.0], [2.5, 2.5, 2.5, 2.5]]


def test_metrics_match_hand_computation():
    r = torch.tensor([3.0, 4.0, 0.0, 0.0], dtype=DT)
    p = torch.tensor([[3.0, 4.0, 0.0, 0.0], [0.0, 4.0, 3.0, 0.0], [-3.0, -4.0, 0.0, 0.0]], dtype=DT)
    # ‖p − r‖/‖r‖ with ‖r‖ = 5: 0, ‖(−3, 0, 3, 0)‖/5, 10/5.
    assert torch.allclose(relative_l2(r, p), torch.tensor([0.0, math.sqrt(18) / 5, 2.0], dtype=DT))
    assert torch.allclose(cosine_similarity(r, p), torch.tensor([1.0, 16 / 25, -1.0], dtype=DT))
    # top-2 of |r| = {0, 1}; of |p|: {0, 1}, {1, 2}, {0, 1}.
    assert top_k_intersection(r, p, 2).tolist() == [1.0, 0.5, 1.0]


def test_spearman_matches_hand_computation():
    r = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=DT)
    p = torch.tensor([[4.0, 3.0, 2.0, 1.0], [1.0, 3.0, 2.0, 4.0], [10.0, 20.0, 30.0, 40.0]], dtype=DT)
    # 1 − 6 Σd² / (n(n² − 1)) without ties: −1, 1 − 12/60, 1.
    assert torch.allclose(spearman_correlation(r, p), torch.tensor([-1.0, 0.8, 1.0], dtype=DT))
    # Ties: ranks (1, 2.5, 2.5, 4) vs (1, 2, 3, 4) -> 4.5 / sqrt(4.5 · 5).
    tied = spearman_correlation(torch.tensor([1.0, 2.0, 2.0, 3.0], dtype=DT), r.unsqueeze(0))
    assert torch.allclose(tied, torch.tensor([4.5 / math.sqrt(22.5)], dtype=DT))


def test_degenerate_vectors_follow_documented_rules():
    zero, const = torch.zeros(3, dtype=DT), torch.full((3,), 2.0, dtype=DT)
    ramp = torch.tensor([1.0, 2.0, 3.0], dtype=DT)
    assert cosine_similarity(ramp, zero.unsqueeze(0)).tolist() == [0.0]
    assert spearman_correlation(const, torch.stack([const, ramp])).tolist() == [1.0, 0.0]
    assert torch.isnan(relative_l2(zero, ramp.unsqueeze(0))).all()
    with pytest.raises(ValueError, match="k=4"):
        top_k_intersection(ramp, ramp.unsqueeze(0), 4)


def test_batched_metrics_equal_pairwise():
    r = torch.randn(3, 7, generator=gen(2), dtype=DT)
    p = torch.randn(3, 4, 7, generator=gen(3), dtype=DT)
    for fn in (relative_l2, cosine_similarity, spearman_correlation,
               lambda a, b: top_k_intersection(a, b, 3)):
        batched = fn(r, p)
        pairwise = torch.stack([torch.cat([fn(r[i], p[i, j:j + 1]) for j in range(4)])
                                for i in range(3)])
        assert torch.allclose(batched, pairwise)


# --------------------------------------------------------------------------- probe behaviour

@pytest.mark.parametrize("perturbation", ["gaussian", "linf"])
def test_linear_model_saliency_does_not_move(perturbation):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).to(DT).eval()
    probe = AttributionStability(model, "saliency", perturbation=perturbation, radius=0.3,
                                 num_samples=6)
    result = probe.measure(torch.rand(4, 1, 4, 4, generator=gen(), dtype=DT), generator=gen())
    assert torch.equal(result.relative_l2_draws, torch.zeros(4, 6, dtype=DT))
    assert torch.equal(result.spearman_draws, torch.ones(4, 6, dtype=DT))
    assert torch.equal(result.top_k_draws, torch.ones(4, 6, dtype=DT))
    assert torch.allclose(result.cosine_draws, torch.ones(4, 6, dtype=DT))


def test_integrated_gradients_completeness(mlp, pixels):
    ig = attribution_method("integrated_gradients", mlp)          # default 50 steps, zero baseline
    target = mlp(pixels).argmax(1)
    total = ig(pixels, target).flatten(1).sum(1)
    with torch.no_grad():
        gap = (mlp(pixels) - mlp(torch.zeros_like(pixels))).gather(1, target[:, None]).squeeze(1)
    assert ((total - gap).abs() / gap.abs()).max() < 0.01


def test_perturbations_stay_in_range_and_radius(mlp):
    x = torch.tensor([0.0, 0.5, 1.0], dtype=DT).repeat(1, 1, 1, 1).expand(4, 1, 1, 3)
    for kind in ("gaussian", "linf"):
        probe = AttributionStability(mlp, perturbation=kind, radius=0.1, num_samples=50)
        moved = probe.perturb(x.contiguous(), generator=gen())
        assert moved.shape == (4, 50, 1, 1, 3)
        assert moved.min() >= 0 and moved.max() <= 1
        assert (moved[..., 0] > 0).any() and (moved[..., 2] < 1).any()
        if kind == "linf":
            assert (moved - x.unsqueeze(1)).abs().max() <= 0.1


@pytest.mark.parametrize("method", ["saliency", "integrated_gradients", "smoothgrad"])
def test_same_seed_same_numbers(mlp, pixels, method):
    probe = AttributionStability(mlp, method, num_samples=3, max_batch=200,
                                 method_kwargs={"n_steps": 8} if method == "integrated_gradients"
                                 else None)
    state = torch.get_rng_state()
    first, again = probe.measure(pixels, generator=gen(7)), probe.measure(pixels, generator=gen(7))
    other = probe.measure(pixels, generator=gen(8))
    assert torch.equal(torch.get_rng_state(), state)              # Captum's global draws forked
    assert torch.equal(first.relative_l2_draws, again.relative_l2_draws)
    assert torch.equal(first.spearman_draws, again.spearman_draws)
    assert not torch.equal(first.relative_l2_draws, other.relative_l2_draws)
    torch.manual_seed(3)
    unseeded = probe.measure(pixels)
    torch.manual_seed(3)
    assert torch.equal(probe.measure(pixels).cosine_draws, unseeded.cosine_draws)


def test_chunked_equals_one_shot(mlp, pixels):
    baselines = torch.rand(pixels.shape, generator=gen(4), dtype=DT) * 0.1
    kwargs = {"n_steps": 10, "baselines": baselines}
    one = AttributionStability(mlp, "integrated_gradients", num_samples=4, max_batch=10_000,
                               method_kwargs=kwargs).measure(pixels, generator=gen(5))
    chunked = AttributionStability(mlp, "integrated_gradients", num_samples=4, max_batch=30,
                                   method_kwargs=kwargs).measure(pixels, generator=gen(5))
    assert one.settings["num_calls"] == 1 and chunked.settings["num_calls"] == 9
    for name in ("relative_l2_draws", "cosine_draws", "spearman_draws", "top_k_draws"):
        assert torch.allclose(getattr(one, name), getattr(chunked, name))


@pytest.mark.parametrize("method,kwargs", [
    ("saliency", None),
    ("input_x_gradient", None),
    ("integrated_gradients", {"n_steps": 8, "baselines": 0.1}),
])
def test_equals_captum_sensitivity_max_on_same_draws(mlp, pixels, method, kwargs):
    probe = AttributionStability(mlp, method, perturbation="linf", radius=0.05, num_samples=6,
                                 method_kwargs=kwargs)
    ours = probe.measure(pixels, generator=gen(9)).sensitivity_max
    captum = probe.sensitivity_max(pixels, generator=gen(9))
    captum_chunked = probe.sensitivity_max(pixels, generator=gen(9),
                                           max_examples_per_batch=2 * pixels.shape[0])
    assert torch.allclose(ours, captum, rtol=1e-10, atol=0)
    assert torch.allclose(ours, captum_chunked, rtol=1e-10, atol=0)


def test_captum_object_equals_named_method(mlp, pixels):
    named = AttributionStability(mlp, "saliency", num_samples=3).measure(pixels, generator=gen())
    wrapped = AttributionStability(mlp, Saliency(mlp), num_samples=3,
                                   method_kwargs={"abs": False}).measure(pixels, generator=gen())
    assert torch.equal(named.relative_l2_draws, wrapped.relative_l2_draws)
    assert wrapped.settings["method"] == "Saliency"


@pytest.mark.parametrize("dtype", [torch.float32, DT])
@pytest.mark.parametrize(("method", "stock", "kwargs"), [
    ("saliency", Saliency, {"abs": False}),
    ("input_x_gradient", InputXGradient, {}),
    ("integrated_gradients", IntegratedGradients, {"n_steps": 6, "method": "gausslegendre"}),
    ("smoothgrad", lambda model: NoiseTunnel(Saliency(model)),
     {"nt_type": "smoothgrad", "nt_samples": 3, "stdevs": 0.15, "abs": False}),
])
def test_summed_gradients_equal_captum_bitwise(method, stock, kwargs, dtype):
    # the named methods differentiate Σ_i f_{c_i}(x_i) once; Captum's own objects differentiate
    # the unbound outputs: the same attributions to the bit, for a CNN with pooling and ReLU
    torch.manual_seed(0)
    model = SmallCNN(3, 5, 8, channels=(4, 4), hidden=8).to(dtype).eval()
    x = torch.rand(6, 3, 8, 8, generator=gen(), dtype=dtype)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    named = {"n_steps": 6} if method == "integrated_gradients" else (
        {"nt_samples": 3} if method == "smoothgrad" else {})
    options = {"num_samples": 3, "perturbation": "linf", "radius": 0.02}
    ours = AttributionStability(model, method, method_kwargs=named, **options).measure(
        x, labels, generator=gen(4))
    captum = AttributionStability(model, stock(model), method_kwargs=kwargs, **options).measure(
        x, labels, generator=gen(4))
    for name in ("relative_l2_draws", "spearman_draws", "top_k_draws", "perturbed_norm"):
        assert torch.equal(getattr(ours, name), getattr(captum, name)), name


def test_cnn_given_labels_summary_and_dict():
    torch.manual_seed(0)
    model = SmallCNN(3, 5, 8, channels=(4, 4), hidden=8).to(DT).eval()
    x = torch.rand(6, 3, 8, 8, generator=gen(), dtype=DT)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    result = AttributionStability(model, "input_x_gradient", num_samples=4, top_k=0.05).measure(
        x, labels, generator=gen())
    assert torch.equal(result.target, labels)
    assert result.settings["k"] == round(0.05 * 192)
    summary = result.summary(num_bootstrap=200)
    assert set(summary) == {"relative_l2", "cosine", "spearman", "top_k", "sensitivity_max"}
    for mean, lo, hi in summary.values():
        assert lo <= mean <= hi
    assert summary == result.summary(num_bootstrap=200)
    record = json.loads(json.dumps(result.to_dict()))
    assert len(record["draws"]["spearman"]) == 6 and record["settings"]["num_samples"] == 4


# --------------------------------------------------------------------------- bad input

def test_zero_attributions_warn_and_are_excluded():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2)).to(DT).eval()
    with torch.no_grad():
        model[1].weight[0].zero_()                                # class 0 ignores the input
    probe = AttributionStability(model, num_samples=3)
    x = torch.rand(4, 1, 2, 2, generator=gen(), dtype=DT)
    with pytest.warns(RuntimeWarning, match=r"2 of 4 samples have an all-zero attribution"):
        result = probe.measure(x, torch.tensor([0, 1, 0, 1]), generator=gen())
    assert result.valid.tolist() == [False, True, False, True] and result.num_valid == 2
    assert torch.isnan(result.relative_l2[[0, 2]]).all() and torch.isnan(result.cosine[0])
    assert result.summary()["relative_l2"][0] == 0.0              # valid ones only, not NaN
    assert result.to_dict()["relative_l2"][0] is None
    with pytest.warns(RuntimeWarning):
        none_valid = probe.measure(x, 0, generator=gen())
    with pytest.raises(ValueError, match="no sample"):
        none_valid.summary()


@pytest.mark.parametrize("kwargs,match", [
    ({"radius": 0.0}, "radius=0.0"),
    ({"radius": -0.1}, "radius=-0.1"),
    ({"num_samples": 0}, "num_samples=0"),
    ({"top_k": 0.0}, "top_k=0.0"),
    ({"perturbation": "l2"}, "perturbation='l2'"),
    ({"pixel_range": (1.0, 0.0)}, "pixel_range"),
    ({"max_batch": 0}, "max_batch=0"),
    ({"method": "gradcam"}, "method='gradcam'"),
    ({"method": "saliency", "method_kwargs": {"n_steps": 5}}, r"\['n_steps'\]"),
])
def test_bad_settings_raise(mlp, kwargs, match):
    with pytest.raises(ValueError, match=match):
        AttributionStability(mlp, **kwargs)


def test_bad_inputs_raise(mlp, pixels):
    probe = AttributionStability(mlp, num_samples=2)
    with pytest.raises(ValueError, match="outside pixel_range"):
        probe.measure(pixels * 4 - 2, generator=gen())
    with pytest.raises(ValueError, match="model has 4 classes"):
        probe.measure(pixels, torch.tensor([0, 1, 2, 3, 4]), generator=gen())
    with pytest.raises(ValueError, match="2 entries for 5"):
        probe.measure(pixels, torch.tensor([0, 1]), generator=gen())
    with pytest.raises(ValueError, match="non-finite"):
        probe.measure(pixels.clone().index_fill_(0, torch.tensor([1]), math.nan), generator=gen())


def test_model_returning_nan_or_in_train_mode_raises(pixels):
    broken = MLP(16, (4,), 3).to(DT).eval()
    with torch.no_grad():
        broken.net[1].bias.fill_(math.nan)
    with pytest.raises(ValueError, match="model outputs"):
        AttributionStability(broken).measure(pixels, generator=gen())
    dropout = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(16, 3)).to(DT)
    with pytest.raises(ValueError, match=r"call model.eval\(\) first"):
        AttributionStability(dropout).measure(pixels, generator=gen())


def test_measure_rank_metrics_match_scipy_and_the_metric_functions():
    from scipy.stats import spearmanr
    torch.manual_seed(0)
    model = MLP(12, (8,), 3).eval()                  # float32: the packed-key sort
    x = torch.rand(5, 12)
    probe = AttributionStability(model, "saliency", num_samples=4, radius=0.05)
    result = probe.measure(x, target=0, generator=torch.Generator().manual_seed(1))
    moved_inputs = probe.perturb(x, generator=torch.Generator().manual_seed(1))
    target = torch.zeros(5, dtype=torch.long)
    reference = probe.method(x, target).flatten(1)
    moved = probe.method(moved_inputs.flatten(0, 1), target.repeat_interleave(4)).view(5, 4, -1)
    expected = torch.tensor([[spearmanr(reference[i].numpy(), moved[i, k].numpy()).statistic
                              for k in range(4)] for i in range(5)], dtype=torch.float32)
    torch.testing.assert_close(result.spearman_draws, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(result.spearman_draws, spearman_correlation(reference, moved))
    torch.testing.assert_close(result.top_k_draws,
                               top_k_intersection(reference, moved, result.settings["k"]))
