"""Figures: results in, ``matplotlib.figure.Figure`` out.

Each function takes computed results (tensors, dataclasses, dicts) and returns a Figure;
none computes anything expensive, and none saves (``Notebook.save_figure`` does).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import seaborn as sns
from matplotlib.figure import Figure

__all__ = ["new_figure"]


def new_figure(ncols: int = 1, nrows: int = 1, *, width: float = 4.0,
               height: float = 3.2) -> tuple[Figure, object]:
    """A figure of ``nrows × ncols`` panels in the house style (seaborn ticks, constrained layout)."""
    sns.set_theme(style="ticks", context="paper")
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows),
                             layout="constrained", squeeze=False)
    return fig, axes if nrows * ncols > 1 else axes[0, 0]
