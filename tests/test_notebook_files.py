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
