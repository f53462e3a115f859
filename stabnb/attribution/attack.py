"""A worst-case perturbation of the attribution itself (after Ghorbani et al. 2019,
https://arxiv.org/abs/1710.10547): projected gradient steps that move saliency mass away from
the clean top-k features, prediction kept.

Our reconstruction (``docs/reconstruction.md``, "Attack on the attribution"). The saliency of a
ReLU network is piecewise constant in x (its input gradient is zero almost everywhere), so the
steps follow the saliency of a smooth surrogate (:func:`smooth_surrogate`, ReLU → Softplus(β));
the final points are judged with the real network's saliency, beside the random start the
steps began from, so the attack's gain over random noise of the same size is visible.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..checks import check_pixel_inputs, require_eval_mode
from .methods import attribution_method
from .metrics import relative_l2, top_k_intersection

__all__ = ["AttackResult", "attribution_attack", "smooth_surrogate"]


def smooth_surrogate(model: nn.Module, beta: float = 10.0) -> nn.Module:
    """A copy of ``model`` with every ``nn.ReLU`` replaced by ``nn.Softplus(beta)``
    (``log(1 + e^{βz})/β → max(z, 0)`` as β → ∞); other layers and all weights are shared
    by value. A model without ReLU is copied unchanged (it is its own smooth surrogate)."""
    if not (math.isfinite(beta) and beta > 0):
        raise ValueError(f"surrogate_beta={beta} must be a positive finite number, e.g. 10.")
    surrogate = copy.deepcopy(model)
    for parent in surrogate.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.ReLU):
                setattr(parent, name, nn.Softplus(beta=beta))
    return surrogate.eval()


@dataclass(frozen=True, eq=False)
class AttackResult:
    """Real-network saliency change at the attacked points and at their random starts.

    Attributes:
        relative_l2, top_k: ``(n,)`` ``‖a(x_adv) − a(x)‖/‖a(x)‖`` and the clean top-k overlap
            at the attacked points (NaN where ``a(x) = 0``).
        start_relative_l2, start_top_k: ``(n,)`` the same at the uniform random starts.
        inputs, start: ``(n, *input_shape)`` the attacked points and the starts.
        target: ``(n,)`` the class predicted at the clean inputs (the one attributed).
        accepted: ``(n,)`` steps taken (a step that changes the prediction is refused).
        settings: ε, steps, step size, top-k, β, pixel range.
    """

    relative_l2: Tensor
    top_k: Tensor
    start_relative_l2: Tensor
    start_top_k: Tensor
    inputs: Tensor
    start: Tensor
    target: Tensor
    accepted: Tensor
    settings: dict[str, Any]


def _mass_outside(surrogate: nn.Module, points: Tensor, target: Tensor,
                  clean_top: Tensor) -> Tensor:
    """Per-image loss ``Σ_{i∈T} |g_i| / Σ_i |g_i|``, g the surrogate's saliency (graph kept)."""
    logits = surrogate(points)
    grad, = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), points,
                                create_graph=True)
    magnitude = grad.flatten(1).abs()
    return (magnitude * clean_top).sum(1) / magnitude.sum(1).clamp_min(1e-30)


def attribution_attack(model: nn.Module, inputs: Tensor, *, epsilon: float, steps: int,
                       step_size: float | None = None, top_k: float = 0.1,
                       generator: torch.Generator, surrogate_beta: float = 10.0,
                       pixel_range: tuple[float, float] = (0.0, 1.0)) -> AttackResult:
    """Projected sign-gradient descent on the share of saliency mass left on the clean top-k set.

    With ``T`` the ``k = max(1, round(top_k·d))`` features of largest ``|a(x)|`` (real network,
    predicted class c), ``g`` the surrogate's saliency for c and
    ``L(x') = Σ_{i∈T} |g_i(x')| / Σ_i |g_i(x')|``: start at ``x₀ = clip(x + U[−ε, ε]^d)``, then
    ``steps`` times ``x' ← clip(Π_ε(x' − α·sign ∇L(x')))``, Π_ε the projection on the L∞ ball of
    radius ε around x and clip the pixel range. A step after which the real network no longer
    predicts c is refused for that image (it stays where it was): the attack moves the
    explanation, not the decision. If the start itself changes the prediction, steps back to
    c are taken. Cost: ``steps`` double-backward passes of the surrogate, 3 saliency passes.

    Args:
        model: eval mode; inputs ``(n, *input_shape)`` inside ``pixel_range``.
        epsilon: L∞ radius in pixel units (> 0).
        steps: projected steps (≥ 1).
        step_size: α. Default: ``2.5·ε/steps`` (Madry et al. 2018).
        top_k: fraction of features in T, in (0, 1]. Default: 0.1.
        generator: draws the random start (on the inputs' device).
        surrogate_beta: β of the Softplus replacing ReLU. Default: 10.
        pixel_range: ``(low, high)``. Default: ``(0, 1)``.

    Raises:
        ValueError: model in train mode, bad ε, steps, step size, top-k, β or inputs.
    """
    require_eval_mode(model)
    check_pixel_inputs(inputs, "inputs", pixel_range)
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"epsilon={epsilon} must be a positive L∞ radius in pixels, e.g. 0.05.")
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise ValueError(f"steps={steps} must be a positive integer, e.g. 10.")
    alpha = 2.5 * epsilon / steps if step_size is None else float(step_size)
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"step_size={step_size} must be positive (or None for 2.5·ε/steps).")
    if not 0 < top_k <= 1:
        raise ValueError(f"top_k={top_k} is the fraction of features; use a value in (0, 1].")
    surrogate = smooth_surrogate(model, surrogate_beta)
    saliency = attribution_method("saliency", model)
    x = inputs.detach()
    with torch.no_grad():
        target = model(x).argmax(1)
    clean = saliency(x, target).flatten(1)
    k = max(1, round(top_k * clean.shape[1]))
    clean_top = torch.zeros_like(clean).scatter_(1, clean.abs().topk(k, dim=1).indices, 1.0)
    low, high = pixel_range
    noise = torch.rand(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
    start = (x + (noise.to(x.device) * 2 - 1) * epsilon).clamp(low, high)
    current = start.clone()
    accepted = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    for _ in range(int(steps)):
        point = current.clone().requires_grad_(True)
        # a piecewise-linear surrogate (no ReLU to smooth) has a constant saliency: no gradient
        grad, = torch.autograd.grad(_mass_outside(surrogate, point, target, clean_top).sum(),
                                    point, allow_unused=True, materialize_grads=True)
        moved = torch.minimum(torch.maximum(current - alpha * grad.sign(), x - epsilon),
                              x + epsilon).clamp(low, high)
        with torch.no_grad():
            keep = model(moved).argmax(1) == target
        shape = (-1, *[1] * (x.dim() - 1))
        current = torch.where(keep.view(shape), moved, current).detach()
        accepted += keep.long()
    moved_maps = torch.stack([saliency(start, target), saliency(current, target)], 1).flatten(2)
    change = relative_l2(clean, moved_maps)
    overlap = top_k_intersection(clean, moved_maps, k)
    overlap = overlap.masked_fill(clean.norm(dim=1, keepdim=True) == 0, math.nan)
    settings = {"epsilon": float(epsilon), "steps": int(steps), "step_size": alpha,
                "top_k": float(top_k), "k": k, "surrogate_beta": float(surrogate_beta),
                "pixel_range": [float(low), float(high)], "prediction": "kept (refused steps)"}
    return AttackResult(change[:, 1], overlap[:, 1], change[:, 0], overlap[:, 0], current, start,
                        target, accepted, settings)
