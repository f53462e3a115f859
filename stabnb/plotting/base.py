"""The house figure: a Figure a notebook shows once, in the house style."""

from __future__ import annotations

import io

import seaborn as sns
from matplotlib.figure import Figure


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
