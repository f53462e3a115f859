"""Synthetic data with chosen spectra: a Gaussian mixture, singular-value profiles, random
matrices with a given spectrum, and networks whose weights have one (E1, E2, R7)."""

from __future__ import annotations

import torch

from ..rng import resolve_generator

__all__ = ["gaussian_mixture", "spectrum_profile", "matrix_with_spectrum", "with_weight_spectra"]


def gaussian_mixture(n: int, dim: int, num_classes: int, *, separation: float = 3.0,
                     noise: float = 1.0, generator: torch.Generator | None = None, seed: int = 0,
                     dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points of a ``num_classes``-component isotropic Gaussian mixture in R^dim.

    Class means are random directions scaled to norm ``separation``; each point is its
    class mean plus ``N(0, noise² I)``. Labels are balanced (round-robin, then shuffled).

    Returns:
        ``(x, y)`` with ``x`` of shape ``(n, dim)`` and int64 labels ``y`` of shape ``(n,)``.
    """
    generator = resolve_generator(generator, seed)
    if n < 1 or dim < 1 or num_classes < 2:
        raise ValueError(f"need n ≥ 1, dim ≥ 1, num_classes ≥ 2; got n={n}, dim={dim}, "
                         f"num_classes={num_classes}.")
    means = torch.randn(num_classes, dim, generator=generator, dtype=dtype)
    means = separation * means / means.norm(dim=1, keepdim=True)
    labels = torch.arange(n) % num_classes
    labels = labels[torch.randperm(n, generator=generator)]
    x = means[labels] + noise * torch.randn(n, dim, generator=generator, dtype=dtype)
    return x, labels


def spectrum_profile(rank: int, decay: float, *, norm: float = 1.0,
                     kind: str = "geometric") -> torch.Tensor:
    """Singular values with ``s_1 = norm`` and a chosen concentration.

    ``"geometric"``: s_i = norm · decay^(i−1); ``"power"``: s_i = norm · i^(−decay).
    ``decay = 1`` (geometric) or ``0`` (power) gives a flat spectrum (maximal entropy);
    small geometric ``decay`` concentrates the energy in s_1 (entropy → 0).
    """
    if rank < 1:
        raise ValueError(f"rank={rank} must be at least 1.")
    index = torch.arange(rank, dtype=torch.float64)
    if kind == "geometric":
        if not 0 < decay <= 1:
            raise ValueError(f"geometric decay={decay} must be in (0, 1].")
        values = decay ** index
    elif kind == "power":
        if decay < 0:
            raise ValueError(f"power decay={decay} must be ≥ 0.")
        values = (index + 1) ** (-decay)
    else:
        raise ValueError(f"kind={kind!r} is unknown; choose 'geometric' or 'power'.")
    return norm * values


def _random_orthogonal(n: int, k: int, generator: torch.Generator | None,
                       dtype: torch.dtype) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(n, k, generator=generator, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).to(dtype)


def matrix_with_spectrum(singular_values: torch.Tensor, shape: tuple[int, int], *,
                         generator: torch.Generator | None = None, seed: int = 0,
                         dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A random ``shape`` matrix U diag(s) Vᵀ with the given singular values (Haar U, V)."""
    generator = resolve_generator(generator, seed)
    rows, cols = shape
    s = torch.as_tensor(singular_values, dtype=torch.float64)
    if s.dim() != 1 or s.numel() > min(rows, cols):
        raise ValueError(f"{s.numel()} singular values do not fit a {rows}×{cols} matrix "
                         f"(at most {min(rows, cols)}).")
    if bool((s < 0).any()):
        raise ValueError("singular values must be non-negative.")
    k = s.numel()
    u = _random_orthogonal(rows, k, generator, torch.float64)
    v = _random_orthogonal(cols, k, generator, torch.float64)
    return ((u * s) @ v.T).to(dtype)


def with_weight_spectra(model: torch.nn.Module, decay: float, *, norm: float = 1.0,
                        kind: str = "geometric",
                        generator: torch.Generator | None = None, seed: int = 0) -> torch.nn.Module:
    """Give every ``nn.Linear`` weight of ``model`` the spectrum ``spectrum_profile(r, decay, norm)``.

    A teacher network whose layers share one operator norm but differ in concentration.
    Modifies ``model`` in place and returns it.
    """
    generator = resolve_generator(generator, seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                rows, cols = module.weight.shape
                s = spectrum_profile(min(rows, cols), decay, norm=norm, kind=kind)
                module.weight.copy_(matrix_with_spectrum(s, (rows, cols), generator=generator,
                                                         dtype=module.weight.dtype))
    return model
