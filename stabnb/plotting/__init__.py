"""Figures: results in, ``matplotlib.figure.Figure`` out.

Each function takes computed results (tensors, dataclasses, dicts) and returns a Figure;
none computes anything expensive, and none saves (``Notebook.save_figure`` does).
"""

from .base import NotebookFigure, figure_png, new_figure
from .experiments import (plot_correlation_heatmap, plot_entropy_link, plot_pareto,
                          plot_predictor_scatter, plot_regularizer_effects, plot_strength_sweep)
from .theory import (plot_attribution_maps, plot_bound_chain, plot_bound_vs_actual,
                     plot_concentration, plot_error_ecdf, plot_gd_loss, plot_gd_step_sizes,
                     plot_gradient_flow, plot_hessian_vs_ntk, plot_noise_absorption,
                     plot_operator_spectra, plot_saliency_jumps, plot_sensitivity_chain,
                     plot_slack_ecdf)

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
