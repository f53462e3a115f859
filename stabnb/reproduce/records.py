"""What a reproduce run produced: one :class:`NotebookRun` per notebook, the :class:`ReproduceResult`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..io import read_json
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
    interrupted: bool = False

    @property
    def failed(self) -> tuple[NotebookRun, ...]:
        """The notebooks that errored in this run."""
        return tuple(run for run in self.notebooks if run.status in FAILED)

    @property
    def exit_code(self) -> int:
        """0 when every selected notebook ran, whatever its verdicts; 130 if interrupted; else 1."""
        return 130 if self.interrupted else 1 if self.failed else 0

    def to_dict(self) -> dict[str, Any]:
        return {"profile": self.profile, "provenance": self.provenance,
                "notebooks": [run.to_dict() for run in self.notebooks],
                "claims_path": str(self.claims_path), "report_path": str(self.report_path),
                "interrupted": self.interrupted, "exit_code": self.exit_code}


def finished_run(entry: Entry, outcome: dict[str, Any], commit: str) -> NotebookRun:
    claims: tuple[dict[str, Any], ...] = ()
    note = ""
    if outcome["status"] == "ok":
        claims, note = read_claims(entry.result)
    return NotebookRun(entry.key, outcome["status"], note, outcome["wall_s"], now(), commit,
                       outcome["error"], str(entry.executed) if entry.executed.exists() else None,
                       str(entry.result) if entry.result.exists() else None, claims)


def recorded_run(entry: Entry, record: dict | None, status: str, note: str) -> NotebookRun:
    """A notebook not run now, described by its manifest record and result file."""
    record = record or {}
    claims: tuple[dict[str, Any], ...] = ()
    if record.get("status") == "ok":
        claims, result_note = read_claims(entry.result)
        note = "; ".join(filter(None, (note, result_note)))
    return NotebookRun(entry.key, status, note, record.get("wall_s"), record.get("finished_at"),
                       record.get("commit"), record.get("error"),
                       str(entry.executed) if entry.executed.exists() else None,
                       str(entry.result) if entry.result.exists() else None, claims)


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
