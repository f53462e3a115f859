"""Figures are shown once: never registered with pyplot, rendered as one PNG by ``fig``/``display``."""

import matplotlib.pyplot as plt
import nbformat
import pytest
import torch
from nbclient import NotebookClient

from stabnb import plotting


def _spectra_figure():
    return plotting.plot_operator_spectra({"a": torch.tensor([3.0, 2.0, 1.0])}, title="t")


def test_figures_are_not_registered_with_pyplot():
    before = plt.get_fignums()
    fig = _spectra_figure()
    assert plt.get_fignums() == before
    assert fig._repr_png_().startswith(b"\x89PNG")


@pytest.mark.parametrize("backend", ["", "%matplotlib inline\n"])
def test_each_figure_is_displayed_once_in_a_kernel(backend):
    """Headless (papermill's plain kernel) and with the inline backend switched on: a cell that
    builds a figure and ends in ``fig`` or ``display(fig)`` has exactly one image output."""
    cells = [f"{backend}import matplotlib.pyplot as plt\nimport torch\n"
             "from IPython.display import display\nimport stabnb.plotting as plotting",
             "fig = plotting.plot_operator_spectra({'a': torch.tensor([3.0, 1.0])}, title='t')\nfig",
             "fig = plotting.plot_operator_spectra({'a': torch.tensor([3.0, 1.0])}, title='t')\n"
             "display(fig)",
             "fig = plotting.plot_operator_spectra({'a': torch.tensor([3.0, 1.0])}, title='t')"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    images = [sum("image/png" in out.get("data", {}) for out in cell.outputs) for cell in nb.cells]
    assert images == [0, 1, 1, 0]
