"""Which notebooks run: the default list, selection by pattern, fingerprints and the manifest.

A notebook is skipped when its fingerprint -- its cells' sources, its parameters, the
stabnb source files, and the library versions and ``STABNB_*``/``CI`` settings -- equals
the one recorded at its last successful run and its result file is still there, unchanged.
"""

from __future__ import annotations

import ast
import fnmatch
import hashlib
import json
import os
import platform
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import papermill
import torch

from ..io import project_root, read_json, source_digest, write_json
from .provenance import version

__all__ = [
    "KERNEL_ENV", "NOTEBOOKS", "Entry", "select", "check_parameters", "ordered_keys",
    "stale_reason", "last_state", "read_manifest", "digest", "file_digest", "code_digest",
    "environment", "library_digest", "Manifest",
]

# Every notebook of the reproduction, in order, relative to <project>/notebooks.
# The environment of every kernel the runner starts: no progress bars; figures inline (embedded
# as images in the executed notebooks, which make publish commits).
KERNEL_ENV = {"STABNB_PROGRESS": "0", "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
# Settings that change how fast a run goes, not its numbers (each cell is computed the same way
# in the notebook's process or in a worker).
SPEED_SETTINGS = ("STABNB_JOBS",)
NOTEBOOKS = (
    "00_tour.ipynb",
    "theory/R1_product_representation.ipynb",
    "theory/R2_forward_sensitivity.ipynb",
    "theory/R3_entropy_sensitivity.ipynb",
    "theory/R4_parameter_sensitivity.ipynb",
    "theory/R5_gradient_attribution.ipynb",
    "theory/R6_integrated_gradients.ipynb",
    "theory/R7_label_noise_ntk.ipynb",
    "theory/R8_training_dynamics.ipynb",
    "experiments/E1_synthetic_concentration.ipynb",
    "experiments/E2_synthetic_regularisation.ipynb",
    "experiments/E3_mnist.ipynb",
    "experiments/E4_cifar10.ipynb",
    "experiments/E5_entropy_instability.ipynb",
    "experiments/E6_cifar100.ipynb",
    "experiments/E7_robustness.ipynb",
    "experiments/E8_dynamics.ipynb",
)
MANIFEST_VERSION = 1
# results/<profile>/<stem>.json names the runner writes itself.
RESERVED = ("claims", "manifest")


@dataclass
class Entry:
    """One notebook in this run's list: where it lives and where its outputs go."""

    key: str
    source: Path
    executed: Path
    result: Path
    selected: bool = True
    fingerprint: dict[str, str] = field(default_factory=dict)


def select(notebooks: list[str | os.PathLike] | None, only: list[str] | None,
            notebooks_dir: str | os.PathLike | None, results_dir: Path,
            runs_dir: Path) -> tuple[list[Entry], list[str]]:
    """The notebooks on disk (``selected`` per ``only``) and the selected ones not on disk."""
    root = Path(notebooks_dir) if notebooks_dir else _default_notebooks_dir()
    if notebooks:
        paths = [Path(p).resolve() for p in notebooks]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise ValueError(f"notebook path(s) {missing} do not exist; check the spelling, "
                             "or omit paths to run the default list.")
        wrong = [str(p) for p in paths if p.suffix != ".ipynb"]
        if wrong:
            raise ValueError(f"{wrong} are not notebooks; give .ipynb files.")
        keys = [p.relative_to(root.resolve()).as_posix() if p.is_relative_to(root.resolve())
                else p.name for p in paths]
        absent: list[str] = []
    else:
        keys = list(NOTEBOOKS)
        paths = [root / key for key in keys]
        absent = [key for key, p in zip(keys, paths) if not p.is_file()]
    stems = Counter(Path(key).stem for key in keys)
    clashes = sorted(stem for stem, count in stems.items() if count > 1 or stem in RESERVED)
    if clashes:
        raise ValueError(f"notebook name(s) {clashes} would overwrite another notebook's "
                         f"results or the report ({', '.join(RESERVED)}.json); rename them.")
    selected = set(keys)
    if only:
        selected = set()
        for pattern in only:
            glob = pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"
            hits = {key for key in keys if fnmatch.fnmatch(key, glob)}
            if not hits:
                raise ValueError(f"--only {pattern!r} matches no notebook; names are: "
                                 f"{', '.join(keys)}.")
            selected |= hits
    entries = [Entry(key, path, runs_dir / key, results_dir / f"{Path(key).stem}.json",
                      key in selected)
               for key, path in zip(keys, paths) if key not in absent]
    return entries, [key for key in absent if key in selected]


def check_parameters(entries: list[Entry], parameters: dict[str, Any]) -> None:
    """Refuse, before anything runs, a parameter that a selected notebook does not declare.

    papermill would inject an unknown name silently (a new cell after the ``parameters``
    cell), so a misspelt size would run the whole notebook at the profile's value.

    Raises:
        ValueError: naming the notebook, the unknown parameter(s) and the ones it knows.
    """
    for entry in entries:
        if not entry.selected:
            continue
        known = papermill.inspect_notebook(str(entry.source))
        unknown = sorted(set(parameters) - set(known))
        if unknown:
            raise ValueError(f"parameter(s) {unknown} are not declared by {entry.key}; its "
                             f"parameters are: {', '.join(known) or 'none'}. Check the spelling, "
                             "or select the notebooks that take it with --only.")


def _default_notebooks_dir() -> Path:
    """``notebooks/`` of the project holding this package, else of the working folder's."""
    candidate = project_root(Path(__file__).parent) / "notebooks"
    return candidate if candidate.is_dir() else project_root() / "notebooks"


def ordered_keys(entries: list[Entry], absent: list[str],
                  notebooks: list[str | os.PathLike] | None) -> list[str]:
    """The report's order: the explicit paths as given, else :data:`NOTEBOOKS`."""
    keys = {entry.key for entry in entries} | set(absent)
    order = [entry.key for entry in entries] if notebooks else list(NOTEBOOKS)
    return [key for key in order if key in keys]


def stale_reason(record: dict | None, entry: Entry) -> str | None:
    """Why ``entry`` must run again, or None when its last successful run still holds."""
    if record is None:
        return "never run"
    if record.get("status") != "ok":
        return f"last run: {record.get('status')}"
    for part, label in (("code", "code changed"), ("parameters", "parameters changed"),
                        ("package", "stabnb source changed"),
                        ("environment", "versions or STABNB_* settings changed")):
        if record.get("fingerprint", {}).get(part) != entry.fingerprint[part]:
            return label
    if record.get("result_sha256") != file_digest(entry.result):
        return "result file missing or changed"
    return None


def last_state(record: dict | None, stale: str | None) -> str:
    if record is None:
        return "never run"
    state = f"{record.get('status')} at {record.get('finished_at')}"
    return state if stale is None or stale.startswith("last run") else f"{state}, stale: {stale}"


def read_manifest(path: Path) -> dict[str, Any]:
    if path.exists():
        try:
            manifest = read_json(path)
        except ValueError:
            manifest = {}  # unreadable: every notebook reruns and it is rewritten
        if manifest.get("version") == MANIFEST_VERSION:
            return manifest
    return {"version": MANIFEST_VERSION, "notebooks": {}}


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def file_digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def code_digest(path: Path) -> str:
    """Hash of a notebook's cells (type, source, tags); outputs and metadata are ignored."""
    nb = nbformat.read(path, as_version=4)
    return digest([[cell.cell_type, cell.source, sorted(cell.metadata.get("tags", []))]
                    for cell in nb.cells])


def environment() -> dict[str, Any]:
    """The settings outside the notebooks that change their results."""
    settings = {key: value for key, value in os.environ.items()
                if key.startswith("STABNB_") and key not in (*KERNEL_ENV, *SPEED_SETTINGS)
                or key == "CI"}
    return {"python": platform.python_version(), "torch": torch.__version__,
            "captum": version("captum"), "settings": settings}


def library_digest(path: Path) -> str:
    """Digest of the stabnb code a notebook runs: :func:`stabnb.io.source_digest` of the stabnb
    modules its code cells import (and theirs), so an edit elsewhere in the package, or to
    docstrings and comments, does not make the notebook stale."""
    modules = set()
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type != "code":
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:  # IPython magics: no stabnb import to find there
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                modules |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    return source_digest(sorted(m for m in modules if m.split(".")[0] == "stabnb"))


class Manifest:
    """``results/<profile>/manifest.json``: each notebook's fingerprint and state at its last run,
    rewritten (atomically) after every notebook, so an interrupted run resumes where it stopped."""

    def __init__(self, path: Path):
        self.path = path
        self.data = read_manifest(path)

    def get(self, key: str) -> dict[str, Any] | None:
        """The record of notebook ``key``, or None if it never ran here."""
        return self.data["notebooks"].get(key)

    def record(self, entry: Entry, run: Any) -> None:
        """Store ``run`` (a :class:`~stabnb.reproduce.records.NotebookRun`) for ``entry``."""
        self.data["notebooks"][entry.key] = {
            "fingerprint": entry.fingerprint, "status": run.status, "wall_s": run.wall_s,
            "finished_at": run.finished_at, "commit": run.commit, "error": run.error,
            "result_sha256": file_digest(entry.result)}
        write_json(self.path, self.data)
