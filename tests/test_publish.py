"""Publishing executed notebooks onto their sources (make publish)."""

import shutil
from pathlib import Path

import nbformat
import papermill
import pytest

from stabnb.reproduce.publish import KERNELSPEC, publish_notebooks

FIXTURES = Path(__file__).parent / "fixtures"


def test_publish_keeps_outputs_and_drops_papermill_traces(tmp_path):
    sources, runs = tmp_path / "notebooks", tmp_path / "runs"
    sources.mkdir()
    shutil.copy(FIXTURES / "verdicts.ipynb", sources / "verdicts.ipynb")
    runs.mkdir()
    papermill.execute_notebook(str(sources / "verdicts.ipynb"), str(runs / "verdicts.ipynb"),
                               parameters={"seed": 3}, kernel_name="python3",
                               progress_bar=False, cwd=str(sources))
    assert publish_notebooks(runs, sources, keys=("verdicts.ipynb",)) == ["verdicts.ipynb"]
    nb = nbformat.read(sources / "verdicts.ipynb", as_version=4)
    assert not any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells)
    assert "papermill" not in nb.metadata and nb.metadata["kernelspec"] == KERNELSPEC
    assert all("papermill" not in c.metadata and "execution" not in c.metadata for c in nb.cells)
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                      for o in c.get("outputs", []))
    assert "bounded:" in printed                         # the real outputs are kept
    assert [p.name for p in sources.iterdir()] == ["verdicts.ipynb"]


def test_publish_refuses_outputs_of_other_cells(tmp_path):
    sources, runs = tmp_path / "notebooks", tmp_path / "runs"
    sources.mkdir()
    runs.mkdir()
    shutil.copy(FIXTURES / "verdicts.ipynb", runs / "verdicts.ipynb")
    edited = nbformat.read(FIXTURES / "verdicts.ipynb", as_version=4)
    edited.cells.append(nbformat.v4.new_code_cell("print('new')"))
    nbformat.write(edited, sources / "verdicts.ipynb")
    with pytest.raises(ValueError, match="cells changed since"):
        publish_notebooks(runs, sources, keys=("verdicts.ipynb",))
