"""Figures: results in, ``matplotlib.figure.Figure`` out.

Each function takes computed results (tensors, dataclasses, dicts) and returns a Figure;
none computes anything expensive, and none saves (``Notebook.save_figure`` does).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import matplotlib
import numpy as np
import seaborn as sns
import torch
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from .entropy_link import EntropyLinkTable, envelope, finite_pairs, rank_correlation

__all__ = [
    "NotebookFigure", "figure_png", "new_figure",
    # kernels and concentration
    "plot_slack_ecdf", "plot_noise_absorption", "plot_gradient_flow", "plot_gd_step_sizes", "plot_gd_loss",
    "plot_hessian_vs_ntk", "plot_concentration", "plot_sensitivity_chain",
    # theory R1-R6
    "plot_error_ecdf", "plot_bound_vs_actual", "plot_bound_chain", "plot_saliency_jumps",
    "plot_operator_spectra", "plot_attribution_maps",
    # experiments
    "plot_strength_sweep", "plot_regularizer_effects", "plot_pareto", "plot_entropy_link",
    "plot_predictor_scatter", "plot_correlation_heatmap",
]


def figure_png(fig: Figure) -> bytes:
    """``fig`` as PNG bytes at its own dpi, cropped to what is drawn (as the inline backend does)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


class NotebookFigure(Figure):
    """A Figure that a notebook shows exactly once, whatever the matplotlib backend.

    It is never registered with pyplot, so the inline backend does not show it again when the
    cell ends, and ``_repr_png_`` lets ``fig`` / ``display(fig)`` render it as an image even
    where no figure formatter is installed (papermill with ``MPLBACKEND=Agg``).
    """

    def _repr_png_(self) -> bytes:
        return figure_png(self)


def new_figure(ncols: int = 1, nrows: int = 1, *, width: float = 4.0,
               height: float = 3.2) -> tuple[Figure, object]:
    """A figure of ``nrows × ncols`` panels in the house style (seaborn ticks, constrained layout).

    The figure is a :class:`NotebookFigure`: a cell ending in ``fig`` or ``display(fig)``
    shows it once.
    """
    sns.set_theme(style="ticks", context="paper")
    fig = NotebookFigure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes if nrows * ncols > 1 else axes[0, 0]


# --- kernels and concentration ---

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


# --- theory R1-R6 ---

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


# --- experiments ---

def plot_strength_sweep(summary: Any, metrics: Sequence[str], *, model: str,
                        labels: dict[str, str] | None = None) -> Figure:
    """Each metric against λ for one model: mean over seeds with its interval, one line per
    regulariser, the baseline (λ = 0) as a grey band.

    ``summary`` is a long table from :func:`stabnb.effects.summary_table` (columns
    ``model``, ``regularizer``, ``strength``, ``metric``, ``mean``, ``lo``, ``hi``).
    """
    fig, axes = new_figure(ncols=len(metrics), width=3.3, height=2.8)
    axes = [axes] if len(metrics) == 1 else list(axes.flat)
    table = summary[summary["model"] == model]
    for ax, metric in zip(axes, metrics):
        rows = table[table["metric"] == metric]
        base = rows[rows["regularizer"] == "none"]
        if not base.empty:
            b = base.iloc[0]
            ax.axhline(b["mean"], color="grey", lw=1, label="baseline")
            if math.isfinite(b["lo"]):
                ax.axhspan(b["lo"], b["hi"], color="grey", alpha=0.2, lw=0)
        for i, (name, group) in enumerate(rows[rows["regularizer"] != "none"].groupby("regularizer")):
            group = group.sort_values("strength")
            spread = (group["mean"] - group["lo"], group["hi"] - group["mean"])
            has_ci = bool(group["lo"].notna().all())
            ax.errorbar(group["strength"], group["mean"], yerr=spread if has_ci else None,
                        marker="o", ms=3, capsize=2, color=f"C{i}", label=name)
        ax.set(xscale="log", xlabel="λ", title=(labels or {}).get(metric, metric))
    axes[0].legend(fontsize="x-small", frameon=False)
    fig.suptitle(model)
    return fig


def plot_regularizer_effects(effects: Sequence[Any], *, model: str) -> Figure:
    """Relative change (%) against the baseline at each regulariser's modest λ: attribution
    instability next to each global summary, with intervals over seeds.

    ``effects`` are :class:`stabnb.effects.RegularizerEffect`; the attribution bar is the
    negated improvement (a drop in instability is negative), so every bar reads as a change.
    """
    mine = [e for e in effects if e.model == model and e.improvement is not None]
    names = list(mine[0].summary_changes) if mine else []
    series = [f"instability ({mine[0].metric})" if mine else "instability", *names]
    fig, ax = new_figure(width=max(4.0, 1.3 * len(mine) + 2), height=3.0)
    width = 0.8 / max(len(series), 1)
    for j, label in enumerate(series):
        for i, e in enumerate(mine):
            interval = e.improvement if j == 0 else e.summary_changes[label]
            sign = -1.0 if j == 0 else 1.0
            mean, lo, hi = (100 * sign * v for v in (interval.mean, interval.lo, interval.hi))
            err = None if math.isnan(lo) else [[mean - min(lo, hi)], [max(lo, hi) - mean]]
            ax.bar(i + (j - (len(series) - 1) / 2) * width, mean, width, yerr=err, capsize=2,
                   color=f"C{j}", label=label if i == 0 else None)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(range(len(mine)), [f"{e.regularizer}\nλ={e.strength:g}" for e in mine],
                  fontsize="x-small")
    ax.set(ylabel="change vs baseline (%)", title=f"{model}: modest regularisation")
    if ax.get_legend_handles_labels()[0]:                 # nothing drawn: no modest λ at all
        ax.legend(fontsize="x-small", frameon=False)
    return fig


def plot_predictor_scatter(frame: Any, predictors: Sequence[str], target: str, *,
                           title: str = "") -> Figure:
    """Each predictor (log scale where it spans a decade) against ``target``, one point per network:
    filled for the held-out half, hollow for the fitting half, coloured by regulariser
    (experiment E7; ``frame`` from :func:`stabnb.validity.robustness_table`)."""
    ncols = min(4, len(predictors))
    nrows = -(-len(predictors) // ncols)
    fig, axes = new_figure(ncols=ncols, nrows=nrows, width=2.8, height=2.4)
    axes = list(axes.flat) if len(predictors) > 1 else [axes]
    families = sorted(frame["regularizer"].unique())
    for ax, predictor in zip(axes, predictors):
        for i, family in enumerate(families):
            for half, face in (("fit", "none"), ("heldout", f"C{i}")):
                rows = frame[(frame["regularizer"] == family) & (frame["half"] == half)]
                ax.scatter(rows[predictor], rows[target], s=14, facecolors=face,
                           edgecolors=f"C{i}", linewidths=0.8,
                           label=f"{family} ({half})" if ax is axes[0] else None)
        values = frame[predictor]
        if (values > 0).all() and values.max() > 10 * values.min():   # wide ranges only
            ax.set_xscale("log")
        ax.set(xlabel=predictor, ylabel=target)
    for ax in axes[len(predictors):]:
        ax.set_visible(False)
    axes[0].legend(fontsize="xx-small", frameon=False)
    fig.suptitle(title)
    return fig


def plot_correlation_heatmap(correlations: Any, *, half: str = "heldout",
                             title: str = "") -> Figure:
    """Spearman ρ of each predictor (rows) with each robustness measure (columns) on one half,
    each cell annotated with ρ and its bootstrap interval (``correlations`` from
    :func:`stabnb.validity.rank_correlations`)."""
    rows = correlations[correlations["half"] == half]
    predictors = list(dict.fromkeys(rows["predictor"]))
    targets = list(dict.fromkeys(rows["target"]))
    fig, ax = new_figure(width=1.0 * len(targets) + 2.5, height=0.45 * len(predictors) + 1.2)
    grid = np.full((len(predictors), len(targets)), np.nan)
    for r in rows.itertuples():
        i, j = predictors.index(r.predictor), targets.index(r.target)
        grid[i, j] = r.rho
        text = "n/a" if math.isnan(r.rho) else f"{r.rho:.2f}\n[{r.lo:.2f}, {r.hi:.2f}]"
        ax.text(j, i, text, ha="center", va="center", fontsize=5,
                color="white" if abs(r.rho) > 0.6 else "black")
    image = ax.imshow(grid, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    ax.set_xticks(range(len(targets)), targets, rotation=45, ha="right", fontsize="x-small")
    ax.set_yticks(range(len(predictors)), predictors, fontsize="x-small")
    fig.colorbar(image, ax=ax, label="Spearman ρ")
    ax.set_title(title or f"{half} half", fontsize="small")
    return fig


def plot_pareto(pareto: Any, *, model: str, metric: str, budget_points: float = 1.0) -> Figure:
    """Clean accuracy against instability for one model: every regulariser and control over its
    λ grid (a line in λ order, intervals over seeds on both axes), the baseline as a star, the
    accuracy budget as a dashed line and each regulariser's chosen point ringed.

    ``pareto`` is :func:`stabnb.frontier.pareto_table` (accuracy as a fraction; shown in %).
    """
    table = pareto[pareto["model"] == model]
    fig, ax = new_figure(width=5.2, height=3.8)
    base = table[table["regularizer"] == "none"].iloc[0]
    ax.axhline(100 * base["accuracy"] - budget_points, color="grey", ls="--", lw=0.8,
               label=f"budget: −{budget_points:g} pt")
    ax.plot(base["instability"], 100 * base["accuracy"], "k*", ms=10, label="baseline")
    for i, (name, group) in enumerate(table[table["regularizer"] != "none"].groupby("regularizer")):
        group = group.sort_values("strength")
        xs, ys = group["instability"], 100 * group["accuracy"]
        has_ci = bool(group["instability_lo"].notna().all())
        ax.errorbar(xs, ys, capsize=1.5, marker="o", ms=3, color=f"C{i}", label=name, lw=1,
                    xerr=(xs - group["instability_lo"], group["instability_hi"] - xs) if has_ci
                    else None,
                    yerr=(ys - 100 * group["accuracy_lo"], 100 * group["accuracy_hi"] - ys)
                    if has_ci else None)
        chosen = group[group["chosen"]]
        ax.plot(chosen["instability"], 100 * chosen["accuracy"], "o", ms=9, mfc="none",
                color=f"C{i}")
    ax.set(xlabel=f"instability ({metric}), lower is more stable", ylabel="clean accuracy (%)",
           title=f"{model}: accuracy–stability frontier (ringed: chosen λ)")
    ax.legend(fontsize="x-small", frameon=False, loc="best")
    return fig


def plot_entropy_link(tables: EntropyLinkTable | dict[str, EntropyLinkTable],
                      x: str = "spectral_entropy", y: str = "relative_l2", *,
                      num_bins: int = 10):
    """Scatter of ``y`` against ``x`` with the envelope as steps; ρ per table in the legend.

    Args:
        tables: one table, or ``{label: table}`` to overlay models (baseline vs regularised).
        x, y: column names. Default: ``"spectral_entropy"``, ``"relative_l2"``.
        num_bins: envelope bins (:func:`stabnb.entropy_link.envelope`). Default: 10.

    Returns:
        ``matplotlib.figure.Figure``.
    """
    if isinstance(tables, EntropyLinkTable):
        tables = {"": tables}
    fig, ax = new_figure(width=4.5, height=3.4)
    for i, (label, table) in enumerate(tables.items()):
        color = f"C{i}"
        xs, ys, _ = finite_pairs(table, x, y)
        bound = envelope(table, x, y, num_bins=num_bins)
        rho = rank_correlation(table, x, y).rho if xs.numel() >= 3 else math.nan
        name = f"{label} " if label else ""
        ax.scatter(xs.numpy(), ys.numpy(), s=8, alpha=0.35, color=color, linewidths=0)
        ax.stairs(bound.maximum.numpy(), bound.edges.numpy(), baseline=None, color=color,
                  linewidth=1.6, label=f"{name}envelope (max per bin), ρ = {rho:.2f}, n = {xs.numel()}")
    ax.set_xlabel(x.replace("_", " "))
    ax.set_ylabel(y.replace("_", " "))
    ax.legend(fontsize="small", frameon=False)
    return fig
