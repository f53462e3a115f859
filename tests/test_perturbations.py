"""Tests for stabnb.attribution.perturbations: spec parsing, translation and blur by hand."""

from __future__ import annotations

import math

import pytest
import torch

from stabnb.attribution import AttributionStability, parse_perturbation
from stabnb.attribution.perturbations import perturb
from stabnb.models import SmallCNN

DT = torch.float64


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_specs_parse_and_bad_ones_name_the_fix():
    assert parse_perturbation("gaussian:0.02") == ("gaussian", 0.02)
    assert parse_perturbation("translate:1") == ("translate", 1.0)
    for spec, message in [("gaussian", "must read 'family:size'"),
                          ("a:b:c", "must read 'family:size'"),
                          ("l2:0.1", "perturbation='l2' is unknown"),
                          ("blur:wide", "is not a number"),
                          ("uniform:-0.1", "must be a positive finite"),
                          ("gaussian:nan", "must be a positive finite"),
                          ("translate:1.5", "whole pixels")]:
        with pytest.raises(ValueError, match=message):
            parse_perturbation(spec)


def _shifted(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Pixel (i, j) of the result is pixel (clamp(i − dy), clamp(j − dx)), by loops."""
    _, height, width = image.shape
    out = torch.empty_like(image)
    for i in range(height):
        for j in range(width):
            out[:, i, j] = image[:, min(max(i - dy, 0), height - 1), min(max(j - dx, 0), width - 1)]
    return out


def test_translation_is_an_edge_replicated_nonzero_shift_and_covers_every_shift():
    image = torch.arange(1, 10, dtype=DT).view(1, 1, 3, 3) / 10
    copies = perturb(image, "translate", 1, 200, generator=gen())
    shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    seen = []
    for copy in copies[0]:
        matches = [s for s in shifts if torch.equal(copy, _shifted(image[0], *s))]
        assert len(matches) == 1
        seen += matches
    assert set(seen) == set(shifts)                                   # all 8, never (0, 0)
    two = perturb(image, "translate", 2, 50, generator=gen(1))[0]
    assert all(any(torch.equal(c, _shifted(image[0], dy, dx)) for dy in range(-2, 3)
                   for dx in range(-2, 3) if (dy, dx) != (0, 0)) for c in two)


def test_blur_equals_a_hand_convolution_with_replicated_edges():
    image = torch.rand(2, 2, 5, 6, generator=gen(2), dtype=DT)
    size, draws = 0.8, 3
    copies = perturb(image, "blur", size, draws, generator=gen(3))
    widths = size * (1 - torch.rand((2, draws), generator=gen(3), dtype=DT))
    half = math.ceil(3 * size)
    for n in range(2):
        for k in range(draws):
            taps = torch.tensor([math.exp(-t * t / (2 * float(widths[n, k]) ** 2))
                                 for t in range(-half, half + 1)], dtype=DT)
            taps = taps / taps.sum()
            for c in range(2):
                expected = torch.zeros(5, 6, dtype=DT)
                for i in range(5):
                    for j in range(6):
                        for a in range(-half, half + 1):
                            for b in range(-half, half + 1):
                                expected[i, j] += taps[a + half] * taps[b + half] * image[
                                    n, c, min(max(i + a, 0), 4), min(max(j + b, 0), 5)]
                torch.testing.assert_close(copies[n, k, c], expected)
    flat = torch.full((1, 1, 4, 4), 0.3, dtype=DT)
    torch.testing.assert_close(perturb(flat, "blur", 2.0, 2, generator=gen()),
                               flat.unsqueeze(1).expand(1, 2, 1, 4, 4))


def test_noise_families_keep_their_draws_and_everything_is_clipped():
    x = torch.rand(3, 1, 4, 4, generator=gen(4), dtype=DT)
    gaussian = perturb(x, "gaussian", 0.1, 5, generator=gen(5))
    noise = torch.randn((3, 5, 1, 4, 4), generator=gen(5), dtype=DT) * 0.1
    torch.testing.assert_close(gaussian, (x.unsqueeze(1) + noise).clamp(0, 1))
    torch.testing.assert_close(perturb(x, "uniform", 0.2, 5, generator=gen(6)),
                               perturb(x, "linf", 0.2, 5, generator=gen(6)))
    for family, size in [("gaussian", 2.0), ("uniform", 2.0), ("translate", 1), ("blur", 1.0)]:
        out = perturb(x, family, size, 4, generator=gen(7), pixel_range=(0.1, 0.9))
        assert out.shape == (3, 4, 1, 4, 4) and out.min() >= 0.1 and out.max() <= 0.9


def test_image_families_refuse_flat_inputs():
    for family in ("translate", "blur"):
        with pytest.raises(ValueError, match="needs image inputs"):
            perturb(torch.rand(2, 16), family, 1, 3, generator=gen())


def test_the_probe_measures_structured_families_on_images():
    model = SmallCNN(1, 3, 8, channels=(4, 4), hidden=8).to(DT).eval()
    x = torch.rand(4, 1, 8, 8, generator=gen(8), dtype=DT)
    for family, size in [("translate", 1), ("blur", 0.5)]:
        result = AttributionStability(model, perturbation=family, radius=size,
                                      num_samples=3).measure(x, generator=gen(9))
        assert result.relative_l2.shape == (4,) and bool(torch.isfinite(result.relative_l2).all())
        assert result.settings["perturbation"] == family
    with pytest.raises(ValueError, match="whole pixels"):
        AttributionStability(model, perturbation="translate", radius=0.5)
