"""R2–R4: forward, typical (entropy-refined) and parameter sensitivity of a network, checked per sample.

- R2: ``‖f(x+δ) − f(x)‖ ≤ sup_t ‖J_f(x+tδ)‖₂ ‖δ‖ ≤ GMSI·‖δ‖`` (the GMSI over the path);
- R3: ``E‖Jξ‖² = σ²‖J‖_F² ≤ σ²‖J‖₂² exp(H(J)) ≤ σ²‖J‖₂² rank J ≤ σ² d ‖J‖₂²`` for ξ ~ N(0, σ²I);
- R4: ``‖f_{θ+Δ}(x) − f_θ(x)‖ ≲ ‖∇_θ f(x)‖₂ ‖Δ‖`` and ``‖∇_θ f(x)‖₂² = λ_max(K_xx)``.

Our reconstruction, not the paper's statement (``docs/reconstruction.md``, "Reconstructed results").
"""


import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, vmap

from ..gmsi import gmsi
from ..models import functional
from ..operators import input_jacobian_singular_values, ntk_gram, parameter_jacobian
from ..rng import resolve_generator
from ..summaries import effective_rank, numerical_rank, spectral_entropy, stable_rank
from .families import PerSampleResult
from .product import layerwise_bound

__all__ = [
    "ForwardSensitivityCheck", "check_forward_sensitivity", "GMSIForwardCheck",
    "check_gmsi_forward_bound", "TypicalSensitivityCheck",
    "check_typical_sensitivity", "ParameterSensitivityCheck", "check_parameter_sensitivity",
]


def random_directions(inputs: torch.Tensor, radius: float, generator: torch.Generator
                      ) -> torch.Tensor:
    """Uniformly random directions scaled to ‖δ‖₂ = radius, one per sample."""
    if not radius > 0:
        raise ValueError(f"radius={radius!r} must be positive, e.g. 0.05 (pixel units).")
    noise = torch.randn(inputs.shape, generator=generator, dtype=inputs.dtype,
                        device=generator.device)
    noise = noise.to(inputs.device)
    return radius * noise / noise.flatten(1).norm(dim=1).view(-1, *[1] * (inputs.dim() - 1))


def path_points(inputs: torch.Tensor, delta: torch.Tensor, num_points: int) -> torch.Tensor:
    """x + tδ for t on a uniform grid of ``num_points`` in [0, 1], shape (num_points, n, ...)."""
    if num_points < 2:
        raise ValueError(f"num_path_points={num_points} must be at least 2 (both endpoints).")
    t = torch.linspace(0.0, 1.0, num_points, dtype=inputs.dtype, device=inputs.device)
    return inputs.unsqueeze(0) + t.view(-1, *[1] * inputs.dim()) * delta.unsqueeze(0)


def path_operator_norms(model: nn.Module, points: torch.Tensor) -> torch.Tensor:
    """‖J_f(p)‖₂ for a stack of point batches (T, n, ...) -> (T, n)."""
    flat = points.reshape(-1, *points.shape[2:])
    return input_jacobian_singular_values(model, flat)[:, 0].view(points.shape[:2])


def _perturbation(model: nn.Module, inputs: torch.Tensor, radius: float, num_path_points: int,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A random δ of norm ``radius`` per sample, the path grid x + tδ, and ‖f(x+δ) − f(x)‖."""
    delta = random_directions(inputs, radius, generator)
    points = path_points(inputs, delta, num_path_points)
    with torch.no_grad():
        change = (model(inputs + delta) - model(inputs)).norm(dim=1)
    return delta, points, change


@dataclass(frozen=True)
class ForwardSensitivityCheck(PerSampleResult):
    """R2 on a batch: the layerwise norm-product bound and the path-sup bound, per sample.

    ``layerwise_slack = layerwise_bound / jacobian_norm``; ``path_slack = path_bound /
    output_change`` with ``path_bound = max_t ‖J_f(x+tδ)‖₂ · ‖δ‖`` over ``num_path_points``.
    """

    jacobian_norm: torch.Tensor
    layerwise_bound: float
    layerwise_slack: torch.Tensor
    output_change: torch.Tensor
    delta_norm: torch.Tensor
    path_sup: torch.Tensor
    path_bound: torch.Tensor
    path_slack: torch.Tensor
    radius: float
    num_path_points: int
    holds: torch.Tensor


def check_forward_sensitivity(model: nn.Module, inputs: torch.Tensor, *, radius: float = 0.1,
                              num_path_points: int = 9,
                              generator: torch.Generator | None = None, seed: int = 0
                              ) -> ForwardSensitivityCheck:
    """R2: ``‖J_f(x)‖₂ ≤ L_σ^{L−1} Π‖W_i‖₂`` and ``‖f(x+δ) − f(x)‖ ≤ sup_t ‖J_f(x+tδ)‖₂ ‖δ‖``.

    The second is the mean value inequality, ``f(x+δ) − f(x) = ∫₀¹ J_f(x+tδ) δ dt``; the sup
    is taken over a uniform grid of t (an estimate of the sup, from below). δ is uniformly
    random on the sphere of radius ``radius``. Our reconstruction (R2).

    Cost: ``num_path_points`` Jacobian spectra per sample.
    """
    generator = resolve_generator(generator, seed)
    delta, points, change = _perturbation(model, inputs, radius, num_path_points, generator)
    bound = layerwise_bound(model, inputs.shape[1:])
    path_norms = path_operator_norms(model, points)
    jacobian_norm = path_norms[0]
    delta_norm = delta.flatten(1).norm(dim=1)
    path_sup = path_norms.amax(dim=0)
    path_bound = path_sup * delta_norm
    holds = (jacobian_norm <= bound) & (change <= path_bound)
    return ForwardSensitivityCheck(jacobian_norm, bound, bound / jacobian_norm, change,
                                   delta_norm, path_sup, path_bound, path_bound / change,
                                   float(radius), num_path_points, holds)


@dataclass(frozen=True)
class GMSIForwardCheck(PerSampleResult):
    """R2 through the GMSI on a batch, per sample: the bound and its slack.

    ``component_bound = G_J ‖δ‖`` with ``G_J = sup ‖J_f‖₂`` the GMSI's input-Jacobian component
    over the sample set {x_i + t δ_i} (every input and its path grid), ``gmsi_bound = GMSI ‖δ‖``
    (the aggregate, ≥ the component); ``*_slack = bound / output_change``. ``dominant``: the
    component the GMSI equals.
    """

    output_change: torch.Tensor
    delta_norm: torch.Tensor
    component_bound: torch.Tensor
    gmsi_bound: torch.Tensor
    component_slack: torch.Tensor
    gmsi_slack: torch.Tensor
    input_component: float
    gmsi_value: float
    dominant: str
    radius: float
    num_path_points: int
    holds: torch.Tensor


def check_gmsi_forward_bound(model: nn.Module, inputs: torch.Tensor, *, radius: float = 0.1,
                             num_path_points: int = 9,
                             generator: torch.Generator | None = None, seed: int = 0
                             ) -> GMSIForwardCheck:
    """R2's last step: ``‖f(x+δ) − f(x)‖ ≤ sup_t ‖J_f(x+tδ)‖₂ ‖δ‖ ≤ G_J ‖δ‖ ≤ GMSI·‖δ‖``.

    The GMSI (:func:`stabnb.gmsi.gmsi`, its default size-free definition) is computed on the
    sample set of every input and its path grid x + tδ (``num_path_points`` values of t), so its
    input-Jacobian component ``G_J`` bounds the path sup; the loss Hessian term uses the
    network's own predicted classes as targets. δ is uniformly random on the sphere of radius
    ``radius``. Our reconstruction (R2, ``docs/reconstruction.md``).

    Cost: one GMSI on ``n·num_path_points`` samples (their Jacobians, NTK and a Lanczos run).
    """
    generator = resolve_generator(generator, seed)
    delta, points, change = _perturbation(model, inputs, radius, num_path_points, generator)
    samples = points.reshape(-1, *inputs.shape[1:])
    with torch.no_grad():
        targets = model(samples).argmax(dim=1)
    index = gmsi(model, samples, targets, generator=generator, progress=False, pixel_range=None)
    delta_norm = delta.flatten(1).norm(dim=1)
    component = index.components["input_jacobian"]
    component_bound, gmsi_bound = component * delta_norm, index.value * delta_norm
    dominant = max(index.components, key=index.components.__getitem__)
    return GMSIForwardCheck(change, delta_norm, component_bound, gmsi_bound,
                            component_bound / change, gmsi_bound / change, component,
                            index.value, dominant, float(radius), num_path_points,
                            change <= component_bound)


@dataclass(frozen=True)
class TypicalSensitivityCheck(PerSampleResult):
    """R3 on a batch: Monte Carlo ``E‖f(x+ξ) − f(x)‖²`` against the chain of bounds, per sample.

    ``frobenius = σ²‖J‖_F²`` (the first-order expectation), ``entropy_bound = σ²‖J‖₂² exp(H)``,
    ``rank_bound = σ²‖J‖₂² rank J``, ``worst_case = σ² d ‖J‖₂²``; ``slack = entropy_bound /
    monte_carlo``. ``holds``: the Monte Carlo mean is at most 3 standard errors above the
    entropy bound.
    """

    monte_carlo: torch.Tensor
    monte_carlo_se: torch.Tensor
    frobenius: torch.Tensor
    entropy_bound: torch.Tensor
    rank_bound: torch.Tensor
    worst_case: torch.Tensor
    stable_rank: torch.Tensor
    effective_rank: torch.Tensor
    rank: torch.Tensor
    entropy: torch.Tensor
    slack: torch.Tensor
    sigma: float
    num_samples: int
    holds: torch.Tensor


def check_typical_sensitivity(model: nn.Module, inputs: torch.Tensor, *, sigma: float = 1e-3,
                              num_samples: int = 64,
                              generator: torch.Generator | None = None, seed: int = 0
                              ) -> TypicalSensitivityCheck:
    """R3: typical sensitivity ``E‖Jξ‖² = σ²‖J‖_F² = σ²‖J‖₂² srank ≤ σ²‖J‖₂² exp(H)``.

    For ξ ~ N(0, σ²I), ``E‖Jξ‖² = σ² tr(JᵀJ) = σ² Σ s_i²``; ``srank ≤ exp(H)`` because
    ``H = −Σ p_i log p_i ≥ −log max p_i = log(‖J‖₂²/‖J‖_F²)`` with p_i = s_i²/‖J‖_F². The network
    satisfies it to first order in σ; checked here by Monte Carlo on ``f`` itself.
    Our reconstruction (R3).

    Args:
        sigma: noise scale in pixel units. Default: 1e-3.
        num_samples: Monte Carlo draws K per sample. Default: 64.
        generator: for the noise draws.
        seed: seeds a fresh generator when ``generator`` is None. Default: 0.

    Cost: n·K forward passes and one Jacobian spectrum per sample.
    """
    generator = resolve_generator(generator, seed)
    if not sigma > 0 or num_samples < 2:
        raise ValueError(f"sigma={sigma!r} must be positive and num_samples={num_samples} at "
                         "least 2 (for a standard error).")
    singular = input_jacobian_singular_values(model, inputs)
    top2 = singular[:, 0] ** 2
    n, d = inputs.shape[0], inputs[0].numel()
    noise = torch.randn((num_samples, *inputs.shape), generator=generator, dtype=inputs.dtype,
                        device=generator.device)
    noise = sigma * noise.to(inputs.device)
    with torch.no_grad():
        clean = model(inputs)
        noisy = model((inputs.unsqueeze(0) + noise).reshape(-1, *inputs.shape[1:]))
    squared = (noisy.view(num_samples, n, -1) - clean).pow(2).sum(dim=-1)
    rank = numerical_rank(singular)
    # A locally constant network (every ReLU gate shut) has J = 0: no entropy, all bounds 0.
    alive = singular[:, 0] > 0
    erank = torch.full_like(top2, math.nan)
    entropy = torch.full_like(top2, math.nan)
    srank = torch.full_like(top2, math.nan)
    if bool(alive.any()):
        erank[alive] = effective_rank(singular[alive])
        entropy[alive] = spectral_entropy(singular[alive])
        srank[alive] = stable_rank(singular[alive])
    variance = sigma ** 2
    mc = squared.mean(dim=0)
    se = squared.std(dim=0) / math.sqrt(num_samples)
    entropy_bound = torch.where(alive, variance * top2 * erank, 0.0)
    return TypicalSensitivityCheck(
        mc, se, variance * singular.pow(2).sum(dim=1), entropy_bound,
        variance * top2 * rank.to(top2.dtype), variance * d * top2, srank, erank, rank, entropy,
        entropy_bound / mc, float(sigma), num_samples,
        mc - 3.0 * se <= entropy_bound)


@dataclass(frozen=True)
class ParameterSensitivityCheck(PerSampleResult):
    """R4 on a batch, per sample.

    ``output_change``: the largest ``‖f_{θ+Δ}(x) − f_θ(x)‖`` over ``num_directions`` random Δ
    with ``‖Δ‖ = radius``; ``bound = ‖∇_θ f(x)‖₂ · radius`` (first order), ``sup_bound`` the
    same with the sup over the batch, ``slack = bound / output_change``. ``top_direction_ratio``:
    change along the top right singular vector of ``∇_θ f(x)`` ÷ bound (→ 1 as radius → 0:
    the bound is tight). ``identity_error = |‖∇_θ f‖₂² − λ_max(K_xx)| / λ_max(K_xx)``.
    """

    param_jacobian_norm: torch.Tensor
    ntk_block_lambda_max: torch.Tensor
    identity_error: torch.Tensor
    output_change: torch.Tensor
    bound: torch.Tensor
    sup_bound: float
    slack: torch.Tensor
    top_direction_ratio: torch.Tensor
    radius: float
    num_directions: int
    holds: torch.Tensor


def _perturbed_outputs(model: nn.Module, inputs: torch.Tensor,
                       deltas: torch.Tensor) -> torch.Tensor:
    """``f_{θ+Δ_k}(x_i)`` for flat parameter offsets Δ (K, p): shape (K, n, C)."""
    params, f = functional(model)
    sizes = [p.numel() for p in params.values()]

    def shifted(delta: torch.Tensor) -> torch.Tensor:
        parts = torch.split(delta, sizes)
        moved = {k: p + part.view_as(p) for (k, p), part in zip(params.items(), parts)}
        return functional_call(model, moved, (inputs,))

    with torch.no_grad():
        return vmap(shifted)(deltas)


def check_parameter_sensitivity(model: nn.Module, inputs: torch.Tensor, *, radius: float = 1e-3,
                                num_directions: int = 8,
                                generator: torch.Generator | None = None, seed: int = 0
                                ) -> ParameterSensitivityCheck:
    """R4: ``‖f_{θ+Δ}(x) − f_θ(x)‖ ≤ ‖∇_θ f(x)‖₂ ‖Δ‖ + O(‖Δ‖²)`` and ``‖∇_θ f(x)‖₂² = λ_max(K_xx)``.

    The first is Taylor's theorem in θ; the second holds because the per-sample NTK block
    ``K_xx = ∇_θ f(x) ∇_θ f(x)ᵀ`` (C×C) has the squared singular values of ``∇_θ f(x)`` as its
    eigenvalues. ``holds`` asks both: the largest random-direction change within the
    first-order bound, and the identity to 1e-8 relative. Our reconstruction (R4).

    Args:
        radius: ``‖Δ‖₂``, small so that first order dominates. Default: 1e-3.
        num_directions: random directions Δ (shared by all samples). Default: 8.
        generator: for the directions.
        seed: seeds a fresh generator when ``generator`` is None. Default: 0.

    Cost: the per-sample parameter Jacobians (n·C reverse passes) and the nC×nC block NTK.
    """
    generator = resolve_generator(generator, seed)
    if not radius > 0 or num_directions < 1:
        raise ValueError(f"radius={radius!r} must be positive and num_directions="
                         f"{num_directions} at least 1.")
    jacobian = parameter_jacobian(model, inputs)
    n, num_classes, p = jacobian.shape
    _, singular, right = torch.linalg.svd(jacobian, full_matrices=False)
    norm = singular[:, 0]
    gram = ntk_gram(model, inputs, block=True).view(n, num_classes, n, num_classes)
    blocks = gram[torch.arange(n), :, torch.arange(n), :]
    lambda_max = torch.linalg.eigvalsh(blocks)[:, -1]
    identity_error = (norm ** 2 - lambda_max).abs() / lambda_max
    directions = torch.randn(num_directions, p, generator=generator, dtype=jacobian.dtype,
                             device=generator.device)
    directions = radius * directions / directions.norm(dim=1, keepdim=True)
    with torch.no_grad():
        clean = model(inputs)
    changes = (_perturbed_outputs(model, inputs, directions.to(jacobian.device)) - clean)
    change = changes.norm(dim=-1).amax(dim=0)
    top = _perturbed_outputs(model, inputs, radius * right[:, 0])        # (n, n, C)
    top_change = (top[torch.arange(n), torch.arange(n)] - clean).norm(dim=-1)
    bound = norm * radius
    holds = (change <= bound) & (identity_error <= 1e-8)
    return ParameterSensitivityCheck(norm, lambda_max, identity_error, change, bound,
                                     float(norm.max()) * radius, bound / change,
                                     top_change / bound, float(radius), num_directions, holds)
