"""Figures of the experiment notebooks: λ sweeps, effects, frontiers, robustness (E7), the
entropy link (E5)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..entropy_link import EntropyLinkTable, envelope, finite_pairs, rank_correlation
from .base import new_figure


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
