"""Publish executed notebooks: the outputs a reader sees before running anything.

``make publish`` copies each notebook executed by the reproduce command (``runs/<profile>/``) onto
its source under ``notebooks/``, with the papermill traces removed (the injected-parameters cell,
per-cell execution metadata, the notebook's papermill record), so the committed notebook holds the
real outputs of that profile, figures embedded, and its own ``parameters`` cell. A source whose cells
changed since the run is refused: its outputs would not be its own.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat

from .manifest import NOTEBOOKS, code_digest

__all__ = ["KERNELSPEC", "published", "publish_notebooks"]

KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
"""What JupyterLab writes, so opening a notebook does not mark it modified."""


def published(executed: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """``executed`` without papermill's traces: its injected cell and execution metadata."""
    nb = nbformat.from_dict(executed)
    nb.cells = [cell for cell in nb.cells
                if "injected-parameters" not in cell.metadata.get("tags", [])]
    for cell in nb.cells:
        for key in ("papermill", "execution"):
            cell.metadata.pop(key, None)
    nb.metadata.pop("papermill", None)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    return nb


def publish_notebooks(runs_dir: str | os.PathLike, notebooks_dir: str | os.PathLike,
                      keys: tuple[str, ...] = NOTEBOOKS) -> list[str]:
    """Copy every executed notebook of ``runs_dir`` onto its source; return the keys published.

    Raises:
        ValueError: an executed notebook whose cells differ from its source (rerun it first).
    """
    runs_dir, notebooks_dir = Path(runs_dir), Path(notebooks_dir)
    done = []
    for key in keys:
        executed_path, source_path = runs_dir / key, notebooks_dir / key
        if not executed_path.is_file() or not source_path.is_file():
            continue
        nb = published(nbformat.read(executed_path, as_version=4))
        probe = notebooks_dir / f".{source_path.name}.publish-check.ipynb"
        try:
            nbformat.write(nb, probe)
            if code_digest(probe) != code_digest(source_path):
                raise ValueError(f"{key}: its cells changed since {executed_path} was run; "
                                 "rerun it (make reproduce) before publishing.")
        finally:
            probe.unlink(missing_ok=True)
        nbformat.write(nb, source_path)
        done.append(key)
    return done
