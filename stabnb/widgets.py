"""Teaching explorers: sliders over what the notebooks compute, for JupyterLab.

Each explorer is a plain function that computes what it shows (tested without a browser) and a
builder that wires ipywidgets controls to it: the controls, an ``HTML`` readout and the figure
as an ``Image`` (PNG). Every change of a control recomputes and redraws; nothing is printed, so
a headless run (papermill, nbval) only builds the widget and shows its text repr.

- :func:`concentration_explorer` (tour, R3): one random matrix at ‖J‖₂ = 1 whose spectrum decays
  with ``decay``: its entropy H, exp(H), and the typical sensitivity E‖Jξ‖² against the worst
  case σ²d‖J‖₂². Computed by :func:`concentration_view`.
- :func:`attribution_explorer` (R5): saliency maps of several networks (a baseline beside a
  regularised one) at an input x and at x + r·ε for one fixed ε ~ N(0, I), with the relative
  change. Computed by :func:`noisy_attribution`.
- :func:`step_size_explorer` (R8): linearised gradient descent at η = factor × 2/λ_max(K), its
  contraction factor ρ = max_i |1 − ηλ_i|. Computed by :func:`step_size_run`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ipywidgets as widgets
import torch
from matplotlib.figure import Figure
from torch import nn

from .attribution import attribution_method, relative_l2
from .plotting import (
    figure_png,
    plot_attribution_maps,
    plot_gd_loss,
    plot_sensitivity_chain,
)
from .theory import TypicalSensitivityCheck
from .theory.concentration import matrix_family, matrix_sensitivity
from .theory.kernels import (
    GradientDescentResult,
    LinearizedProblem,
    gd_contraction_factor,
    gd_stability_threshold,
    linearized_gradient_descent,
)

__all__ = ["DECAY_RANGES", "NoisyAttribution", "concentration_view", "noisy_attribution",
           "step_size_run", "concentration_explorer", "attribution_explorer",
           "step_size_explorer"]

# kind -> (min, max, step) of the decay slider: geometric sᵢ = decayⁱ (1 is flat), power
# sᵢ = (i+1)^(−decay) (0 is flat); see stabnb.data.spectrum_profile.
DECAY_RANGES: dict[str, tuple[float, float, float]] = {"geometric": (0.05, 1.0, 0.05),
                                                       "power": (0.0, 3.0, 0.1)}


def _explorer(controls: Sequence[widgets.Widget],
              render: Callable[[], tuple[Figure, str]]) -> widgets.VBox:
    """Controls above an HTML readout and the figure; any control change calls ``render``."""
    image = widgets.Image(format="png")
    readout = widgets.HTML()

    def update(_change: Any = None) -> None:
        fig, text = render()
        image.value = figure_png(fig)
        readout.value = text

    for control in controls:
        control.observe(update, names="value")
    update()
    return widgets.VBox([widgets.HBox(list(controls)), readout, image])


# --- spectral concentration (tour, R3) ---

def concentration_view(decay: float, sigma: float, *, kind: str = "geometric",
                       shape: tuple[int, int] = (10, 784), num_samples: int = 256,
                       seed: int = 0) -> TypicalSensitivityCheck:
    """R3 for one random ``shape`` matrix J = U diag(s) Vᵀ with ‖J‖₂ = 1, s = spectrum_profile(decay).

    Monte Carlo E‖Jξ‖², ξ ~ N(0, σ²I_d), beside σ²‖J‖_F² ≤ σ²‖J‖₂² exp(H) ≤ σ²‖J‖₂² rank ≤ σ²d‖J‖₂²
    (:func:`stabnb.theory.concentration.matrix_sensitivity`). The singular vectors come from ``seed``
    alone, so changing ``decay`` or ``kind`` changes only the spectrum. Default shape: the tour's
    MNIST input Jacobian (10 classes × 784 pixels).

    Returns:
        :class:`stabnb.theory.TypicalSensitivityCheck` with one entry.
    """
    if kind not in DECAY_RANGES:
        raise ValueError(f"kind={kind!r} is unknown; choose one of {sorted(DECAY_RANGES)}.")
    generator = torch.Generator().manual_seed(seed)
    matrix = matrix_family([decay], shape, kind=kind, generator=generator)
    return matrix_sensitivity(matrix, sigma=sigma, num_samples=num_samples, generator=generator)


def concentration_explorer(*, shape: tuple[int, int] = (10, 784), num_samples: int = 256,
                           seed: int = 0) -> widgets.VBox:
    """Sliders for ``decay`` and σ and a ``kind`` menu over :func:`concentration_view`.

    The bars (log scale, fixed axis over the whole σ range) show how the typical sensitivity
    follows the spectrum while the worst case σ²d‖J‖₂² does not move with it.
    """
    kind = widgets.Dropdown(options=list(DECAY_RANGES), value="geometric", description="kind")
    low, high, step = DECAY_RANGES["geometric"]
    decay = widgets.FloatSlider(value=0.5, min=low, max=high, step=step, description="decay",
                                continuous_update=False)
    sigma = widgets.FloatLogSlider(value=0.01, base=10, min=-3, max=-1, step=0.1,
                                   description="σ", readout_format=".3f",
                                   continuous_update=False)
    limits = (0.1 * (10 ** sigma.min) ** 2, 3.0 * (10 ** sigma.max) ** 2 * shape[1])

    def new_kind(change: dict[str, Any]) -> None:          # the new range clamps the value
        low, high, step = DECAY_RANGES[change["new"]]
        decay.max = max(decay.max, high)
        decay.min, decay.max, decay.step = low, high, step

    kind.observe(new_kind, names="value")

    def render() -> tuple[Figure, str]:
        check = concentration_view(decay.value, sigma.value, kind=kind.value, shape=shape,
                                   num_samples=num_samples, seed=seed)
        text = (f"H(J) = {float(check.entropy[0]):.2f} nats, e<sup>H</sup> = "
                f"{float(check.effective_rank[0]):.2f}, stable rank = "
                f"{float(check.stable_rank[0]):.2f}, rank = {int(check.rank[0])}; typical ÷ "
                f"worst case = {float(check.monte_carlo[0] / check.worst_case[0]):.2g}")
        return plot_sensitivity_chain(check, ylim=limits), text

    return _explorer([kind, decay, sigma], render)


# --- attribution under noise (R5) ---

@dataclass(frozen=True)
class NoisyAttribution:
    """Attributions at x and at x + r·ε for one fixed direction ε, for the class predicted at x.

    Attributes:
        clean, noisy: the two attributions, shaped like x.
        target: the class c explained (the model's prediction at x).
        relative_change: ‖a_c(x + rε) − a_c(x)‖ / ‖a_c(x)‖ (NaN where a_c(x) = 0).
        radius: r, in the input's units; ε ~ N(0, I) is drawn from ``seed``.
        method: the attribution method's name.
        seed: seeds ε.
    """

    clean: torch.Tensor
    noisy: torch.Tensor
    target: int
    relative_change: float
    radius: float
    method: str
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target,
                "relative_change": None if math.isnan(self.relative_change)
                else self.relative_change,
                "radius": self.radius, "method": self.method, "seed": self.seed}


def noisy_attribution(model: nn.Module, x: torch.Tensor, radius: float, *,
                      method: str = "saliency", seed: int = 0) -> NoisyAttribution:
    """a_c(x) and a_c(x + r·ε), ε ~ N(0, I) fixed by ``seed``, c = argmax f(x) (R5).

    One direction ε for every r, so moving r traces a straight line from x: for a ReLU network the
    saliency stays put until a gate flips, for a smooth (or curvature-regularised) one it moves
    gradually. Cost: one forward pass and one attribution call on two inputs.

    Args:
        model: network in eval mode.
        x: one input, without a batch dimension.
        radius: r ≥ 0.
        method: a name in :data:`stabnb.attribution.METHODS`. Default: ``"saliency"``.
        seed: seeds ε (drawn on x's device, in x's dtype).
    """
    if not (math.isfinite(radius) and radius >= 0):
        raise ValueError(f"radius={radius!r} must be a finite number ≥ 0.")
    explain = attribution_method(method, model)
    generator = torch.Generator(device=x.device).manual_seed(seed)
    direction = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    with torch.no_grad():
        target = int(model(x.unsqueeze(0)).argmax(dim=1)[0])
    maps = explain(torch.stack([x, x + radius * direction]),
                   torch.full((2,), target, device=x.device))
    change = relative_l2(maps[:1].flatten(1), maps[1:].flatten(1).unsqueeze(0))
    return NoisyAttribution(maps[0], maps[1], target, float(change[0, 0]), float(radius),
                            explain.name, seed)


def attribution_explorer(models: Mapping[str, nn.Module], inputs: torch.Tensor, *,
                         method: str = "saliency", max_radius: float = 0.3,
                         image_shape: tuple[int, int] | None = None,
                         seed: int = 0) -> widgets.VBox:
    """A noise-radius slider and an input slider over :func:`noisy_attribution`, one row a model.

    Args:
        models: label -> network, e.g. ``{"baseline": a, "curvature λ=1": b}``.
        inputs: (n, ...) inputs to choose from.
        method: attribution method name. Default: ``"saliency"``.
        max_radius: the slider's largest r. Default: 0.3.
        image_shape: (H, W) to draw flat or single-channel inputs as images. Default: the
            input's own last two dimensions.
        seed: seeds ε.
    """
    if not models:
        raise ValueError("models is empty; pass at least one network, e.g. {'baseline': model}.")
    radius = widgets.FloatSlider(value=min(0.05, max_radius), min=0.0, max=max_radius,
                                 step=max_radius / 30, description="radius r",
                                 readout_format=".3f", continuous_update=False)
    index = widgets.IntSlider(value=0, min=0, max=len(inputs) - 1, description="input",
                              continuous_update=False)

    def render() -> tuple[Figure, str]:
        views = {label: noisy_attribution(model, inputs[index.value], radius.value,
                                          method=method, seed=seed)
                 for label, model in models.items()}
        text = "; ".join(f"{label}: class {view.target}, relative change "
                         f"{view.relative_change:.3f}" for label, view in views.items())
        return plot_attribution_maps(views, image_shape=image_shape), text

    return _explorer([radius, index], render)


# --- step size against 2/λ_max (R8) ---

def step_size_run(problem: LinearizedProblem, factor: float, *,
                  num_steps: int) -> GradientDescentResult:
    """Linearised gradient descent at η = factor × 2/λ_max(K) (R8), about 200 records.

    Stable (‖r_k‖ ≤ ρ^k‖r_0‖, ρ = max_i |1 − ηλ_i| < 1) for factor < 1, divergent above.
    Cost: 2 ``num_steps`` matvecs with the Jacobian.
    """
    if not factor > 0:
        raise ValueError(f"factor={factor!r} must be positive (η = factor × 2/λ_max).")
    lr = factor * gd_stability_threshold(problem.kernel)
    return linearized_gradient_descent(problem.jacobian, problem.residual0, lr=lr,
                                       num_steps=num_steps,
                                       record_every=max(1, num_steps // 200))


def step_size_explorer(problem: LinearizedProblem, *, num_steps: int = 400) -> widgets.VBox:
    """A slider over η ÷ (2/λ_max) and the loss curve of :func:`step_size_run`.

    The y axis is fixed (from below a run at 0.99 × 2/λ_max up to 10⁶ × the initial loss), so a
    divergent run leaves through the top.
    """
    factor = widgets.FloatSlider(value=0.9, min=0.05, max=1.2, step=0.01,
                                 description="η ÷ (2/λ_max)", continuous_update=False,
                                 style={"description_width": "initial"})
    start = float(torch.linalg.vector_norm(problem.residual0))
    fastest = float(step_size_run(problem, 0.99, num_steps=num_steps).residual_norms.min())
    limits = (0.1 * fastest ** 2, 1e6 * start ** 2)

    def render() -> tuple[Figure, str]:
        run = step_size_run(problem, factor.value, num_steps=num_steps)
        rho = gd_contraction_factor(problem.kernel, run.lr)
        fig = plot_gd_loss(run, rho, ylim=limits)
        final = float(run.residual_norms[-1])
        verdict = "converges" if rho < 1 else "diverges"
        text = (f"η = {run.lr:.3g}: contraction ρ = max|1 − ηλ<sub>i</sub>| = {rho:.4f}, "
                f"{verdict}; loss ½‖r‖² {0.5 * start ** 2:.3g} → {0.5 * final ** 2:.3g} after "
                f"{int(run.steps[-1])} steps" + (" (stopped: diverged)" if run.diverged else ""))
        return fig, text

    return _explorer([factor], render)
