"""The committed notebooks as JupyterLab writes them, so opening one does not mark it modified."""

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").rglob("*.ipynb"))
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_kernelspec_is_what_jupyterlab_writes(path):
    assert json.loads(path.read_text())["metadata"]["kernelspec"] == KERNELSPEC


def _cheap_notebooks():
    """The notebooks nbval validates (the tour, R1–R8, E1): every notebook but the study ones."""
    from stabnb.reproduce.reference import STUDY_NOTEBOOKS

    return [p for p in NOTEBOOKS if p.relative_to(ROOT / "notebooks").as_posix() not in STUDY_NOTEBOOKS]


@pytest.mark.parametrize("path", _cheap_notebooks(), ids=lambda p: p.stem)
def test_parameters_are_typed_explained_and_introduced_by_a_readers_path(path):
    import papermill

    parameters = papermill.inspect_notebook(str(path))
    untyped = [name for name, p in parameters.items()
               if p["inferred_type_name"] in ("None", "Unknown type") or not p["help"]]
    assert not untyped, f"parameters without a type papermill reads or a help comment: {untyped}"
    cells = json.loads(path.read_text())["cells"]
    at = next(i for i, c in enumerate(cells) if "parameters" in c["metadata"].get("tags", []))
    above = cells[at - 1]
    assert above["cell_type"] == "markdown" and "".join(above["source"]).startswith("## Reader's path")
    assert "if profile ==" not in "".join("".join(c["source"]) for c in cells)


@pytest.mark.parametrize("path", _cheap_notebooks(), ids=lambda p: p.stem)
def test_claim_cells_are_tagged_and_identities_stand_apart(path):
    cells = json.loads(path.read_text())["cells"]
    heading = None
    for cell in cells:
        source = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            heading = next((line for line in reversed(source.splitlines()) if line.startswith("## ")),
                           heading)
        if cell["cell_type"] != "code":
            continue
        assert "NBVAL_" not in source, "use the nbval-check-output cell tag, not a visible comment"
        if "nb.claim(" in source:
            assert "nbval-check-output" in cell["metadata"].get("tags", []), source[:80]
            identity = 'kind="identity"' in source
            assert identity == (heading == "## Implementation identities"), (heading, source[:80])
