"""Label flips, the NTK eigen-bands and the remaining label noise, against closed forms."""

import copy
import math

import pytest
import torch
from torch import nn

from stabnb import dynamics, label_noise
from stabnb.label_noise import KernelBasis
from stabnb.models import MLP, initialize
from stabnb.operators import ntk_gram


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.25, 0.4, 0.99])
def test_flip_labels_flips_exactly_the_fraction_to_other_classes(fraction):
    labels = torch.arange(200) % 10
    noisy, flipped = label_noise.flip_labels(labels, fraction, 10,
                                             generator=torch.Generator().manual_seed(3))
    assert int(flipped.sum()) == round(fraction * 200)
    assert bool((noisy[flipped] != labels[flipped]).all())
    assert bool((noisy[~flipped] == labels[~flipped]).all())
    again, _ = label_noise.flip_labels(labels, fraction, 10,
                                       generator=torch.Generator().manual_seed(3))
    assert torch.equal(noisy, again)


def test_flips_are_uniform_over_the_other_classes():
    labels = torch.zeros(30000, dtype=torch.long)
    noisy, _ = label_noise.flip_labels(labels, 0.5, 4, seed=0)
    counts = torch.bincount(noisy, minlength=4)
    assert int(counts[0]) == 15000
    assert torch.allclose(counts[1:].double() / 15000, torch.full((3,), 1 / 3, dtype=torch.float64),
                          atol=0.02)


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5, math.nan])
def test_flip_fraction_out_of_range_is_refused(fraction):
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        label_noise.flip_labels(torch.arange(10) % 3, fraction, 3)


def test_fit_curves_and_steps_to_fit():
    outputs = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [1.0, 0.0]]])   # (R=2, n=2, C=2)
    given = torch.tensor([1, 0])
    noisy, clean = label_noise.label_fit_curves(outputs, given, torch.tensor([True, False]))
    assert noisy.tolist() == [0.0, 1.0] and clean.tolist() == [1.0, 1.0]
    steps = torch.tensor([0, 10])
    assert label_noise.steps_to_fit(steps, noisy) == 10.0
    assert label_noise.steps_to_fit(steps, torch.zeros(2)) == math.inf


def _kernel(n=9, seed=0):
    a = torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return a @ a.T


def test_basis_reconstructs_kernel_and_vectors():
    kernel = _kernel()
    basis = KernelBasis.of(kernel)
    assert bool((basis.eigenvalues[:-1] >= basis.eigenvalues[1:]).all())
    assert basis.reconstruction_error(kernel) < 1e-13
    v = torch.randn(9, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert torch.allclose(basis.reconstruct(basis.project(v)), v, atol=1e-12)
    assert [b.tolist() for b in basis.bands(3)] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    with pytest.raises(ValueError, match="num_bands"):
        basis.bands(10)


def test_band_remaining_on_a_linear_model_is_the_closed_form():
    n, d, classes, lr, steps = 8, 6, 3, 0.5, 12
    gen = torch.Generator().manual_seed(0)
    inputs = torch.randn(n, d, generator=gen, dtype=torch.float64)
    labels = torch.arange(n) % classes
    noisy, _ = label_noise.flip_labels(labels, 0.5, classes, generator=gen)
    model = nn.Sequential(nn.Linear(d, classes, bias=False)).double().eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.randn(classes, d, generator=gen, dtype=torch.float64))
    basis = KernelBasis.of(ntk_gram(model, inputs))             # = C · X Xᵀ
    runs = {}
    for name, given in (("clean", labels), ("noisy", noisy)):
        runs[name] = dynamics.train_gd(copy.deepcopy(model), inputs, given, lr=lr,
                                       num_steps=steps, track_every=1,
                                       track_sharpness=False, record_outputs=True)
    noise = (nn.functional.one_hot(noisy, classes)
             - nn.functional.one_hot(labels, classes)).double()
    fitted = runs["noisy"].outputs - runs["clean"].outputs
    measured = label_noise.band_remaining(basis, noise, fitted, num_bands=n)
    t = runs["clean"].tracked_steps.double()[:, None]
    closed = (1 - lr * basis.eigenvalues / (n * classes)).abs()[None, :] ** t
    keep = torch.linalg.vector_norm(basis.project(noise), dim=1) > 1e-9   # directions with noise
    assert torch.allclose(measured[:, keep], closed[:, keep], rtol=1e-9, atol=1e-12)
    linear = label_noise.linearised_band_remaining(basis, noise, runs["clean"].tracked_steps,
                                                   lr=lr, num_outputs=classes, num_bands=n)
    assert torch.allclose(linear[:, keep], closed[:, keep], rtol=1e-9, atol=1e-12)


def test_label_noise_run_and_claims():
    gen = torch.Generator().manual_seed(0)
    model = initialize(MLP(5, (16,), 3, activation="tanh"), gen).double().eval()
    inputs = torch.randn(24, 5, generator=gen, dtype=torch.float64)
    labels = torch.arange(24) % 3
    results = [label_noise.label_noise_run(model, inputs, labels, (0.0, 0.25), lr=0.5,
                                           num_steps=20, record_every=5,
                                           generator=torch.Generator().manual_seed(s))
               for s in (1, 2)]
    r = results[0]
    assert r.kernel_error < 1e-12 and r.projection_error < 1e-12
    assert r.remaining[0] is None and r.remaining[1].shape == (5, 3)
    assert torch.allclose(r.remaining[1][0], torch.ones(3, dtype=torch.float64))  # t = 0
    assert int(r.flipped[1].sum()) == 6
    assert label_noise.noise_speed_claim(results).name == "E8_noisy_labels_fitted_later"
    claims = label_noise.noise_band_claims(results)
    assert [c.name for c in claims] == ["E8_noise_bands[25%]"]
    assert label_noise.noise_band_claims(results[:1])[0].passed is None     # one seed: undecided
    assert r.to_dict()["num_flipped"] == [0, 6]


def test_noise_table_rows():
    gen = torch.Generator().manual_seed(0)
    model = initialize(MLP(5, (8,), 3, activation="tanh"), gen).double().eval()
    inputs = torch.randn(12, 5, generator=gen, dtype=torch.float64)
    result = label_noise.label_noise_run(model, inputs, torch.arange(12) % 3, (0.0, 0.5), lr=0.5,
                                         num_steps=10, record_every=5)
    rows = label_noise.noise_table([result])
    assert [r["flipped"] for r in rows] == [0.0, 0.5]
    assert "remaining bottom" not in rows[0] and rows[1]["remaining bottom"] > 0
    assert label_noise.band_names(2) == ("band 0", "band 1")
