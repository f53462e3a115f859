"""Full-batch GD, the sharpness tracker, NTK drift and the E8 claims, on tiny float64 networks."""

import copy
import math

import pytest
import torch
from torch import nn

from stabnb import dynamics
from stabnb.models import MLP, initialize


def _problem(n=12, d=5, classes=3, width=7, seed=0):
    gen = torch.Generator().manual_seed(seed)
    model = initialize(MLP(d, (width,), classes, activation="tanh"), gen).double().eval()
    inputs = torch.randn(n, d, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, classes, (n,), generator=gen)
    return model, inputs, labels


def _mse(model, inputs, labels):
    logits = model(inputs)
    return 0.5 * (logits - nn.functional.one_hot(labels, logits.shape[1])).pow(2).sum(1).mean()


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_gd_matches_hand_written_steps(loss):
    model, inputs, labels = _problem()
    reference = copy.deepcopy(model)
    lr, steps = 0.3, 3
    run = dynamics.train_gd(model, inputs, labels, lr=lr, num_steps=steps, loss=loss,
                            track_sharpness=False)
    values = []
    for _ in range(steps + 1):
        value = (_mse(reference, inputs, labels) if loss == "mse"
                 else nn.functional.cross_entropy(reference(inputs), labels))
        values.append(float(value.detach()))
        if len(values) == steps + 1:
            break
        grads = torch.autograd.grad(value, list(reference.parameters()))
        with torch.no_grad():
            for p, g in zip(reference.parameters(), grads):
                p -= lr * g
    assert torch.allclose(run.loss, torch.tensor(values, dtype=torch.float64), rtol=1e-12)
    for p, q in zip(model.parameters(), reference.parameters()):
        assert torch.allclose(p, q, rtol=1e-12, atol=1e-14)
    assert not run.diverged and run.tracked_steps.tolist() == [0, 3]


def test_sharpness_is_the_dense_hessians_top_eigenvalue():
    model, inputs, labels = _problem()
    params = dict(model.named_parameters())
    names = list(params)
    flat = torch.cat([p.detach().flatten() for p in params.values()])

    def loss_of(vector):
        parts, start = {}, 0
        for k in names:
            parts[k] = vector[start:start + params[k].numel()].view_as(params[k])
            start += params[k].numel()
        logits = torch.func.functional_call(model, parts, (inputs,))
        return 0.5 * (logits - nn.functional.one_hot(labels, 3)).pow(2).sum(1).mean()

    dense = torch.autograd.functional.hessian(loss_of, flat)
    top = dynamics.sharpness(model, inputs, labels, tol=1e-10)
    assert top.converged
    assert float(top.values[0]) == pytest.approx(float(torch.linalg.eigvalsh(dense)[-1]), rel=1e-8)
    assert float(top.residuals[0]) < 1e-8


def test_tracked_sharpness_warm_start_and_drift():
    model, inputs, labels = _problem()
    run = dynamics.train_gd(model, inputs, labels, lr=0.2, num_steps=4, track_every=2,
                            probe_inputs=inputs[:4], sharpness_tol=1e-10)
    assert run.tracked_steps.tolist() == [0, 2, 4]
    assert float(run.drift[0]) == 0.0 and float(run.drift[-1]) > 0
    top = dynamics.sharpness(model, inputs, labels, tol=1e-10)
    assert float(run.sharpness[-1]) == pytest.approx(float(top.values[0]), rel=1e-8)


def test_ntk_drift_is_relative_frobenius():
    k0 = torch.eye(2, dtype=torch.float64)
    assert dynamics.ntk_drift(2 * k0, k0) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same probe"):
        dynamics.ntk_drift(torch.eye(3), torch.eye(2))


def test_divergence_stops_the_run():
    model, inputs, labels = _problem()
    top = float(dynamics.sharpness(model, inputs, labels).values[0])
    run = dynamics.train_gd(model, inputs, labels, lr=50 * 2 / top, num_steps=50,
                            track_sharpness=False)
    assert run.diverged and run.loss.numel() < 51
    assert math.isnan(dynamics.sharpness_plateau(run))


def test_learning_rates_and_bad_input():
    assert dynamics.learning_rates([0.5, 2], 4.0) == [0.25, 1.0]
    for bad in ([0.0], [-1.0], [math.inf], []):
        with pytest.raises(ValueError, match="multiples"):
            dynamics.learning_rates(bad, 4.0)
    with pytest.raises(ValueError, match="sharpness0"):
        dynamics.learning_rates([1.0], 0.0)
    model, inputs, labels = _problem()
    with pytest.raises(ValueError, match="lr"):
        dynamics.train_gd(model, inputs, labels, lr=-1.0, num_steps=2)
    with pytest.raises(ValueError, match="multiples"):
        dynamics.lr_sweep(model, inputs, labels, [1.0, 0.0], num_steps=2)


def _run(lr, diverged, sharpness, drift, steps=9):
    tracked = torch.arange(0, steps + 1, 3)
    return dynamics.GDRun(lr, steps, torch.zeros(steps + 1), torch.zeros(steps + 1), tracked,
                          torch.full((tracked.numel(),), float(sharpness), dtype=torch.float64),
                          torch.zeros(tracked.numel()),
                          torch.linspace(0, drift, tracked.numel(), dtype=torch.float64), None,
                          diverged)


def _sweep(ratio, drifts, diverge_from=4.0):
    multiples = (0.5, 2.0, 4.0)
    runs = tuple(_run(m * 2, m >= diverge_from, ratio * 2 / (m * 2), d)
                 for m, d in zip(multiples, drifts))
    return dynamics.LRSweep(multiples, 1.0, 1e-4, runs)


def test_claims_follow_their_rules():
    sweeps = [_sweep(1.0, (0.1, 0.2, 0.3)), _sweep(1.01, (0.1, 0.3, 0.5))]
    rising = [_sweep(1.0, (0.1, 0.2, 0.3), diverge_from=8.0)] * 2
    assert dynamics.edge_of_stability_claim(sweeps).passed is True
    assert dynamics.edge_of_stability_claim([_sweep(0.4, (0, 0, 0))] * 2).passed is False
    assert dynamics.edge_of_stability_claim(sweeps[:1]).passed is None      # one seed
    assert dynamics.stable_lr_claim(sweeps, c=3.0).passed is True
    assert dynamics.stable_lr_claim(sweeps, c=1.0).passed is False
    assert dynamics.drift_claim(rising).passed is True
    falling = dynamics.LRSweep((0.5, 1.0, 2.0, 8.0), 1.0, 1e-4,
                               tuple(_run(2 * m, m > 4, 1.0, d)
                                     for m, d in zip((0.5, 1.0, 2.0, 8.0), (0.3, 0.2, 0.1, 0.0))))
    assert dynamics.drift_claim([falling, falling]).passed is False        # diverged run left out
    assert dynamics.drift_claim(sweeps).passed is None                     # two stable runs


def test_interval_in_band():
    from stabnb.stats import Interval
    assert dynamics.interval_in_band(Interval(1.0, 0.9, 1.1, 2), 0.8, 1.3) is True
    assert dynamics.interval_in_band(Interval(2.0, 1.9, 2.1, 2), 0.8, 1.3) is False
    assert dynamics.interval_in_band(Interval(1.3, 1.2, 1.4, 2), 0.8, 1.3) is None
    assert dynamics.interval_in_band(Interval(1.0, math.nan, math.nan, 1), 0.8, 1.3) is None


def test_lr_sweep_and_its_table():
    model, inputs, labels = _problem()
    before = [p.clone() for p in model.parameters()]
    sweep = dynamics.lr_sweep(model, inputs, labels, (0.5, 100.0), num_steps=6, track_every=3,
                              probe_inputs=inputs[:4], seed=1)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))   # model untouched
    top = float(dynamics.sharpness(model, inputs, labels, seed=1).values[0])
    assert sweep.sharpness0 == pytest.approx(top, rel=1e-3)
    assert [r.diverged for r in sweep.runs] == [False, True]
    assert sweep.runs[0].lr == pytest.approx(0.5 * 2 / sweep.sharpness0)
    rows = dynamics.sweep_table([sweep])
    assert [(r["multiple"], r["diverged"]) for r in rows] == [(0.5, False), (100.0, True)]
    assert math.isnan(rows[1]["plateau·η/2"]) and rows[0]["max residual/λ"] <= 1.01e-3
