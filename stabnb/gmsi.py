"""Global Matrix Stability Index (GMSI): the four operator gains of a model on a sample set.

The paper names the GMSI but its exact formula is not available to us; this is **our
reconstruction** (``docs/reconstruction.md``, "GMSI"), with every ambiguous choice selectable.
Default (``definition="size_free"``):

    GMSI = max{ sup_x ‖J_f(x)‖₂, sup_x ‖∇_θ f(x)‖₂, (λ_max(K)/n)^{1/2}, λ_max(H)^{1/2} }

over the sample set X of n points, with K the n×n trace-contracted empirical NTK and H the
Hessian of the mean loss on (X, y). Every component is size-free: K/n is the mean-loss
Gauss–Newton scale (the nonzero spectrum of ``J_θᵀJ_θ/n``, R8), whose top eigenvalue converges
as n grows, where ``λ_max(K)`` itself grows like n. ``definition="v0"`` keeps the first
definition, ``λ_max(K)^{1/2}`` unnormalised (it equals the GMSI in every quick-profile study
cell of the first reproduction and grows like √n), for results made with it. Alternatives: ``aggregate="sum"`` or ``"weighted_sum"``, ``reduce="mean"``
(mean over x instead of sup for the two per-sample gains), ``sqrt=False`` (λ_max(K) and
λ_max(H) without the square roots). The NTK conditioning ``λ_max(K)/λ_min(K)`` is reported too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .checks import check_pixel_inputs
from .io import to_jsonable
from .operators import (
    LOSSES,
    LossHessian,
    input_jacobian_singular_values,
    ntk_gram,
    parameter_jacobian,
)
from .operators._common import _chunks, _prepare
from .progress import progress as progress_bar
from .spectra import lanczos

__all__ = ["COMPONENTS", "DEFINITIONS", "AGGREGATES", "REDUCTIONS", "GMSIResult", "gmsi"]

COMPONENTS = ("input_jacobian", "param_jacobian", "ntk", "hessian")
DEFINITIONS = ("size_free", "v0")
AGGREGATES = ("max", "sum", "weighted_sum")
REDUCTIONS = ("sup", "mean")


@dataclass(frozen=True)
class GMSIResult:
    """GMSI value, its component vector, and the spectra behind them.

    Attributes:
        value: the aggregate of ``components`` (``settings["aggregate"]``).
        components: ``{"input_jacobian", "param_jacobian", "ntk", "hessian"}`` → gain.
        input_jacobian_norms: (n,) ``‖J_f(x_i)‖₂`` per sample.
        param_jacobian_norms: (n,) ``‖∇_θ f(x_i)‖₂ = λ_max(K_ii)^{1/2}`` per sample (C×C block).
        ntk_lambda_max, ntk_lambda_min: extreme eigenvalues of the n×n NTK K.
        ntk_condition_number: ``λ_max/λ_min`` (``inf`` when ``λ_min ≤ 0`` numerically).
        hessian_lambda_max: top Hessian eigenvalue (the component uses ``max(λ, 0)``).
        hessian_residual, hessian_converged, hessian_num_matvecs: its Lanczos diagnostics.
        settings: everything that produced the result.
    """

    value: float
    components: dict[str, float]
    input_jacobian_norms: Tensor
    param_jacobian_norms: Tensor
    ntk_lambda_max: float
    ntk_lambda_min: float
    ntk_condition_number: float
    hessian_lambda_max: float
    hessian_residual: float
    hessian_converged: bool
    hessian_num_matvecs: int
    settings: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value, "components": dict(self.components),
            "input_jacobian_norms": to_jsonable(self.input_jacobian_norms),
            "param_jacobian_norms": to_jsonable(self.param_jacobian_norms),
            "ntk_lambda_max": self.ntk_lambda_max, "ntk_lambda_min": self.ntk_lambda_min,
            "ntk_condition_number": self.ntk_condition_number,
            "hessian_lambda_max": self.hessian_lambda_max,
            "hessian_residual": self.hessian_residual,
            "hessian_converged": self.hessian_converged,
            "hessian_num_matvecs": self.hessian_num_matvecs,
            "settings": dict(self.settings),
        }


def _check_choices(loss: str, aggregate: str, reduce: str, weights: Mapping[str, float] | None,
                   definition: str) -> dict[str, float] | None:
    if definition not in DEFINITIONS:
        raise ValueError(f"definition={definition!r} is unknown; choose one of {DEFINITIONS} "
                         "('v0' is the first, unnormalised NTK term).")
    if loss not in LOSSES:
        raise ValueError(f"loss={loss!r} is unknown; choose one of {LOSSES}.")
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate={aggregate!r} is unknown; choose one of {AGGREGATES}.")
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce={reduce!r} is unknown; choose one of {REDUCTIONS}.")
    if aggregate != "weighted_sum":
        if weights is not None:
            raise ValueError(f"weights are only used by aggregate='weighted_sum', not "
                             f"{aggregate!r}; drop them or change the aggregate.")
        return None
    if not weights:
        raise ValueError("aggregate='weighted_sum' needs weights, e.g. "
                         "{'input_jacobian': 1.0, 'ntk': 0.5}; missing components weigh 0.")
    unknown = sorted(set(weights) - set(COMPONENTS))
    if unknown:
        raise ValueError(f"weights has unknown component(s) {unknown}; use {COMPONENTS}.")
    negative = {k: v for k, v in weights.items() if not (float(v) >= 0 and math.isfinite(v))}
    if negative:
        raise ValueError(f"weights must be finite and non-negative; got {negative}.")
    return {name: float(weights.get(name, 0.0)) for name in COMPONENTS}


def gmsi(model: nn.Module, inputs: Tensor, targets: Tensor, *, loss: str = "cross_entropy",
         aggregate: str = "max", reduce: str = "sup", sqrt: bool = True,
         definition: str = "size_free",
         weights: Mapping[str, float] | None = None, progress: bool | None = None,
         seed: int | None = 0, generator: torch.Generator | None = None,
         chunk_size: int | None = 64, ntk_chunk_size: int | None = None,
         hessian_tol: float = 1e-3, hessian_num_iters: int | None = None,
         pixel_range: tuple[float, float] | None = (0.0, 1.0)) -> GMSIResult:
    """Global Matrix Stability Index of ``model`` on ``(inputs, targets)`` (our reconstruction).

    Components (module docstring for the formula):

    - ``input_jacobian``: sup (or mean) over x of ``‖J_f(x)‖₂``, exact
      (:func:`~stabnb.operators.input_jacobian_singular_values`);
    - ``param_jacobian``: sup (or mean) of ``‖∇_θ f(x)‖₂ = λ_max(J_i J_iᵀ)^{1/2}``, the per-sample
      C×C NTK block (R4), exact;
    - ``ntk``: ``(λ_max(K)/n)^{1/2}`` of the exact n×n NTK (:func:`~stabnb.operators.ntk_gram`),
      ``λ_max(K)^{1/2}`` with ``definition="v0"``;
    - ``hessian``: ``max(λ_max(H), 0)^{1/2}`` of the mean-loss Hessian, by Lanczos on HVPs.

    Cost: per-sample Jacobians twice (blocks, then K; memory ``chunk_size·C·p`` and
    ``n·C·p`` unless ``ntk_chunk_size``), an O(n³) ``eigvalsh``, and a few tens of HVPs.

    Args:
        model: classifier in eval mode, inputs ``(n, *input_shape)`` → logits ``(n, C)``.
        inputs, targets: the sample set; targets as for :class:`~stabnb.operators.LossHessian`.
        loss: ``"cross_entropy"`` or ``"mse"`` for the Hessian. Default: ``"cross_entropy"``.
        aggregate: ``"max"``, ``"sum"`` or ``"weighted_sum"`` of the components. Default: "max".
        reduce: ``"sup"`` or ``"mean"`` over samples for the per-sample gains. Default: "sup".
        sqrt: take ``λ^{1/2}`` for the NTK and Hessian components. Default: True.
        definition: ``"size_free"`` (NTK term λ_max(K)/n) or ``"v0"`` (λ_max(K), the first
            definition, kept for earlier results). Default: ``"size_free"``.
        weights: component → weight for ``"weighted_sum"`` (missing components weigh 0).
        progress: show a bar over the samples. Default: ``STABNB_PROGRESS``.
        seed, generator: start vector of the Hessian Lanczos run.
        chunk_size: samples per Jacobian pass. Default: 64.
        ntk_chunk_size: chunking of :func:`ntk_gram`. Default: all at once.
        hessian_tol: Lanczos relative residual tolerance. Default: 1e-3.
        hessian_num_iters: Lanczos maximal steps. Default: lanczos's.
        pixel_range: range every input value must lie in, or None for inputs that are not
            pixels (:func:`~stabnb.checks.check_pixel_inputs`). Default: ``(0, 1)``.

    Returns:
        GMSIResult; ``to_dict()`` includes the settings.

    Raises:
        ValueError: bad choices, train-mode model, non-finite weights/inputs, integer inputs or
            values outside ``pixel_range``, shape mismatch.
    """
    weight_map = _check_choices(loss, aggregate, reduce, weights, definition)
    check_pixel_inputs(inputs, "inputs", pixel_range)
    inputs = _prepare(model, inputs)
    n = inputs.shape[0]
    parts = _chunks(n, chunk_size)
    input_norms, param_norms = [], []
    for part in progress_bar(parts, desc="GMSI samples", total=len(parts), enabled=progress):
        chunk = inputs[part]
        input_norms.append(input_jacobian_singular_values(model, chunk)[:, 0])
        jac = parameter_jacobian(model, chunk)                        # (b, C, p)
        blocks = jac @ jac.transpose(1, 2)                              # (b, C, C)
        param_norms.append(torch.linalg.eigvalsh(blocks)[:, -1].clamp_min(0).sqrt())
    input_norms_t, param_norms_t = torch.cat(input_norms), torch.cat(param_norms)

    ntk_values = torch.linalg.eigvalsh(ntk_gram(model, inputs, chunk_size=ntk_chunk_size))
    ntk_max, ntk_min = float(ntk_values[-1]), float(ntk_values[0])
    hessian = lanczos(LossHessian(model, inputs, targets, loss=loss), 1, tol=hessian_tol,
                      num_iters=hessian_num_iters, generator=generator, seed=seed)
    hess_max = float(hessian.values[0])

    def reduced(values: Tensor) -> float:
        return float(values.max() if reduce == "sup" else values.mean())

    def root(value: float) -> float:
        return math.sqrt(max(value, 0.0)) if sqrt else max(value, 0.0)

    components = {
        "input_jacobian": reduced(input_norms_t),
        "param_jacobian": reduced(param_norms_t),
        "ntk": root(ntk_max / n if definition == "size_free" else ntk_max),
        "hessian": root(hess_max),
    }
    if aggregate == "max":
        value = max(components.values())
    elif aggregate == "sum":
        value = sum(components.values())
    else:
        value = sum(weight_map[name] * components[name] for name in COMPONENTS)
    return GMSIResult(
        value=float(value), components=components,
        input_jacobian_norms=input_norms_t, param_jacobian_norms=param_norms_t,
        ntk_lambda_max=ntk_max, ntk_lambda_min=ntk_min,
        ntk_condition_number=ntk_max / ntk_min if ntk_min > 0 else math.inf,
        hessian_lambda_max=hess_max, hessian_residual=float(hessian.residuals[0]),
        hessian_converged=hessian.converged, hessian_num_matvecs=hessian.num_matvecs,
        settings={"loss": loss, "aggregate": aggregate, "reduce": reduce, "sqrt": sqrt,
                  "weights": weight_map, "seed": None if generator is not None else seed,
                  "num_samples": n, "hessian_tol": hessian_tol,
                  "pixel_range": None if pixel_range is None else list(pixel_range),
                  "dtype": str(inputs.dtype).replace("torch.", ""),
                  "device": str(inputs.device), "definition": definition,
                  "reconstructed": True},
    )
