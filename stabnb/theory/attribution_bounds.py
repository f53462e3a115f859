"""R5–R6: bounds on gradient attributions (saliency, Integrated Gradients), checked per sample.

- R5: ``‖a_c(x)‖ ≤ ‖J_f(x)‖₂`` and ``‖a_c(x+δ) − a_c(x)‖ ≤ β‖δ‖`` (smooth σ), jumps for ReLU;
- R6: Integrated Gradients completeness, ``‖IG‖₂ ≤ ‖x − x'‖_∞ sup_α ‖J_f(x_α)‖₂`` and a
  perturbation bound from ``sup‖J_f‖₂`` and β.

Our reconstruction, not the paper's statement (``docs/reconstruction.md``, "Reconstructed results").
"""


from dataclasses import dataclass

import torch
from captum.attr import IntegratedGradients
from captum.attr._utils.approximation_methods import approximation_parameters
from torch import nn
from torch.func import jacrev, vmap

from ..models import functional
from ..operators import input_jacobians
from ..rng import resolve_generator
from .families import PerSampleResult
from .product import LIPSCHITZ, ROUNDING_RTOL, SMOOTH_ACTIVATIONS, layer_chain
from .sensitivity import path_operator_norms, path_points, random_directions

__all__ = [
    "SaliencyCheck", "check_saliency", "CompletenessCheck", "check_ig_completeness",
    "IntegratedGradientsCheck", "check_integrated_gradients",
]


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
        for layer in layer_chain(model):
            if type(layer) in LIPSCHITZ:
                patterns.append((current > 0).reshape(current.shape[0], -1))
            current = layer(current)
    return torch.cat(patterns, dim=1) if patterns else inputs.new_zeros(inputs.shape[0], 0)


@dataclass(frozen=True)
class SaliencyCheck(PerSampleResult):
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
                   generator: torch.Generator | None = None, seed: int = 0) -> SaliencyCheck:
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
        seed: seeds a fresh generator when ``generator`` is None. Default: 0.

    Cost: two Jacobians per sample, and (smooth σ) ``num_path_points`` dense d×d input
    Hessians per sample: meant for small d.
    """
    generator = resolve_generator(generator, seed)
    layers = layer_chain(model)
    activations = [layer for layer in layers if type(layer) in LIPSCHITZ]
    smooth = all(isinstance(layer, SMOOTH_ACTIVATIONS) for layer in activations)
    relu_only = all(isinstance(layer, nn.ReLU) for layer in activations)
    if not (smooth or relu_only) or any(isinstance(layer, nn.MaxPool2d) for layer in layers):
        raise ValueError("check_saliency needs all-smooth or all-ReLU activations and no "
                         "max-pooling; got layers " + ", ".join(type(m).__name__ for m in layers))
    target = _target_indices(model, inputs, target)
    delta = random_directions(inputs, radius, generator)
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
        points = path_points(inputs, delta, num_path_points).reshape(-1, *inputs.shape[1:])
        beta = _input_hessian_norms(model, points, target.repeat(num_path_points))
        beta = beta.view(num_path_points, n).amax(dim=0)
    else:
        beta = torch.full_like(change, float("nan"))
    bound = beta * delta.flatten(1).norm(dim=1)
    holds = saliency_norm <= jacobian_norm
    if smooth:
        holds &= change <= bound
    else:
        holds &= (flips > 0) | (change <= ROUNDING_RTOL * saliency_norm)
    return SaliencyCheck(saliency_norm, jacobian_norm, jacobian_norm / saliency_norm, change,
                         change / saliency_norm, beta, bound, bound / change, flips, target,
                         smooth, float(radius), num_path_points, holds)


def _smooth_chain(layers: list[nn.Module]) -> bool:
    """True when every activation is smooth and nothing is piecewise (no ReLU, no max-pool)."""
    return all(isinstance(layer, SMOOTH_ACTIVATIONS) for layer in layers
               if type(layer) in LIPSCHITZ or isinstance(layer, nn.MaxPool2d))


def _baselines(inputs: torch.Tensor, baselines: torch.Tensor | None) -> torch.Tensor:
    if baselines is None:
        return torch.zeros_like(inputs)
    if baselines.shape != inputs.shape:
        raise ValueError(f"baselines must have the inputs' shape {tuple(inputs.shape)}; got "
                         f"{tuple(baselines.shape)}. Default: None (zeros).")
    return baselines


@dataclass(frozen=True)
class CompletenessCheck(PerSampleResult):
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
    layer_chain(model)
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
class IntegratedGradientsCheck(PerSampleResult):
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
                               generator: torch.Generator | None = None, seed: int = 0
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
        seed: seeds a fresh generator when ``generator`` is None. Default: 0.

    Cost: 2·n_steps gradients and Jacobian spectra per sample, and (smooth σ) 2·n_steps dense
    d×d input Hessians per sample: meant for small d.
    """
    generator = resolve_generator(generator, seed)
    smooth = _smooth_chain(layer_chain(model))
    target = _target_indices(model, inputs, target)
    baselines = _baselines(inputs, baselines)
    delta = random_directions(inputs, radius, generator)
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
    path_norms = path_operator_norms(model, paths).amax(dim=0)          # (2n,)
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
