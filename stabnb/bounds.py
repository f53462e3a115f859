"""Numerical checks of the reconstructed results R1–R6 on random networks.

Every statement checked here is **our reconstruction** (``/work/shared/PAPER.md``), not a
quotation of Katende (2026), whose exact theorems are not available offline:

- R1: ``J_f(x) = W_L D_{L−1}(x) W_{L−1} ⋯ D_1(x) W_1`` (weights and activation gates; a
  convolution is a linear map, max-pooling a data-dependent 0/1 selection);
- R2: ``‖J_f(x)‖₂ ≤ L_σ^{L−1} Π‖W_i‖₂`` and ``‖f(x+δ) − f(x)‖ ≤ sup_t ‖J_f(x+tδ)‖₂ ‖δ‖``;
- R3: ``E‖Jξ‖² = σ²‖J‖_F² ≤ σ²‖J‖₂² exp(H(J)) ≤ σ²‖J‖₂² rank J ≤ σ² d ‖J‖₂²`` for ξ ~ N(0, σ²I);
- R4: ``‖f_{θ+Δ}(x) − f_θ(x)‖ ≲ ‖∇_θ f(x)‖₂ ‖Δ‖`` and ``‖∇_θ f(x)‖₂² = λ_max(K_xx)``;
- R5: ``‖a_c(x)‖ ≤ ‖J_f(x)‖₂`` and ``‖a_c(x+δ) − a_c(x)‖ ≤ β‖δ‖`` (smooth σ), jumps for ReLU;
- R6: Integrated Gradients completeness, ``‖IG‖₂ ≤ ‖x − x'‖_∞ sup_α ‖J_f(x_α)‖₂`` and a
  perturbation bound from ``sup‖J_f‖₂`` and β.

Each ``check_*`` function takes a model and a batch of inputs and returns a frozen dataclass
of per-sample tensors: the actual value, the bound, ``slack = bound / actual`` and ``holds``.
:func:`random_networks` draws the family of networks the checks run over and
:func:`check_family` runs one check over a family, as tidy per-sample records.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from captum.attr import IntegratedGradients
from captum.attr._utils.approximation_methods import approximation_parameters
from torch import nn
from torch.func import functional_call, jacrev, vmap

from .checks import check_finite, require_eval_mode
from .models import ACTIVATIONS, MLP, Normalize, SmallCNN, functional
from .operators import (input_jacobian_singular_values, input_jacobians, ntk_gram,
                        parameter_jacobian)
from .progress import progress
from .summaries import effective_rank, numerical_rank, spectral_entropy, stable_rank

__all__ = [
    "Factor", "ProductRepresentation", "weight_gate_product", "layerwise_bound",
    "RandomNetwork", "random_networks", "FamilyCheck", "check_family",
    "ProductCheck", "check_product_representation",
    "ForwardSensitivityCheck", "check_forward_sensitivity",
    "TypicalSensitivityCheck", "check_typical_sensitivity",
    "ParameterSensitivityCheck", "check_parameter_sensitivity",
    "SaliencyCheck", "check_saliency",
    "CompletenessCheck", "check_ig_completeness",
    "IntegratedGradientsCheck", "check_integrated_gradients",
]

# sup_z |σ'(z)| for the activations of stabnb.models.ACTIVATIONS (closed forms; GELU's maximum
# sits at z = √2, SiLU's at the root z ≈ 2.3994 of 2 + z(1 − 2s(z)) = 0).
_LIPSCHITZ = {
    nn.ReLU: 1.0,
    nn.Tanh: 1.0,
    nn.Sigmoid: 0.25,
    nn.Softplus: 1.0,
    nn.GELU: 0.5 * (1.0 + math.erf(1.0)) + math.exp(-1.0) / math.sqrt(math.pi),
    nn.SiLU: 1.099839320128867,
}
_SMOOTH = (nn.Tanh, nn.Sigmoid, nn.Softplus, nn.GELU, nn.SiLU)
_AFFINE = (nn.Linear, nn.Conv2d, nn.AvgPool2d, Normalize)
_SHAPE_ONLY = (nn.Flatten, nn.Identity)
# Relative float-rounding tolerance for "the same value" (two evaluations of one function
# through differently batched kernels); far above float64 rounding, far below any real jump.
_ROUNDING_RTOL = 1e-9


def _gate(layer: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """σ'(z) elementwise, in closed form (what autograd gives, ReLU'(0) = 0 included)."""
    if isinstance(layer, nn.ReLU):
        return (z > 0).to(z.dtype)
    if isinstance(layer, nn.Tanh):
        return 1.0 - torch.tanh(z) ** 2
    if isinstance(layer, nn.Sigmoid):
        s = torch.sigmoid(z)
        return s * (1.0 - s)
    if isinstance(layer, nn.Softplus):
        scaled = layer.beta * z
        return torch.where(scaled > layer.threshold, torch.ones_like(z), torch.sigmoid(scaled))
    if isinstance(layer, nn.GELU):
        if layer.approximate != "none":
            raise ValueError(f"GELU(approximate={layer.approximate!r}) has no closed-form gate "
                             "here; use nn.GELU() (the exact erf form).")
        density = torch.exp(-0.5 * z ** 2) / math.sqrt(2.0 * math.pi)
        return 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0))) + z * density
    s = torch.sigmoid(z)  # SiLU
    return s * (1.0 + z * (1.0 - s))


def _chain(model: nn.Module) -> list[nn.Module]:
    """The layers of a feed-forward model, in order; ValueError for anything else."""
    if isinstance(model, (MLP, SmallCNN)):
        stack = [model.normalize, model.net]
    elif isinstance(model, nn.Sequential):
        stack = [model]
    else:
        raise ValueError(f"the weight-and-gate product needs a feed-forward chain (MLP, SmallCNN "
                         f"or nn.Sequential); got {type(model).__name__}. Residual models such as "
                         "ResNet20 are not a single product of layers.")
    layers: list[nn.Module] = []
    while stack:
        layer = stack.pop(0)
        if isinstance(layer, nn.Sequential):
            stack = list(layer) + stack
            continue
        supported = _AFFINE + _SHAPE_ONLY + tuple(_LIPSCHITZ) + (nn.MaxPool2d,)
        if not isinstance(layer, supported):
            raise ValueError(f"layer {type(layer).__name__} is not supported by the weight-and-"
                             "gate product; supported: Linear, Conv2d (zero padding), AvgPool2d, "
                             "MaxPool2d, Flatten, Normalize and the activations "
                             f"{sorted(ACTIVATIONS)}.")
        if isinstance(layer, nn.Conv2d) and layer.padding_mode != "zeros":
            raise ValueError(f"Conv2d(padding_mode={layer.padding_mode!r}) is not supported; "
                             "use padding_mode='zeros'.")
        layers.append(layer)
    return layers


def _affine_matrix(layer: nn.Module, shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    """The matrix A of an affine layer y = A x + b on inputs of ``shape`` (no batch dim)."""
    if isinstance(layer, nn.Linear):
        return layer.weight.detach().to(like.dtype)
    size = math.prod(shape)
    basis = torch.eye(size, dtype=like.dtype, device=like.device).view(size, *shape)
    if isinstance(layer, nn.Conv2d):
        columns = F.conv2d(basis, layer.weight.detach().to(like.dtype), None, layer.stride,
                           layer.padding, layer.dilation, layer.groups)
    else:  # Normalize, AvgPool2d: apply to the basis and remove the offset b = f(0).
        columns = layer(basis) - layer(torch.zeros_like(basis[:1]))
    return columns.reshape(size, -1).T


def _selection(layer: nn.MaxPool2d, z: torch.Tensor) -> torch.Tensor:
    """Per-sample 0/1 matrix S(x) with maxpool(z) = S(x) z (flattened), shape (n, m_out, m_in)."""
    _, index = F.max_pool2d(z, layer.kernel_size, layer.stride, layer.padding, layer.dilation,
                            layer.ceil_mode, return_indices=True)
    n, channels, height, width = z.shape
    rows = index[0].numel()
    offset = torch.arange(channels, device=z.device).view(1, channels, 1, 1) * height * width
    columns = (index + offset).reshape(n, rows)
    selection = torch.zeros(n, rows, z[0].numel(), dtype=z.dtype, device=z.device)
    selection.scatter_(2, columns.unsqueeze(-1), 1.0)
    return selection


def _selection_norm(layer: nn.MaxPool2d) -> float:
    """sup_x ‖S(x)‖₂ ≤ √(max windows covering one input) = √(Π⌈k_i/s_i⌉)."""
    pair = (lambda v: (v, v) if isinstance(v, int) else tuple(v))
    kernel, stride, dilation = pair(layer.kernel_size), pair(layer.stride), pair(layer.dilation)
    overlap = math.prod(math.ceil(((k - 1) * d + 1) / s) for k, s, d in zip(kernel, stride,
                                                                          dilation))
    return math.sqrt(overlap)


@dataclass(frozen=True)
class Factor:
    """One factor of the product: a fixed ``weight`` matrix, a diagonal ``gate`` or a ``selection``.

    ``matrix`` is (m_out, m_in) for a weight, (n, m) (the diagonal) for a gate and
    (n, m_out, m_in) for a max-pool selection.
    """

    name: str
    kind: str
    matrix: torch.Tensor

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "shape": list(self.matrix.shape)}


@dataclass(frozen=True)
class ProductRepresentation:
    """R1: ``J_f(x) = F_K(x) ⋯ F_1(x)``: explicit factors and their product (n, C, *in_shape)."""

    factors: tuple[Factor, ...]
    jacobian: torch.Tensor

    def to_dict(self) -> dict[str, Any]:
        return {"factors": [f.to_dict() for f in self.factors],
                "jacobian_shape": list(self.jacobian.shape)}


def weight_gate_product(model: nn.Module, inputs: torch.Tensor) -> ProductRepresentation:
    """Build ``J_f(x) = W_L D_{L−1}(x) W_{L−1} ⋯ D_1(x) W_1`` explicitly, without autograd (R1).

    Weights are the layers' matrices (a convolution as its dense Toeplitz matrix, the input
    normalisation as a diagonal); gates are ``D_i(x) = diag(σ'(z_i(x)))`` in closed form at
    the pre-activations; max-pooling is the 0/1 matrix selecting each window's maximum.
    Our reconstruction (R1); exact wherever no pre-activation sits on a ReLU kink.

    Cost: one forward pass plus dense products of size (n, m_i, d); meant for small nets.

    Args:
        model: an :class:`~stabnb.models.MLP`, :class:`~stabnb.models.SmallCNN` or
            ``nn.Sequential`` of supported layers, in eval mode.
        inputs: a batch (n, *input_shape).

    Returns:
        :class:`ProductRepresentation` with the factors in application order.

    Raises:
        ValueError: an unsupported model or layer, or non-finite inputs.

    Examples::

        >>> model = MLP(4, (6,), 3).double().eval()
        >>> x = torch.rand(5, 4, dtype=torch.float64)
        >>> product = weight_gate_product(model, x)
        >>> [f.kind for f in product.factors]
        ['weight', 'weight', 'gate', 'weight']
        >>> torch.allclose(product.jacobian, input_jacobians(model, x))
        True
    """
    require_eval_mode(model)
    check_finite(inputs, "inputs")
    parameter = next(model.parameters())
    inputs = inputs.detach().to(dtype=parameter.dtype, device=parameter.device)
    n = inputs.shape[0]
    factors: list[Factor] = []
    current = inputs
    product: torch.Tensor | None = None
    with torch.no_grad():
        for position, layer in enumerate(_chain(model)):
            name = f"{position}:{type(layer).__name__}"
            if isinstance(layer, _AFFINE):
                factor = Factor(name, "weight", _affine_matrix(layer, current.shape[1:], current))
                product = factor.matrix if product is None else factor.matrix @ product
            elif isinstance(layer, nn.MaxPool2d):
                factor = Factor(name, "selection", _selection(layer, current))
                product = factor.matrix @ product if product is not None else factor.matrix
            elif isinstance(layer, _SHAPE_ONLY):
                current = layer(current)
                continue
            else:
                factor = Factor(name, "gate", _gate(layer, current).reshape(n, -1))
                start = torch.eye(factor.matrix.shape[1], dtype=current.dtype,
                                  device=current.device)
                product = factor.matrix.unsqueeze(-1) * (start if product is None else product)
            factors.append(factor)
            current = layer(current)
    jacobian = product.expand(n, *product.shape[-2:])
    return ProductRepresentation(tuple(factors), jacobian.reshape(n, -1, *inputs.shape[1:]))


def layerwise_bound(model: nn.Module, input_shape: Sequence[int]) -> float:
    """R2: ``Π_i ‖W_i‖₂ · Π_gates L_σ`` (= ``L_σ^{L−1} Π‖W_i‖₂`` for an MLP), ≥ sup_x ‖J_f(x)‖₂.

    ``‖W_i‖₂`` is the spectral norm of each linear map (of the convolution operator, not of the
    reshaped kernel), ``L_σ = sup|σ'|`` for each activation and ``√(max window overlap)`` for
    max-pooling. Our reconstruction (R2).

    Args:
        model: a feed-forward model as for :func:`weight_gate_product`.
        input_shape: the shape of one input, e.g. ``(1, 8, 8)`` or ``(32,)``.
    """
    parameter = next(model.parameters())
    current = torch.zeros(1, *input_shape, dtype=parameter.dtype, device=parameter.device)
    bound = 1.0
    with torch.no_grad():
        for layer in _chain(model):
            if isinstance(layer, _AFFINE):
                matrix = _affine_matrix(layer, current.shape[1:], current)
                bound *= float(torch.linalg.matrix_norm(matrix, ord=2))
            elif isinstance(layer, nn.MaxPool2d):
                bound *= _selection_norm(layer)
            elif not isinstance(layer, _SHAPE_ONLY):
                bound *= _LIPSCHITZ[type(layer)]
            current = layer(current)
    return bound


# --- results -----------------------------------------------------------------------------


class _Result:
    """to_dict() and per-sample records() for the frozen check dataclasses below."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    def records(self) -> list[dict[str, Any]]:
        """One dict per sample: every per-sample (n,) field plus the scalar settings."""
        per_sample = {f.name: getattr(self, f.name) for f in fields(self)
                      if isinstance(getattr(self, f.name), torch.Tensor)
                      and getattr(self, f.name).dim() == 1}
        scalars = {f.name: getattr(self, f.name) for f in fields(self)
                   if isinstance(getattr(self, f.name), (int, float, str, bool))}
        n = len(next(iter(per_sample.values())))
        return [{"sample": i, **scalars, **{k: v[i].item() for k, v in per_sample.items()}}
                for i in range(n)]


def _plain(value: Any) -> Any:
    return value.tolist() if isinstance(value, torch.Tensor) else value


@dataclass(frozen=True)
class ProductCheck(_Result):
    """R1 on a batch: explicit product against the autograd Jacobian, per sample.

    ``holds`` means relative Frobenius error ≤ ``tolerance`` (1000 machine epsilons).
    """

    relative_error: torch.Tensor
    max_abs_error: torch.Tensor
    jacobian_norm: torch.Tensor
    num_weights: int
    num_gates: int
    num_selections: int
    tolerance: float
    holds: torch.Tensor


def check_product_representation(model: nn.Module, inputs: torch.Tensor) -> ProductCheck:
    """R1: compare :func:`weight_gate_product` with the exact autograd Jacobian.

    Reports ``‖J_explicit − J_autograd‖_F / ‖J_autograd‖_F`` (the absolute error where
    ``J_autograd = 0``) and the largest entrywise difference per sample; the product holds when
    the relative error is at float rounding (≤ 1000 ε of the dtype: 2.2e-13 in float64).
    """
    representation = weight_gate_product(model, inputs)
    reference = input_jacobians(model, inputs).detach()
    difference = (representation.jacobian - reference).flatten(1)
    norm = reference.flatten(1).norm(dim=1)
    # A locally constant network (every ReLU gate shut) has J = 0; compare absolutely there.
    relative = difference.norm(dim=1) / torch.where(norm > 0, norm, 1.0)
    tolerance = 1e3 * torch.finfo(inputs.dtype).eps
    kinds = [f.kind for f in representation.factors]
    return ProductCheck(relative, difference.abs().amax(dim=1), norm, kinds.count("weight"),
                        kinds.count("gate"), kinds.count("selection"), tolerance,
                        relative <= tolerance)


def _directions(inputs: torch.Tensor, radius: float, generator: torch.Generator | None
                ) -> torch.Tensor:
    """Uniformly random directions scaled to ‖δ‖₂ = radius, one per sample."""
    if not radius > 0:
        raise ValueError(f"radius={radius!r} must be positive, e.g. 0.05 (pixel units).")
    noise = torch.randn(inputs.shape, generator=generator, dtype=inputs.dtype,
                        device="cpu" if generator is None else generator.device)
    noise = noise.to(inputs.device)
    return radius * noise / noise.flatten(1).norm(dim=1).view(-1, *[1] * (inputs.dim() - 1))


def _path_points(inputs: torch.Tensor, delta: torch.Tensor, num_points: int) -> torch.Tensor:
    """x + tδ for t on a uniform grid of ``num_points`` in [0, 1], shape (num_points, n, ...)."""
    if num_points < 2:
        raise ValueError(f"num_path_points={num_points} must be at least 2 (both endpoints).")
    t = torch.linspace(0.0, 1.0, num_points, dtype=inputs.dtype, device=inputs.device)
    return inputs.unsqueeze(0) + t.view(-1, *[1] * inputs.dim()) * delta.unsqueeze(0)


def _top_singular_value(model: nn.Module, points: torch.Tensor) -> torch.Tensor:
    """‖J_f(p)‖₂ for a stack of point batches (T, n, ...) -> (T, n)."""
    flat = points.reshape(-1, *points.shape[2:])
    return input_jacobian_singular_values(model, flat)[:, 0].view(points.shape[:2])


@dataclass(frozen=True)
class ForwardSensitivityCheck(_Result):
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
                              generator: torch.Generator | None = None
                              ) -> ForwardSensitivityCheck:
    """R2: ``‖J_f(x)‖₂ ≤ L_σ^{L−1} Π‖W_i‖₂`` and ``‖f(x+δ) − f(x)‖ ≤ sup_t ‖J_f(x+tδ)‖₂ ‖δ‖``.

    The second is the mean value inequality, ``f(x+δ) − f(x) = ∫₀¹ J_f(x+tδ) δ dt``; the sup
    is taken over a uniform grid of t (an estimate of the sup, from below). δ is uniformly
    random on the sphere of radius ``radius``. Our reconstruction (R2).

    Cost: ``num_path_points`` Jacobian spectra per sample.
    """
    delta = _directions(inputs, radius, generator)
    bound = layerwise_bound(model, inputs.shape[1:])
    path_norms = _top_singular_value(model, _path_points(inputs, delta, num_path_points))
    jacobian_norm = path_norms[0]
    with torch.no_grad():
        change = (model(inputs + delta) - model(inputs)).norm(dim=1)
    delta_norm = delta.flatten(1).norm(dim=1)
    path_sup = path_norms.amax(dim=0)
    path_bound = path_sup * delta_norm
    holds = (jacobian_norm <= bound) & (change <= path_bound)
    return ForwardSensitivityCheck(jacobian_norm, bound, bound / jacobian_norm, change,
                                   delta_norm, path_sup, path_bound, path_bound / change,
                                   float(radius), num_path_points, holds)


@dataclass(frozen=True)
class TypicalSensitivityCheck(_Result):
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
                              generator: torch.Generator | None = None
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

    Cost: n·K forward passes and one Jacobian spectrum per sample.
    """
    if not sigma > 0 or num_samples < 2:
        raise ValueError(f"sigma={sigma!r} must be positive and num_samples={num_samples} at "
                         "least 2 (for a standard error).")
    singular = input_jacobian_singular_values(model, inputs)
    top2 = singular[:, 0] ** 2
    n, d = inputs.shape[0], inputs[0].numel()
    noise = torch.randn((num_samples, *inputs.shape), generator=generator, dtype=inputs.dtype,
                        device="cpu" if generator is None else generator.device)
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
class ParameterSensitivityCheck(_Result):
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
                                generator: torch.Generator | None = None
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

    Cost: the per-sample parameter Jacobians (n·C reverse passes) and the nC×nC block NTK.
    """
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
                             device="cpu" if generator is None else generator.device)
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


def _target_indices(model: nn.Module, inputs: torch.Tensor,
                    target: int | torch.Tensor | None) -> torch.Tensor:
    """Per-sample class indices (n,): the given int or tensor, or the predicted class."""
    n = inputs.shape[0]
    if target is None:
        with torch.no_grad():
            return model(inputs).argmax(dim=1)
    if isinstance(target, int):
        return torch.full((n,), target, dtype=torch.long, device=inputs.device)
    target = torch.as_tensor(target, device=inputs.device).long()
    if target.shape != (n,):
        raise ValueError(f"target must be an int, None or a tensor of shape ({n},); got shape "
                         f"{tuple(target.shape)}.")
    return target


def _input_hessian_norms(model: nn.Module, points: torch.Tensor,
                         target: torch.Tensor) -> torch.Tensor:
    """``‖∇²_x f_c(p)‖₂`` per point (n,) with its own class c, by dense ``hessian`` (d×d)."""
    params, f = functional(model)

    def logit(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return f(params, x.unsqueeze(0))[0].gather(0, c.view(1))[0]

    matrices = vmap(jacrev(jacrev(logit)))(points, target)
    d = points[0].numel()
    return torch.linalg.eigvalsh(matrices.reshape(-1, d, d)).abs().amax(dim=1)


def _activation_pattern(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """Signs of every activation's pre-activation, flattened (n, m) (the ReLU gate pattern)."""
    patterns = []
    current = inputs
    with torch.no_grad():
        for layer in _chain(model):
            if type(layer) in _LIPSCHITZ:
                patterns.append((current > 0).reshape(current.shape[0], -1))
            current = layer(current)
    return torch.cat(patterns, dim=1) if patterns else inputs.new_zeros(inputs.shape[0], 0)


@dataclass(frozen=True)
class SaliencyCheck(_Result):
    """R5 on a batch, per sample (one random δ with ‖δ‖ = radius each).

    Norm bound: ``saliency_norm = ‖a_c(x)‖ ≤ jacobian_norm = ‖J_f(x)‖₂`` (``norm_slack``).
    Smooth σ: ``change = ‖a_c(x+δ) − a_c(x)‖ ≤ beta·‖δ‖`` with ``beta = max_t ‖∇²_x f_c(x+tδ)‖₂``
    (``change_slack``). ReLU: ``gate_flips`` gates change sign between x and x+δ; with none
    the saliency is constant (``change`` at rounding level), with some it jumps although
    ∇²f_c = 0 wherever it exists (``beta`` and its bound are NaN: no finite β exists).
    """

    saliency_norm: torch.Tensor
    jacobian_norm: torch.Tensor
    norm_slack: torch.Tensor
    change: torch.Tensor
    relative_change: torch.Tensor
    beta: torch.Tensor
    lipschitz_bound: torch.Tensor
    change_slack: torch.Tensor
    gate_flips: torch.Tensor
    target: torch.Tensor
    smooth: bool
    radius: float
    num_path_points: int
    holds: torch.Tensor


def check_saliency(model: nn.Module, inputs: torch.Tensor,
                   target: int | torch.Tensor | None = None, *, radius: float = 0.05,
                   num_path_points: int = 5,
                   generator: torch.Generator | None = None) -> SaliencyCheck:
    """R5: saliency ``a_c(x) = J_f(x)ᵀe_c`` is bounded by ``‖J_f(x)‖₂`` and β-Lipschitz in x.

    ``‖a_c‖ = ‖J_fᵀe_c‖ ≤ ‖J_f‖₂‖e_c‖``. For smooth σ, ``a_c(x+δ) − a_c(x) = ∫₀¹ ∇²f_c(x+tδ)δ dt``,
    so ``‖a_c(x+δ) − a_c(x)‖ ≤ sup_t ‖∇²_x f_c(x+tδ)‖₂ ‖δ‖`` (β estimated on a grid of
    ``num_path_points`` values of t). For ReLU, ``f_c`` is piecewise linear: ``∇²f_c = 0`` almost
    everywhere and the saliency is piecewise constant, jumping where gates flip. ``holds``:
    the norm bound, and for smooth σ the β bound, for ReLU "no flip ⇒ no change".
    Our reconstruction (R5).

    Args:
        target: class index c (int or (n,) tensor). Default: the predicted class.
        radius: ``‖δ‖₂`` in pixel units. Default: 0.05.
        num_path_points: grid points for β (smooth σ only). Default: 5.
        generator: for δ.

    Cost: two Jacobians per sample, and (smooth σ) ``num_path_points`` dense d×d input
    Hessians per sample: meant for small d.
    """
    layers = _chain(model)
    activations = [layer for layer in layers if type(layer) in _LIPSCHITZ]
    smooth = all(isinstance(layer, _SMOOTH) for layer in activations)
    relu_only = all(isinstance(layer, nn.ReLU) for layer in activations)
    if not (smooth or relu_only) or any(isinstance(layer, nn.MaxPool2d) for layer in layers):
        raise ValueError("check_saliency needs all-smooth or all-ReLU activations and no "
                         "max-pooling; got layers " + ", ".join(type(m).__name__ for m in layers))
    target = _target_indices(model, inputs, target)
    delta = _directions(inputs, radius, generator)
    n = inputs.shape[0]
    jacobians = input_jacobians(model, torch.cat([inputs, inputs + delta])).flatten(2)
    rows = torch.arange(n, device=inputs.device)
    saliency, moved = jacobians[:n][rows, target], jacobians[n:][rows, target]
    saliency_norm = saliency.norm(dim=1)
    jacobian_norm = torch.linalg.matrix_norm(jacobians[:n], ord=2)
    change = (moved - saliency).norm(dim=1)
    flips = (_activation_pattern(model, inputs) != _activation_pattern(model, inputs + delta))
    flips = flips.sum(dim=1)
    if smooth:
        points = _path_points(inputs, delta, num_path_points).reshape(-1, *inputs.shape[1:])
        beta = _input_hessian_norms(model, points, target.repeat(num_path_points))
        beta = beta.view(num_path_points, n).amax(dim=0)
    else:
        beta = torch.full_like(change, float("nan"))
    bound = beta * delta.flatten(1).norm(dim=1)
    holds = saliency_norm <= jacobian_norm
    if smooth:
        holds &= change <= bound
    else:
        holds &= (flips > 0) | (change <= _ROUNDING_RTOL * saliency_norm)
    return SaliencyCheck(saliency_norm, jacobian_norm, jacobian_norm / saliency_norm, change,
                         change / saliency_norm, beta, bound, bound / change, flips, target,
                         smooth, float(radius), num_path_points, holds)


def _smooth_chain(layers: list[nn.Module]) -> bool:
    """True when every activation is smooth and nothing is piecewise (no ReLU, no max-pool)."""
    return all(isinstance(layer, _SMOOTH) for layer in layers
               if type(layer) in _LIPSCHITZ or isinstance(layer, nn.MaxPool2d))


def _baselines(inputs: torch.Tensor, baselines: torch.Tensor | None) -> torch.Tensor:
    if baselines is None:
        return torch.zeros_like(inputs)
    if baselines.shape != inputs.shape:
        raise ValueError(f"baselines must have the inputs' shape {tuple(inputs.shape)}; got "
                         f"{tuple(baselines.shape)}. Default: None (zeros).")
    return baselines


@dataclass(frozen=True)
class CompletenessCheck(_Result):
    """R6 completeness on a batch: ``error = |Σ_i IG_i − (f_c(x) − f_c(x'))|`` per sample.

    ``relative_error = error / |f_c(x) − f_c(x')|``; the error is the quadrature's, so it is
    reported with the ``n_steps`` and ``method`` that produced it.
    """

    error: torch.Tensor
    relative_error: torch.Tensor
    output_difference: torch.Tensor
    target: torch.Tensor
    n_steps: int
    method: str


def check_ig_completeness(model: nn.Module, inputs: torch.Tensor,
                          target: int | torch.Tensor | None = None, *,
                          baselines: torch.Tensor | None = None, n_steps: int = 64,
                          method: str = "gausslegendre") -> CompletenessCheck:
    """R6: Integrated Gradients completeness ``Σ_i IG_i(x) = f_c(x) − f_c(x')``, via Captum.

    Exact for the path integral (fundamental theorem of calculus along ``x' + α(x − x')``);
    Captum's quadrature adds an error that falls fast with ``n_steps`` for smooth σ and only
    like 1/n_steps for ReLU, whose integrand is piecewise constant in α.

    Args:
        target: class index (int or (n,) tensor). Default: the predicted class.
        baselines: x'. Default: zeros (a black image).
        n_steps, method: Captum's quadrature. Default: 64, ``"gausslegendre"``.
    """
    _chain(model)
    target = _target_indices(model, inputs, target)
    baselines = _baselines(inputs, baselines)
    _, delta = IntegratedGradients(model).attribute(
        inputs, baselines, target=target, n_steps=n_steps, method=method,
        return_convergence_delta=True)
    with torch.no_grad():
        logits = model(torch.cat([inputs, baselines]))
    n = inputs.shape[0]
    rows = torch.arange(n, device=inputs.device)
    difference = logits[:n][rows, target] - logits[n:][rows, target]
    error = delta.detach().abs()
    return CompletenessCheck(error, error / difference.abs(), difference, target, n_steps,
                             method)


@dataclass(frozen=True)
class IntegratedGradientsCheck(_Result):
    """R6 bounds on a batch, per sample (baseline x', quadrature nodes α_k with weights w_k).

    ``norm_bound = ‖x − x'‖_∞ · max_k ‖J_f(x_{α_k})‖₂ ≥ ig_norm`` (``norm_slack``);
    ``change = ‖IG(x+δ) − IG(x)‖ ≤ perturbation_bound = ‖δ‖_∞ G + ‖x − x'‖_∞ ᾱ β ‖δ‖₂`` with G
    the max of ‖J_f‖₂ on the perturbed path, β of ‖∇²_x f_c‖₂ on both paths and ᾱ = Σ w_k α_k
    (smooth σ only; NaN for ReLU, where β = 0 says nothing).
    """

    ig_norm: torch.Tensor
    path_jacobian_sup: torch.Tensor
    norm_bound: torch.Tensor
    norm_slack: torch.Tensor
    change: torch.Tensor
    relative_change: torch.Tensor
    beta: torch.Tensor
    perturbation_bound: torch.Tensor
    perturbation_slack: torch.Tensor
    target: torch.Tensor
    smooth: bool
    n_steps: int
    method: str
    radius: float
    holds: torch.Tensor


def check_integrated_gradients(model: nn.Module, inputs: torch.Tensor,
                               target: int | torch.Tensor | None = None, *,
                               baselines: torch.Tensor | None = None, n_steps: int = 32,
                               method: str = "gausslegendre", radius: float = 0.05,
                               generator: torch.Generator | None = None
                               ) -> IntegratedGradientsCheck:
    """R6: ``‖IG(x)‖₂ ≤ ‖x − x'‖_∞ sup_α ‖J_f(x_α)‖₂`` and a perturbation bound from it and β.

    IG (Captum, Sundararajan et al. 2017) is ``IG(x) = (x − x') ⊙ ḡ(x)`` with
    ``ḡ(x) = Σ_k w_k ∇f_c(x_{α_k})`` and ``x_α = x' + α(x − x')``. Since ``Σ w_k = 1``,
    ``‖IG‖₂ ≤ ‖x − x'‖_∞ max_k ‖∇f_c(x_{α_k})‖ ≤ ‖x − x'‖_∞ max_k ‖J_f(x_{α_k})‖₂``. Writing
    ``IG(x+δ) − IG(x) = δ ⊙ ḡ(x+δ) + (x − x') ⊙ (ḡ(x+δ) − ḡ(x))`` with
    ``‖ḡ(x+δ) − ḡ(x)‖ ≤ Σ_k w_k α_k β ‖δ‖`` gives the perturbation bound (smooth σ). β is the
    largest ‖∇²_x f_c‖₂ at the quadrature nodes of both paths (an estimate of the sup).
    ``holds``: the norm bound and (smooth σ) the perturbation bound. Completeness:
    :func:`check_ig_completeness`. Our reconstruction (R6).

    Args:
        target: class index (int or (n,) tensor). Default: the predicted class.
        baselines: x'. Default: zeros (a black image).
        n_steps, method: Captum's quadrature. Default: 32, ``"gausslegendre"``.
        radius: ``‖δ‖₂`` for the perturbation bound. Default: 0.05.
        generator: for δ.

    Cost: 2·n_steps gradients and Jacobian spectra per sample, and (smooth σ) 2·n_steps dense
    d×d input Hessians per sample: meant for small d.
    """
    smooth = _smooth_chain(_chain(model))
    target = _target_indices(model, inputs, target)
    baselines = _baselines(inputs, baselines)
    delta = _directions(inputs, radius, generator)
    n, trailing = inputs.shape[0], [1] * (inputs.dim() - 1)
    both_inputs = torch.cat([inputs, inputs + delta])
    both_baselines = baselines.repeat(2, *trailing)
    both = IntegratedGradients(model).attribute(both_inputs, both_baselines,
                                                target=target.repeat(2), n_steps=n_steps,
                                                method=method).detach().flatten(1)
    ig, ig_moved = both[:n], both[n:]
    step_sizes, alphas = approximation_parameters(method)
    weights = torch.tensor(step_sizes(n_steps), dtype=inputs.dtype)
    nodes = torch.tensor(alphas(n_steps), dtype=inputs.dtype, device=inputs.device)
    paths = both_baselines.unsqueeze(0) + nodes.view(-1, 1, *trailing) * (
        both_inputs - both_baselines).unsqueeze(0)                      # (n_steps, 2n, ...)
    path_norms = _top_singular_value(model, paths).amax(dim=0)          # (2n,)
    distance = (inputs - baselines).flatten(1).abs().amax(dim=1)
    ig_norm = ig.norm(dim=1)
    norm_bound = distance * path_norms[:n]
    change = (ig_moved - ig).norm(dim=1)
    if smooth:
        beta = _input_hessian_norms(model, paths.reshape(-1, *inputs.shape[1:]),
                                    target.repeat(2 * n_steps))
        beta = beta.view(n_steps, 2, n).amax(dim=(0, 1))
        mean_alpha = float((weights * nodes.cpu()).sum())
        bound = (delta.flatten(1).abs().amax(dim=1) * path_norms[n:]
                 + distance * mean_alpha * beta * delta.flatten(1).norm(dim=1))
    else:
        beta = torch.full_like(change, float("nan"))
        bound = torch.full_like(change, float("nan"))
    holds = ig_norm <= norm_bound
    if smooth:
        holds &= change <= bound
    return IntegratedGradientsCheck(ig_norm, path_norms[:n], norm_bound, norm_bound / ig_norm,
                                    change, change / ig_norm, beta, bound, bound / change,
                                    target, smooth, n_steps, method, float(radius), holds)


# --- random network families -------------------------------------------------------------


@dataclass(frozen=True)
class RandomNetwork:
    """One member of a random family: the model (eval mode) and the cell it was drawn for."""

    model: nn.Module
    input_shape: tuple[int, ...]
    architecture: str
    width: int
    depth: int
    activation: str
    index: int

    def to_dict(self) -> dict[str, Any]:
        return {"architecture": self.architecture, "width": self.width, "depth": self.depth,
                "activation": self.activation, "index": self.index,
                "num_parameters": sum(p.numel() for p in self.model.parameters())}


def random_networks(input_shape: Sequence[int], num_classes: int, *, architecture: str = "mlp",
                    widths: Sequence[int] = (16, 32), depths: Sequence[int] = (1, 2, 3),
                    activations: Sequence[str] = ("relu", "tanh", "gelu"),
                    num_per_cell: int = 1, gain: float = math.sqrt(2.0), bias_std: float = 0.1,
                    generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64,
                    device: str | torch.device = "cpu") -> list[RandomNetwork]:
    """Draw a family of random networks over widths × depths × activations × ``num_per_cell``.

    Weights are i.i.d. ``N(0, gain²/fan_in)`` and biases ``N(0, bias_std²)``, drawn from
    ``generator`` (not the global stream). ``"mlp"``: :class:`~stabnb.models.MLP` with ``depth``
    hidden layers of ``width``; ``"cnn"``: :class:`~stabnb.models.SmallCNN` with ``depth`` conv
    blocks of ``width`` channels (the image side must be divisible by 2^depth) and a hidden
    layer of ``width``.

    Args:
        input_shape: one input's shape, ``(d,)`` or ``(C, H, W)`` (an MLP flattens).
        num_classes: outputs C.
        gain: weight scale; √2 keeps ReLU activations of order one. Default: √2.
        bias_std: bias scale (non-zero biases move the ReLU kinks off the origin). Default: 0.1.
        dtype, device: of the returned models. Default: float64 on the CPU.

    Returns:
        ``len(widths)·len(depths)·len(activations)·num_per_cell`` networks in eval mode.
    """
    shape = tuple(int(s) for s in input_shape)
    unknown = [a for a in activations if a not in ACTIVATIONS]
    if unknown:
        raise ValueError(f"activations {unknown} are unknown; choose from {sorted(ACTIVATIONS)}.")
    if architecture not in ("mlp", "cnn"):
        raise ValueError(f"architecture={architecture!r} is unknown; choose 'mlp' or 'cnn'.")
    if architecture == "cnn" and (len(shape) != 3 or any(shape[1] % 2 ** d for d in depths)):
        raise ValueError(f"architecture='cnn' needs input_shape (C, H, W) with H divisible by "
                         f"2**depth for depths={tuple(depths)}; got {shape}.")
    family = []
    for width in widths:
        for depth in depths:
            for activation in activations:
                for _ in range(num_per_cell):
                    if architecture == "mlp":
                        model = MLP(math.prod(shape), (width,) * depth, num_classes, activation)
                    else:
                        model = SmallCNN(shape[0], num_classes, shape[1], (width,) * depth,
                                         hidden=width, activation=activation)
                    with torch.no_grad():
                        for layer in model.modules():
                            if isinstance(layer, (nn.Linear, nn.Conv2d)):
                                fan_in = layer.weight[0].numel()
                                layer.weight.copy_(torch.randn(layer.weight.shape,
                                                               generator=generator)
                                                   * gain / math.sqrt(fan_in))
                                layer.bias.copy_(torch.randn(layer.bias.shape,
                                                             generator=generator) * bias_std)
                    family.append(RandomNetwork(model.to(device=device, dtype=dtype).eval(),
                                                shape, architecture, width, depth, activation,
                                                len(family)))
    return family


@dataclass(frozen=True)
class FamilyCheck:
    """One check run over a family: tidy per-sample ``records`` (network fields + check fields)."""

    check: str
    records: tuple[dict[str, Any], ...]

    def column(self, name: str, **where: Any) -> torch.Tensor:
        """Values of ``name`` over the records matching ``where`` (e.g. ``activation='relu'``)."""
        rows = [r for r in self.records if all(r[k] == v for k, v in where.items())]
        return torch.tensor([r[name] for r in rows], dtype=torch.float64)

    def grouped(self, name: str, by: str = "activation", **where: Any) -> dict[Any, torch.Tensor]:
        """``{group: column(name)}`` for each value of the record field ``by``, first seen first."""
        groups = dict.fromkeys(r[by] for r in self.records
                               if all(r[k] == v for k, v in where.items()))
        return {g: self.column(name, **{by: g}, **where) for g in groups}

    def per_network(self, name: str, reduce: str = "min", **where: Any) -> torch.Tensor:
        """``name`` reduced over each network's samples: "min", "max", "median" or "all".

        NaN values (a 0/0 slack: actual and bound both vanish, as for a network whose ReLU
        gates are all shut at an input) are left out; a network with no other value gives NaN.
        """
        reducers: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
            "min": torch.min, "max": torch.max, "median": torch.median,
            "all": lambda v: v.bool().all().double()}
        if reduce not in reducers:
            raise ValueError(f"reduce={reduce!r} is unknown; choose from {sorted(reducers)}.")
        networks = sorted({r["index"] for r in self.records
                           if all(r[k] == v for k, v in where.items())})
        reduced = []
        for index in networks:
            values = self.column(name, index=index, **where)
            values = values[~values.isnan()]
            reduced.append(reducers[reduce](values) if values.numel()
                           else torch.tensor(math.nan, dtype=torch.float64))
        return torch.stack(reduced) if reduced else torch.empty(0, dtype=torch.float64)

    def quantiles(self, name: str, q: Sequence[float] = (0.05, 0.25, 0.5, 0.75, 0.95),
                  **where: Any) -> dict[float, float]:
        """Quantiles of ``name`` over the matching records (NaNs dropped; NaN if none is left)."""
        values = self.column(name, **where)
        values = values[~values.isnan()]
        if values.numel() == 0:
            return {float(k): math.nan for k in q}
        return {float(k): float(v) for k, v in zip(q, torch.quantile(values, torch.tensor(
            q, dtype=values.dtype)))}

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.check, "records": list(self.records)}


def check_family(family: Sequence[RandomNetwork], check: Callable[..., _Result], *,
                 num_inputs: int, generator: torch.Generator | None = None,
                 progress_enabled: bool | None = None, **kwargs: Any) -> FamilyCheck:
    """Run ``check(model, inputs, **kwargs)`` on every network with ``num_inputs`` inputs in [0, 1].

    Inputs are uniform pixels of the network's input shape, drawn from ``generator``, which is
    also passed to checks that take one. Returns one record per (network, sample).
    """
    records = []
    for member in progress(family, desc=check.__name__, enabled=progress_enabled):
        parameter = next(member.model.parameters())
        inputs = torch.rand((num_inputs, *member.input_shape), generator=generator,
                            dtype=parameter.dtype)
        extra = dict(kwargs)
        if "generator" in inspect.signature(check).parameters:
            extra["generator"] = generator
        result = check(member.model, inputs.to(parameter.device), **extra)
        records += [{**member.to_dict(), **row} for row in result.records()]
    return FamilyCheck(check.__name__, tuple(records))

