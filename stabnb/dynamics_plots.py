"""Figures of E8 (:mod:`stabnb.dynamics`, :mod:`stabnb.label_noise`): results in, Figure out.

Kept beside :mod:`stabnb.plotting` (whose :func:`~stabnb.plotting.new_figure` they use) so the
training-dynamics figures live in one place; none computes anything expensive, none saves.
"""

from __future__ import annotations

import matplotlib
from matplotlib.figure import Figure

from .dynamics import LRSweep
from .label_noise import LabelNoiseRun, band_names
from .plotting import new_figure

__all__ = ["plot_sweep_loss", "plot_sharpness", "plot_ntk_drift", "plot_noise_fitting",
           "plot_band_remaining"]


def _colours(count: int) -> list:
    return [matplotlib.colormaps["viridis"](i / max(count - 1, 1)) for i in range(count)]


def _legend_outside(ax) -> None:
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))


def plot_sweep_loss(sweep: LRSweep) -> Figure:
    """Training loss per step, one line per learning-rate multiple (log scale)."""
    fig, ax = new_figure(width=4.6)
    for m, run, colour in zip(sweep.multiples, sweep.runs, _colours(len(sweep.runs))):
        label = f"η = {m:g}·2/λ₀" + (" (diverged)" if run.diverged else "")
        ax.plot(run.loss.numpy(), color=colour, label=label)
    ax.set(yscale="log", xlabel="step", ylabel="training loss", title="full-batch GD")
    _legend_outside(ax)
    return fig


def plot_sharpness(sweep: LRSweep) -> Figure:
    """λ_max(H_t) per tracked step (Lanczos) with the 2/η line of each run: the EoS plot."""
    fig, ax = new_figure(width=4.6)
    for m, run, colour in zip(sweep.multiples, sweep.runs, _colours(len(sweep.runs))):
        if run.diverged:
            continue
        ax.plot(run.tracked_steps.numpy(), run.sharpness.numpy(), "o-", ms=3, color=colour,
                label=f"η = {m:g}·2/λ₀")
        ax.axhline(2 / run.lr, color=colour, ls="--", lw=0.8)
    ax.set(yscale="log", xlabel="step", ylabel="sharpness λ_max(H_t)",
           title="sharpness (dashed: 2/η); diverged runs left out")
    _legend_outside(ax)
    return fig


def plot_ntk_drift(sweep: LRSweep) -> Figure:
    """Relative NTK drift ‖K_t − K_0‖_F/‖K_0‖_F per tracked step and learning rate."""
    fig, ax = new_figure(width=4.6)
    for m, run, colour in zip(sweep.multiples, sweep.runs, _colours(len(sweep.runs))):
        ax.plot(run.tracked_steps.numpy(), run.drift.numpy(), "o-", ms=3, color=colour,
                label=f"η = {m:g}·2/λ₀" + (" (diverged)" if run.diverged else ""))
    ax.set(xlabel="step", ylabel="‖K_t − K_0‖_F / ‖K_0‖_F", title="NTK drift on the probe set")
    _legend_outside(ax)
    return fig


def plot_noise_fitting(result: LabelNoiseRun) -> Figure:
    """Fraction of flipped (solid) and clean (dashed) examples predicted as their given label."""
    fig, ax = new_figure(width=4.6)
    steps = result.steps.numpy()
    for p, noisy, clean, colour in zip(result.fractions, result.noisy_fit, result.clean_fit,
                                       _colours(len(result.fractions))):
        if p > 0:
            ax.plot(steps, noisy.numpy(), color=colour, label=f"{p:.0%} flipped: flipped")
        ax.plot(steps, clean.numpy(), color=colour, ls="--", label=f"{p:.0%} flipped: clean")
    ax.axhline(0.5, color="black", lw=0.6, ls=":")
    ax.set(xlabel="step", ylabel="fraction predicted as given label", ylim=(0, 1.02),
           title="fitting flipped and clean labels")
    ax.legend(fontsize="x-small", ncol=2)
    return fig


def plot_band_remaining(result: LabelNoiseRun) -> Figure:
    """Label noise remaining per NTK eigen-band (solid, measured; dashed, linearised), one
    panel per noise fraction."""
    levels = [k for k, p in enumerate(result.fractions) if p > 0]
    fig, axes = new_figure(ncols=len(levels), width=3.4)
    axes = axes.ravel() if len(levels) > 1 else [axes]
    steps = result.steps.numpy()
    for ax, k in zip(axes, levels):
        remaining, linear = result.remaining[k], result.linearised[k]
        names = band_names(remaining.shape[1])
        for b, (name, colour) in enumerate(zip(names, _colours(remaining.shape[1]))):
            ax.plot(steps, remaining[:, b].numpy(), color=colour, label=name)
            ax.plot(steps, linear[:, b].numpy(), color=colour, ls="--", lw=0.8)
        ax.set(xlabel="step", ylabel="noise remaining", ylim=(0, 1.05),
               title=f"{result.fractions[k]:.0%} flipped")
    axes[0].legend(title="NTK band", fontsize="small")
    return fig
