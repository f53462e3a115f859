"""The smoke-profile reference of the study notebooks, which CI compares instead of nbval.

The committed notebooks hold the outputs of the ``quick`` profile (``make publish``). The cheap
notebooks (the tour, R1–R8, E1) are validated by nbval at that profile; the study notebooks,
minutes each at ``quick``, are run by the tests at ``smoke`` instead, and their claims (name,
verdict and the rounded summary line) compared with ``tests/reference/smoke_claims.json``
(``make smoke-reference`` rewrites it after a deliberate change).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import papermill

from ..io import read_json, write_json
from .manifest import KERNEL_ENV

__all__ = ["STUDY_NOTEBOOKS", "smoke_claims", "write_smoke_reference"]

STUDY_NOTEBOOKS = (
    "experiments/E2_synthetic_regularisation.ipynb",
    "experiments/E3_mnist.ipynb",
    "experiments/E4_cifar10.ipynb",
    "experiments/E5_entropy_instability.ipynb",
    "experiments/E6_cifar100.ipynb",
    "experiments/E7_robustness.ipynb",
    "experiments/E8_dynamics.ipynb",
)
"""Notebooks that train networks: checked at ``smoke`` against the reference, not by nbval
(``pyproject.toml`` ignores them for nbval; a test keeps the two lists equal)."""


def smoke_claims(key: str, notebooks_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Run notebook ``key`` at the smoke profile; its claims as ``{name, kind, verdict, summary}``."""
    source = Path(notebooks_dir) / key
    with tempfile.TemporaryDirectory() as scratch:
        result = Path(scratch) / "claims.json"
        previous = {k: os.environ.get(k) for k in KERNEL_ENV}
        os.environ.update(KERNEL_ENV)
        try:
            papermill.execute_notebook(
                str(source), str(Path(scratch) / source.name), kernel_name="python3",
                parameters={"profile": "smoke", "output_path": str(result)},
                cwd=str(source.parent), progress_bar=False)
        finally:
            for k, v in previous.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        data = read_json(result)
    return [{field: claim.get(field) for field in ("name", "kind", "verdict", "summary")}
            for claim in data.get("claims", [])] + (
        [{"skipped": data["skipped"]}] if data.get("skipped") else [])


def write_smoke_reference(notebooks_dir: str | os.PathLike, path: str | os.PathLike) -> None:
    """Rewrite the reference from fresh smoke runs of every study notebook."""
    write_json(path, {key: smoke_claims(key, notebooks_dir) for key in STUDY_NOTEBOOKS})
