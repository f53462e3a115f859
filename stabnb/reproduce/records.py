"""What a reproduce run produced: one :class:`NotebookRun` per notebook, the :class:`ReproduceResult`.

Recorded paths are relative to the out-root, and the out-root and project folders in
messages read ``<out-root>`` and ``<project>``: the records travel between machines.
"""

from __future__ import annotations

import signal
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..io import project_root, read_json
from .manifest import Entry
from .provenance import now

__all__ = ["NotebookRun", "ReproduceResult", "finished_run", "recorded_run", "read_claims"]

FAILED = ("error", "data missing", "interrupted")


@dataclass(frozen=True)
class NotebookRun:
    """One notebook's state after a reproduce run.

    ``status`` is ``"ok"`` (ran now), ``"unchanged"`` (last successful run reused),
    ``"error"``, ``"data missing"`` (the notebook raised a data-source error),
    ``"interrupted"``, ``"not on disk"`` (a listed notebook not written yet) or
    ``"not selected"`` (excluded by ``only``; ``note`` gives its last recorded state).
    ``executed`` and ``result`` are relative to the out-root.
    """

    path: str
    status: str
    note: str = ""
    wall_s: float | None = None
    finished_at: str | None = None
    commit: str | None = None
    error: str | None = None
    executed: str | None = None
    result: str | None = None
    claims: tuple[dict[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "claims": list(self.claims)}


@dataclass(frozen=True)
class ReproduceResult:
    """What :func:`reproduce` did: every notebook's run, the report files, the provenance."""

    profile: str
    notebooks: tuple[NotebookRun, ...]
    provenance: dict[str, Any]
    claims_path: Path
    report_path: Path
    stop_signal: int | None = None

    @property
    def interrupted(self) -> bool:
        """Whether a signal (SIGINT, SIGTERM) stopped the run."""
        return self.stop_signal is not None

    @property
    def failed(self) -> tuple[NotebookRun, ...]:
        """The notebooks that errored in this run."""
        return tuple(run for run in self.notebooks if run.status in FAILED)

    @property
    def exit_code(self) -> int:
        """0 when every selected notebook ran, whatever its verdicts; 128 + the signal number
        if stopped by one (130 for SIGINT, 143 for SIGTERM); else 1."""
        return 128 + self.stop_signal if self.interrupted else 1 if self.failed else 0

    def to_dict(self) -> dict[str, Any]:
        return {"profile": self.profile, "provenance": self.provenance,
                "notebooks": [run.to_dict() for run in self.notebooks],
                "claims_path": str(self.claims_path), "report_path": str(self.report_path),
                "interrupted": self.interrupted,
                "stop_signal": signal.Signals(self.stop_signal).name if self.interrupted else None,
                "exit_code": self.exit_code}


def finished_run(entry: Entry, outcome: dict[str, Any], commit: str, root: Path) -> NotebookRun:
    """A notebook run now; ``root`` is the out-root."""
    claims: tuple[dict[str, Any], ...] = ()
    note = ""
    if outcome["status"] == "ok":
        claims, note = read_claims(entry.result)
    return NotebookRun(entry.key, outcome["status"], portable(note, root), outcome["wall_s"],
                       now(), commit, portable(outcome["error"], root),
                       _relative(entry.executed, root), _relative(entry.result, root), claims)


def recorded_run(entry: Entry, record: dict | None, status: str, note: str,
                 root: Path) -> NotebookRun:
    """A notebook not run now, described by its manifest record and result file."""
    record = record or {}
    claims: tuple[dict[str, Any], ...] = ()
    if record.get("status") == "ok":
        claims, result_note = read_claims(entry.result)
        note = "; ".join(filter(None, (note, result_note)))
    return NotebookRun(entry.key, status, portable(note, root), record.get("wall_s"),
                       record.get("finished_at"), record.get("commit"),
                       portable(record.get("error"), root), _relative(entry.executed, root),
                       _relative(entry.result, root), claims)


def _relative(path: Path, root: Path) -> str | None:
    return path.relative_to(root).as_posix() if path.exists() else None


def portable(text: str | None, root: Path) -> str | None:
    """``text`` with the out-root ``root`` and the project folder written ``<out-root>`` and
    ``<project>``, so a message recorded here names no folder of this machine."""
    if not text:
        return text
    folders = {str(root): "<out-root>"}
    project = project_root(Path(__file__).parent)
    if project is not None:
        folders.setdefault(str(project), "<project>")
    for folder, name in sorted(folders.items(), key=lambda item: -len(item[0])):
        text = text.replace(folder, name)
    return text


def read_claims(path: Path) -> tuple[tuple[dict[str, Any], ...], str]:
    """The claims in a notebook's result JSON, and a note when there are none to read."""
    if not path.exists():
        return (), "wrote no claims file (no nb.finish() with output_path)"
    try:
        data = read_json(path, fix="rerun with --force")
    except ValueError as err:
        return (), str(err)
    skipped = data.get("skipped")
    return tuple(data.get("claims", [])), f"skipped by the notebook: {skipped}" if skipped else ""
