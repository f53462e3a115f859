"""Figures of the theory notebooks: kernels and concentration (R7, R8, E1), R1–R6 checks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import matplotlib
import seaborn as sns
import torch
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from .base import new_figure


def plot_slack_ecdf(slack_by_group: dict[str, Any], *, title: str,
                    xlabel: str = "slack = bound ÷ actual") -> Figure:
    """Empirical CDFs of slack (bound ÷ actual, log x axis), one line per group."""
    fig, ax = new_figure()
    for label, slack in slack_by_group.items():
        values = torch.as_tensor(slack, dtype=torch.float64).flatten().sort().values
        values = values[torch.isfinite(values)]
        ax.step(values.cpu().numpy(), torch.linspace(0, 1, values.numel()).numpy(), where="post",
                label=f"{label} (median {float(values.median()):.3g})")
    ax.axvline(1.0, color="black", lw=0.8, ls="--")
    ax.set(xscale="log", xlabel=xlabel, ylabel="fraction of cases", title=title)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(0.0, -0.2))
    return fig


def plot_noise_absorption(result: Any) -> Figure:
    """Fraction 1 − e^{−ηλᵢt} of label noise fitted along each NTK eigendirection vs ηt (R7).

    ``result`` is a :class:`stabnb.theory.kernels.GradientFlowNoiseResult`; lines are coloured by
    log λᵢ, so the slow absorption of small-eigenvalue directions shows as a colour gradient.
    """
    fig, ax = new_figure(width=4.6)
    eigenvalues = result.eigenvalues.clamp_min(torch.finfo(result.eigenvalues.dtype).tiny)
    colours = matplotlib.colormaps["viridis"](
        ((eigenvalues.log() - eigenvalues.log().min())
         / (eigenvalues.log().max() - eigenvalues.log().min()).clamp_min(1e-12)).cpu().numpy())
    positive = result.times > 0
    scaled_time = (result.lr * result.times[positive]).cpu().numpy()
    for i in range(eigenvalues.numel()):
        ax.plot(scaled_time, result.absorbed[positive, i].cpu().numpy(), color=colours[i], lw=0.8)
    ax.set(xscale="log", xlabel="ηt", ylabel="fraction of noise fitted",
           title="noise absorbed per NTK eigendirection")
    mappable = ScalarMappable(
        cmap="viridis", norm=Normalize(float(eigenvalues.log10().min()),
                                           float(eigenvalues.log10().max())))
    fig.colorbar(mappable, ax=ax, label="log₁₀ λᵢ(K)")
    return fig


def plot_gradient_flow(flow: Any, simulated: Any | None = None) -> Figure:
    """‖r_t‖ of linearised gradient flow against its bound e^{−ηλ_min t}‖r_0‖ (R8).

    ``flow`` is a :class:`stabnb.theory.kernels.GradientFlowResult`; ``simulated`` an optional
    :class:`stabnb.theory.kernels.GradientDescentResult` at a small step h, drawn at t = h·k (η = 1).
    """
    fig, ax = new_figure()
    times = (flow.lr * flow.times).cpu().numpy()
    ax.plot(times, flow.residual_norms.cpu().numpy(), label=r"closed form $\|e^{-\eta K t} r_0\|$")
    ax.plot(times, flow.bounds.cpu().numpy(), ls="--", color="black",
            label=r"bound $e^{-\eta\lambda_{\min} t}\|r_0\|$")
    if simulated is not None:
        ax.plot((simulated.lr * simulated.steps).cpu().numpy(),
                simulated.residual_norms.cpu().numpy(), ls="", marker=".", ms=3,
                label="simulated GD, small step")
    ax.set(yscale="log", xlabel="ηt", ylabel="‖r_t‖", title="linearised gradient flow")
    ax.legend(fontsize="small")
    return fig


def plot_gd_step_sizes(results: Sequence[Any], factors: Sequence[float]) -> Figure:
    """‖r_k‖ of linearised gradient descent for step sizes η = factor × 2/λ_max (R8)."""
    fig, ax = new_figure(width=4.6)
    colours = sns.color_palette("coolwarm", len(factors))
    for result, factor, colour in zip(results, factors, colours):
        ax.plot(result.steps.cpu().numpy(), result.residual_norms.cpu().numpy(), color=colour,
                label=f"η = {factor:g} × 2/λ$_{{\\max}}$")
    ax.set(yscale="log", xlabel="step k", ylabel="‖r_k‖", title="gradient descent around 2/λ_max")
    ax.legend(fontsize="small")
    return fig


def plot_gd_loss(result: Any, contraction: float, *,
                 ylim: tuple[float, float] | None = None) -> Figure:
    """Loss ½‖r_k‖² of linearised gradient descent (log y) under its envelope ρ^{2k}·½‖r_0‖² (R8).

    ``result`` is a :class:`stabnb.theory.kernels.GradientDescentResult`, ``contraction`` its
    ρ = max_i |1 − ηλ_i(K)|; the x axis spans all ``num_steps`` even when the run stopped early.
    """
    fig, ax = new_figure(width=4.6)
    steps = result.steps.cpu().double()
    loss = 0.5 * result.residual_norms.cpu().double() ** 2
    ax.plot(steps.numpy(), loss.numpy(), label=f"η = {result.lr:.3g}")
    envelope = loss[0] * torch.tensor(contraction, dtype=torch.float64) ** (2 * steps)
    ax.plot(steps.numpy(), envelope.numpy(), ls="--", color="black",
            label=f"ρ^2k · loss₀, ρ = {contraction:.4f}")
    ax.set(yscale="log", xlim=(0, result.num_steps), xlabel="step k", ylabel="loss ½‖r_k‖²",
           title="linearised gradient descent")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.legend(fontsize="small", loc="upper right")
    return fig


def plot_hessian_vs_ntk(comparisons: Sequence[Any]) -> Figure:
    """|λ_max(H) − λ_max(K)/n| / (λ_max(K)/n) against the RMS residual (R8)."""
    fig, ax = new_figure()
    rms = [c.residual_rms for c in comparisons if c.residual_rms > 0]
    gaps = [c.relative_gap for c in comparisons if c.residual_rms > 0]
    ax.scatter(rms, gaps, s=10)
    ax.set(xscale="log", yscale="log", xlabel="RMS residual ‖f(x) − y‖",
           ylabel="relative gap of λ_max(H) to λ_max(K)/n", title="MSE Hessian vs NTK / n")
    return fig


def plot_concentration(checks: dict[str, Any]) -> Figure:
    """Typical sensitivity against effective rank at a fixed operator norm, one panel a family.

    Each value is a :class:`stabnb.theory.TypicalSensitivityCheck`. Everything is divided by
    σ²‖J‖₂² (``worst_case / d``), so the Monte Carlo mean sits at ≈ srank, the entropy bound on
    the line y = exp(H) and the worst case at y = d.
    """
    fig, axes = new_figure(ncols=len(checks), width=4.0)
    axes = list(axes.flat) if len(checks) > 1 else [axes]
    for ax, (label, check) in zip(axes, checks.items()):
        unit = check.entropy_bound / check.effective_rank                 # σ²‖J‖₂²
        dim = float((check.worst_case / unit)[0])
        erank = check.effective_rank.cpu().numpy()
        ax.scatter(erank, (check.monte_carlo / unit).cpu().numpy(), s=10,
                   label="Monte Carlo E‖Jξ‖²")
        ax.scatter(erank, (check.entropy_bound / unit).cpu().numpy(), s=6, marker="x",
                   color="black", label="entropy bound σ²‖J‖₂²exp(H)")
        ax.axhline(dim, color="tab:red", ls="--", label=f"worst case σ²d‖J‖₂² (d = {dim:g})")
        ax.set(xscale="log", yscale="log", xlabel="effective rank exp(H)",
               ylabel="sensitivity ÷ σ²‖J‖₂²", title=label)
        ax.xaxis.set_minor_formatter(NullFormatter())
    axes[0].legend(fontsize="small")
    return fig


def plot_sensitivity_chain(check: Any, *, ylim: tuple[float, float] | None = None) -> Figure:
    """The R3 chain for one matrix as bars (log y): Monte Carlo E‖Jξ‖², then its bounds.

    ``check`` is a :class:`stabnb.theory.TypicalSensitivityCheck` with one entry (the first is
    drawn); ``ylim`` fixes the axis, so bars move when an explorer's slider does.
    """
    fig, ax = new_figure(width=4.6)
    bars = {"Monte Carlo\nE‖Jξ‖²": check.monte_carlo, "σ²‖J‖²_F": check.frobenius,
            "σ²‖J‖₂² exp(H)": check.entropy_bound, "σ²‖J‖₂² rank": check.rank_bound,
            "worst case\nσ²d‖J‖₂²": check.worst_case}
    values = [float(v[0]) for v in bars.values()]
    ax.bar(range(len(bars)), values, color=["tab:blue", "tab:blue", "black", "grey", "tab:red"])
    ax.errorbar([0], values[:1], yerr=[3 * float(check.monte_carlo_se[0])], color="white",
                capsize=3, lw=1)
    ax.set_xticks(range(len(bars)), list(bars), fontsize="x-small")
    ax.set(yscale="log", ylabel="E‖output change‖²",
           title=f"σ = {check.sigma:.3g}: typical vs worst-case sensitivity")
    if ylim is not None:
        ax.set_ylim(*ylim)
    return fig


def _finite(values: Any) -> torch.Tensor:
    values = torch.as_tensor(values, dtype=torch.float64).flatten()
    return values[torch.isfinite(values)]


def plot_error_ecdf(errors_by_group: dict[str, Any], *, tolerance: float, title: str,
                    xlabel: str = "relative error") -> Figure:
    """Empirical CDFs of errors (log x axis), one line per group, the tolerance dashed (R1)."""
    fig, ax = new_figure()
    for label, errors in errors_by_group.items():
        values = _finite(errors).clamp_min(torch.finfo(torch.float64).tiny).sort().values
        ax.step(values.numpy(), torch.linspace(0, 1, values.numel()).numpy(), where="post",
                label=f"{label} (max {float(values.max()):.1e})")
    ax.axvline(tolerance, color="black", lw=0.8, ls="--", label=f"tolerance {tolerance:.1e}")
    ax.set(xscale="log", xlabel=xlabel, ylabel="fraction of samples", title=title)
    ax.legend(fontsize="small")
    return fig


def plot_bound_vs_actual(actual_by_group: dict[str, Any], bound_by_group: dict[str, Any], *,
                         title: str, xlabel: str = "actual", ylabel: str = "bound") -> Figure:
    """Bound against actual value per sample (log–log), one colour per group, y = x dashed.

    Points above the diagonal are cases where the bound holds; their height above it is the
    slack.
    """
    fig, ax = new_figure()
    low, high = math.inf, 0.0
    for label, actual in actual_by_group.items():
        x = torch.as_tensor(actual, dtype=torch.float64).flatten()
        y = torch.as_tensor(bound_by_group[label], dtype=torch.float64).flatten()
        keep = torch.isfinite(x) & torch.isfinite(y) & (x > 0) & (y > 0)
        ax.scatter(x[keep].numpy(), y[keep].numpy(), s=8, alpha=0.7, label=label)
        if bool(keep.any()):
            low = min(low, float(x[keep].min()), float(y[keep].min()))
            high = max(high, float(x[keep].max()), float(y[keep].max()))
    if high > 0:
        ax.plot([low, high], [low, high], color="black", lw=0.8, ls="--", label="bound = actual")
    ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend(fontsize="small")
    return fig


def plot_bound_chain(levels: dict[str, Any], *, title: str, ylabel: str) -> Figure:
    """Box plots (log y) of several quantities side by side, e.g. the R3 chain of bounds.

    ``levels`` maps a label to per-sample values, in the order the chain is read.
    """
    fig, ax = new_figure(width=max(4.0, 1.1 * len(levels)))
    data = [_finite(v).numpy() for v in levels.values()]
    ax.boxplot(data, whis=(5, 95), showfliers=False)
    for position, values in enumerate(data, start=1):
        jitter = torch.linspace(-0.15, 0.15, len(values)).numpy() if len(values) else []
        ax.scatter(position + jitter, values, s=3, alpha=0.3, color="tab:blue")
    ax.set_xticks(range(1, len(levels) + 1), list(levels), rotation=20, ha="right")
    ax.set(yscale="log", ylabel=ylabel, title=title)
    return fig


def plot_saliency_jumps(gate_flips: Any, relative_change: Any, *, title: str) -> Figure:
    """ReLU saliency change ‖a(x+δ) − a(x)‖/‖a(x)‖ against the number of flipped gates (R5).

    Cases without a flip sit at 0 (piecewise constant); any flip gives a jump.
    """
    fig, ax = new_figure()
    flips = torch.as_tensor(gate_flips, dtype=torch.float64).flatten()
    change = torch.as_tensor(relative_change, dtype=torch.float64).flatten()
    jitter = torch.linspace(-0.2, 0.2, flips.numel()) if flips.numel() else flips
    ax.scatter((flips + jitter).numpy(), change.numpy(), s=8, alpha=0.6)
    ax.set(xlabel="ReLU gates flipped between x and x+δ", ylabel="relative saliency change",
           title=title)
    return fig


def plot_operator_spectra(spectra: dict[str, Any], *, title: str) -> Figure:
    """Each operator's spectrum, descending and divided by its largest value (log y)."""
    fig, ax = new_figure(width=4.6)
    for label, values in spectra.items():
        values = _finite(values).abs().sort(descending=True).values
        values = values[values > 0]
        ax.plot(range(1, values.numel() + 1), (values / values[0]).numpy(), marker=".", ms=3,
                label=f"{label} (top {float(values[0]):.3g})")
    ax.set(xscale="log", yscale="log", xlabel="index i", ylabel="value ÷ largest", title=title)
    ax.legend(fontsize="small")
    return fig


def plot_attribution_maps(views: dict[str, Any], *,
                          image_shape: tuple[int, int] | None = None) -> Figure:
    """Attribution at x and at x + rε side by side, one row a model (R5 explorer).

    ``views`` maps a label to a :class:`stabnb.widgets.NoisyAttribution`; maps are summed over
    channels and drawn on one symmetric colour scale per row (that of the clean map), so a
    change of sign or place shows as a change of colour.
    """
    fig, axes = new_figure(ncols=2, nrows=len(views), width=2.6, height=2.6)
    for (label, view), row in zip(views.items(), axes):
        clean, noisy = (m.detach().double().cpu() for m in (view.clean, view.noisy))
        if image_shape is not None:
            clean, noisy = clean.reshape(image_shape), noisy.reshape(image_shape)
        elif clean.dim() == 3:
            clean, noisy = clean.sum(dim=0), noisy.sum(dim=0)
        scale = float(clean.abs().max()) or 1.0
        for ax, values, name in zip(row, (clean, noisy), ("a(x)", f"a(x + rε), r = {view.radius:.3g}")):
            ax.imshow(values.reshape(-1, values.shape[-1]).numpy(), cmap="RdBu_r", vmin=-scale,
                      vmax=scale)
            ax.set(xticks=[], yticks=[], title=name)
        row[0].set_ylabel(f"{label}\nclass {view.target}")
        row[1].set_xlabel(f"relative change {view.relative_change:.3f}")
    return fig
