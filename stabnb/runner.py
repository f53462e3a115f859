"""The reproduce command: run every notebook headless, skip what is unchanged, write a report.

Each notebook runs with papermill in a fresh ``python3`` kernel whose working folder is the
notebook's own, with the parameters ``profile``, ``seed``, ``device`` and ``output_path``
injected (``STABNB_PROGRESS=0``, ``MPLBACKEND=Agg`` in its environment). Outputs, under
``out_root``::

    figures/<profile>/<name>.png, .pdf        figures (``STABNB_FIGURES_DIR`` for the kernels)
    runs/<profile>/<relative path>.ipynb      executed notebooks (errors included)
    results/<profile>/<stem>.json             each notebook's claims (Notebook.finish)
    results/<profile>/manifest.json           fingerprints of the last runs (skip/resume)
    results/<profile>/claims.json, REPORT.md  every claim, its numbers, verdict, provenance

A notebook is skipped when its fingerprint -- its cells' sources, its parameters, the
stabnb source files, and the library versions and ``STABNB_*``/``CI`` settings -- equals
the one recorded at its last successful run and its result file is still there, unchanged.
The manifest is rewritten after every notebook, so an interrupted run resumes where it
stopped. A failing notebook does not stop the others; it makes the exit code non-zero.
A claim that does not reproduce is a result, not a failure.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import multiprocessing
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import nbformat
import papermill
import torch

from .checks import resolve_device
from .io import package_digest, read_json, write_json, write_text
from .notebook import PROFILES, project_root

__all__ = ["NOTEBOOKS", "NotebookRun", "ReproduceResult", "reproduce"]

# Every notebook of the reproduction, in order, relative to <project>/notebooks.
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
)
KERNEL_ENV = {"STABNB_PROGRESS": "0", "MPLBACKEND": "Agg"}
# Exception names (in a notebook) meaning "this notebook's data source is missing" (stabnb.data).
DATA_ERRORS = ("DataSourceError",)
FAILED = ("error", "data missing", "interrupted")
MANIFEST_VERSION = 1
# results/<profile>/<stem>.json names the runner writes itself.
RESERVED = ("claims", "manifest")
# Folders of outputs, not sources: changes there do not make a checkout dirty.
OUTPUT_FOLDERS = ("results", "runs", "figures")


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


@dataclass
class _Entry:
    """One notebook in this run's list: where it lives and where its outputs go."""

    key: str
    source: Path
    executed: Path
    result: Path
    selected: bool = True
    fingerprint: dict[str, str] = field(default_factory=dict)


def reproduce(profile: str = "quick", *, device: str = "auto", jobs: int | None = None,
              notebooks: list[str | os.PathLike] | None = None, only: list[str] | None = None,
              force: bool = False, allow_cpu_paper: bool = False, seed: int = 0,
              out_root: str | os.PathLike = ".",
              notebooks_dir: str | os.PathLike | None = None) -> ReproduceResult:
    """Run the notebooks at ``profile`` on ``device`` and write the report.

    Args:
        profile: ``"smoke"``, ``"quick"`` (the CPU default) or ``"paper"`` (a GPU).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; injected resolved.
        jobs: notebooks run at once. Default: ``min(2, cpu count)``, 1 on a GPU.
        notebooks: explicit notebook paths (each must exist). Default: :data:`NOTEBOOKS`
            under ``notebooks_dir``, skipping (and reporting) those not written yet.
        only: keep the notebooks whose relative path matches one of these patterns
            (``fnmatch``; a pattern without wildcards matches as a substring, e.g. ``"E3"``).
        force: rerun notebooks even when unchanged.
        allow_cpu_paper: allow ``profile="paper"`` without a GPU (hours on a CPU).
        seed: the ``seed`` parameter of every notebook.
        out_root: folder receiving ``runs/`` and ``results/``. Default: the working folder.
        notebooks_dir: folder the default list is read from. Default: ``<project>/notebooks``.

    Returns:
        A :class:`ReproduceResult`; its ``exit_code`` is non-zero if a notebook errored.

    Raises:
        ValueError: unknown profile or device, ``paper`` without a GPU, a missing notebook
            path, a pattern matching nothing, ``jobs < 1``.
    """
    started = time.perf_counter()
    if profile not in PROFILES:
        raise ValueError(f"profile={profile!r} is unknown; choose one of {', '.join(PROFILES)}.")
    resolved = resolve_device(device)
    if profile == "paper" and resolved.type != "cuda" and not allow_cpu_paper:
        raise ValueError(
            f"profile 'paper' needs a GPU, but device={device!r} resolves to {resolved} "
            f"(CUDA available: {torch.cuda.is_available()}); run it on a GPU machine, use "
            "--profile quick on a CPU, or pass --allow-cpu-paper to run it anyway (hours).")
    if jobs is None:
        jobs = 1 if resolved.type == "cuda" else min(2, os.cpu_count() or 1)
    if jobs < 1:
        raise ValueError(f"jobs={jobs} must be at least 1.")
    out_root = Path(out_root).resolve()
    results_dir, runs_dir = out_root / "results" / profile, out_root / "runs" / profile
    entries, absent = _select(notebooks, only, notebooks_dir, results_dir, runs_dir)

    parameters = {"profile": profile, "seed": seed, "device": str(resolved)}
    shared = {"parameters": _digest(parameters), "package": package_digest(),
              "environment": _digest(_environment())}
    for entry in entries:
        entry.fingerprint = {"code": _code_digest(entry.source), **shared}
    manifest_path = results_dir / "manifest.json"
    manifest = _read_manifest(manifest_path)
    provenance = _provenance(profile, seed, resolved, jobs)

    runs: dict[str, NotebookRun] = {key: NotebookRun(key, "not on disk",
                                                     "not written yet; skipped")
                                    for key in absent}
    todo = []
    for entry in entries:
        record = manifest["notebooks"].get(entry.key)
        stale = _stale_reason(record, entry)
        if not entry.selected:
            runs[entry.key] = _recorded_run(entry, record, "not selected",
                                            f"last state: {_last_state(record, stale)}")
        elif stale is None and not force:
            runs[entry.key] = _recorded_run(entry, record, "unchanged", "reused last run")
        else:
            todo.append((entry, "forced" if force and stale is None else stale))

    total = sum(entry.selected for entry in entries)
    width = len(str(max(total, 1)))
    for entry in entries:
        if entry.selected and entry.key in runs:
            run = runs[entry.key]
            print(f"[{'-' * width}/{total}] {'unchanged':<12} {entry.key} "
                  f"(last run {run.finished_at}, {run.wall_s:.1f} s)", flush=True)
    for key in absent:
        print(f"[{'-' * width}/{total}] {'not on disk':<12} {key} (skipped)", flush=True)

    def finish(index: int, entry: _Entry, outcome: dict[str, Any]) -> None:
        """Record a finished notebook in the manifest (rewritten at once) and print it."""
        run = _finished_run(entry, outcome, provenance["commit"])
        runs[entry.key] = run
        manifest["notebooks"][entry.key] = {
            "fingerprint": entry.fingerprint, "status": run.status, "wall_s": run.wall_s,
            "finished_at": run.finished_at, "commit": run.commit, "error": run.error,
            "result_sha256": _file_digest(entry.result)}
        write_json(manifest_path, manifest)
        print(f"[{index:>{width}}/{total}] {run.status:<12} {entry.key} "
              f"{run.wall_s:.1f} s  {run.error or _verdict_counts(run.claims)}", flush=True)

    tasks = [(index, entry, {
        "source": str(entry.source), "executed": str(entry.executed),
        "parameters": {**parameters, "output_path": str(entry.result)},
        "label": f"[{index:>{width}}/{total}] {'start':<12} {entry.key} ({reason})"})
        for index, (entry, reason) in enumerate(todo, start=1)]
    results_dir.mkdir(parents=True, exist_ok=True)
    kernel_env = {**KERNEL_ENV, "STABNB_FIGURES_DIR": str(out_root / "figures")}
    if resolved.type == "cpu" and jobs > 1 and "OMP_NUM_THREADS" not in os.environ:
        # Kernels side by side must not oversubscribe the cores: OpenMP threads that outnumber
        # them spin against each other and slow small kernels many times over.
        kernel_env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    unstarted = _run_notebooks(tasks, jobs, finish, kernel_env)
    interrupted = unstarted is not None
    for entry in unstarted or ():
        runs[entry.key] = NotebookRun(entry.key, "interrupted",
                                      "not run: the run was interrupted; rerun to resume")
    provenance["wall_s"] = round(time.perf_counter() - started, 1)

    ordered = tuple(runs[key] for key in _ordered_keys(entries, absent, notebooks))
    claims_path, report_path = results_dir / "claims.json", results_dir / "REPORT.md"
    result = ReproduceResult(profile, ordered, provenance, claims_path, report_path,
                             interrupted)
    write_json(claims_path, {
        "profile": profile, "provenance": provenance,
        "notebooks": [{k: v for k, v in run.to_dict().items() if k != "claims"}
                      for run in ordered],
        "claims": [{"notebook": run.path, **claim} for run in ordered for claim in run.claims]})
    write_text(report_path, _render_report(result, out_root))
    return result


def _run_notebooks(tasks: list[tuple[int, _Entry, dict[str, Any]]], jobs: int,
                   finish: Callable[[int, _Entry, dict[str, Any]], None],
                   kernel_env: dict[str, str]) -> list[_Entry] | None:
    """Run ``tasks`` in a pool of ``jobs`` worker processes, calling ``finish`` on each outcome.

    Processes, not threads: papermill changes the working folder of its process. At most
    ``jobs`` notebooks are handed out at once, so on Ctrl-C nothing is queued: the running
    notebooks stop their kernels and report "interrupted", and the entries never started
    are returned. Returns None when the run was not interrupted.
    """
    if not tasks:
        return None
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    pool = ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=context,
                               initializer=_init_worker, initargs=(kernel_env,))
    waiting = list(tasks)
    running: dict[Future, tuple[int, _Entry]] = {}

    def settle(future: Future) -> None:
        index, entry = running.pop(future)
        try:
            outcome = future.result()
        except Exception as err:  # the worker process itself died
            outcome = {"status": "error", "error": f"{type(err).__name__}: {err}", "wall_s": 0.0}
        finish(index, entry, outcome)

    try:
        while waiting or running:
            while waiting and len(running) < jobs:
                index, entry, task = waiting.pop(0)
                entry.result.unlink(missing_ok=True)
                running[pool.submit(_execute, task)] = (index, entry)
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                settle(future)
    except KeyboardInterrupt:
        print("interrupted: stopping the running notebooks; rerun to resume.", flush=True)
        pool.shutdown(wait=True)
        for future in list(running):
            settle(future)
        return [entry for _, entry, _ in waiting]
    finally:
        pool.shutdown(wait=True)
    return None


def _select(notebooks: list[str | os.PathLike] | None, only: list[str] | None,
            notebooks_dir: str | os.PathLike | None, results_dir: Path,
            runs_dir: Path) -> tuple[list[_Entry], list[str]]:
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
    entries = [_Entry(key, path, runs_dir / key, results_dir / f"{Path(key).stem}.json",
                      key in selected)
               for key, path in zip(keys, paths) if key not in absent]
    return entries, [key for key in absent if key in selected]


def _default_notebooks_dir() -> Path:
    """``notebooks/`` of the project holding this package, else of the working folder's."""
    candidate = project_root(Path(__file__).parent) / "notebooks"
    return candidate if candidate.is_dir() else project_root() / "notebooks"


def _ordered_keys(entries: list[_Entry], absent: list[str],
                  notebooks: list[str | os.PathLike] | None) -> list[str]:
    """The report's order: the explicit paths as given, else :data:`NOTEBOOKS`."""
    keys = {entry.key for entry in entries} | set(absent)
    order = [entry.key for entry in entries] if notebooks else list(NOTEBOOKS)
    return [key for key in order if key in keys]


def _init_worker(kernel_env: dict[str, str]) -> None:
    """Set the environment of the kernels a pool worker starts (quiet bars, headless plots,
    figures under the out-root).

    An idle worker ignores Ctrl-C; :func:`_execute` listens to it while a notebook runs.
    """
    os.environ.update(kernel_env)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _execute(task: dict[str, Any]) -> dict[str, Any]:
    """Run one notebook with papermill (in a pool worker); never raises for notebook errors.

    papermill writes the executed notebook to a temporary sibling as it goes; it is moved
    onto ``runs/...`` at the end, so the final file always holds a whole run.
    """
    sys.stdout.write(task["label"] + "\n")  # one write: lines of parallel workers stay whole
    sys.stdout.flush()
    source, executed = Path(task["source"]), Path(task["executed"])
    executed.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(prefix=f".{executed.stem}.", suffix=".tmp.ipynb",
                                   dir=executed.parent)
    os.close(fd)
    outcome: dict[str, Any] = {"status": "ok", "error": None}
    started = time.perf_counter()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        papermill.execute_notebook(str(source), partial, parameters=task["parameters"],
                                   kernel_name="python3", language="python", cwd=str(source.parent),
                                   progress_bar=False, start_timeout=180)
    except papermill.PapermillExecutionError as err:
        evalue = err.evalue if len(err.evalue) <= 400 else err.evalue[:400] + " ..."
        outcome = {"status": "data missing" if err.ename in DATA_ERRORS else "error",
                   "error": f"cell [{err.exec_count}]: {err.ename}: {evalue}"}
    except Exception as err:  # a dead kernel, a timeout, an unreadable notebook
        outcome = {"status": "error", "error": f"{type(err).__name__}: {err}"}
    except KeyboardInterrupt:  # papermill has shut the kernel down
        outcome = {"status": "interrupted", "error": "interrupted; rerun to resume"}
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        outcome["wall_s"] = round(time.perf_counter() - started, 2)
        if os.path.getsize(partial):
            os.replace(partial, executed)
        else:
            os.unlink(partial)
    return outcome


def _finished_run(entry: _Entry, outcome: dict[str, Any], commit: str) -> NotebookRun:
    claims: tuple[dict[str, Any], ...] = ()
    note = ""
    if outcome["status"] == "ok":
        claims, note = _read_claims(entry.result)
    return NotebookRun(entry.key, outcome["status"], note, outcome["wall_s"], _now(), commit,
                       outcome["error"], str(entry.executed) if entry.executed.exists() else None,
                       str(entry.result) if entry.result.exists() else None, claims)


def _recorded_run(entry: _Entry, record: dict | None, status: str, note: str) -> NotebookRun:
    """A notebook not run now, described by its manifest record and result file."""
    record = record or {}
    claims: tuple[dict[str, Any], ...] = ()
    if record.get("status") == "ok":
        claims, result_note = _read_claims(entry.result)
        note = "; ".join(filter(None, (note, result_note)))
    return NotebookRun(entry.key, status, note, record.get("wall_s"), record.get("finished_at"),
                       record.get("commit"), record.get("error"),
                       str(entry.executed) if entry.executed.exists() else None,
                       str(entry.result) if entry.result.exists() else None, claims)


def _read_claims(path: Path) -> tuple[tuple[dict[str, Any], ...], str]:
    """The claims in a notebook's result JSON, and a note when there are none to read."""
    if not path.exists():
        return (), "wrote no claims file (no nb.finish() with output_path)"
    try:
        data = read_json(path)
    except json.JSONDecodeError as err:
        return (), f"claims file {path} is not valid JSON ({err}); rerun with --force"
    skipped = data.get("skipped")
    return tuple(data.get("claims", [])), f"skipped by the notebook: {skipped}" if skipped else ""


def _stale_reason(record: dict | None, entry: _Entry) -> str | None:
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
    if record.get("result_sha256") != _file_digest(entry.result):
        return "result file missing or changed"
    return None


def _last_state(record: dict | None, stale: str | None) -> str:
    if record is None:
        return "never run"
    state = f"{record.get('status')} at {record.get('finished_at')}"
    return state if stale is None or stale.startswith("last run") else f"{state}, stale: {stale}"


def _read_manifest(path: Path) -> dict[str, Any]:
    if path.exists():
        try:
            manifest = read_json(path)
        except json.JSONDecodeError:
            manifest = {}  # unreadable: every notebook reruns and it is rewritten
        if manifest.get("version") == MANIFEST_VERSION:
            return manifest
    return {"version": MANIFEST_VERSION, "notebooks": {}}


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _file_digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def _code_digest(path: Path) -> str:
    """Hash of a notebook's cells (type, source, tags); outputs and metadata are ignored."""
    nb = nbformat.read(path, as_version=4)
    return _digest([[cell.cell_type, cell.source, sorted(cell.metadata.get("tags", []))]
                    for cell in nb.cells])


def _environment() -> dict[str, Any]:
    """The settings outside the notebooks that change their results."""
    settings = {key: value for key, value in os.environ.items()
                if key.startswith("STABNB_") and key not in KERNEL_ENV or key == "CI"}
    return {"python": platform.python_version(), "torch": torch.__version__,
            "captum": _version("captum"), "settings": settings}


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(Path(__file__).resolve().parent), *args],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _provenance(profile: str, seed: int, device: torch.device, jobs: int) -> dict[str, Any]:
    commit = _git("rev-parse", "HEAD")
    changes = _git("status", "--porcelain", "--", ":(top)", *(f":(top,exclude){folder}"
                                                             for folder in OUTPUT_FOLDERS))
    device_name = (torch.cuda.get_device_name(device) if device.type == "cuda"
                   else platform.processor() or platform.machine())
    return {"profile": profile, "seed": seed, "device": str(device), "device_name": device_name,
            "jobs": jobs, "commit": commit, "dirty": bool(changes) if changes is not None else None,
            "date": _now(), "python": platform.python_version(), "torch": torch.__version__,
            "captum": _version("captum"), "papermill": papermill.__version__,
            "stabnb": _version("stabnb"), "platform": platform.platform(),
            "cpu_count": os.cpu_count()}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _verdict_counts(claims: tuple[dict[str, Any], ...]) -> str:
    if not claims:
        return "no claims"
    counts = Counter(claim.get("verdict", "?") for claim in claims)
    return f"{len(claims)} claim(s): " + ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))


def _format_number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        shown = ", ".join(_format_number(v) for v in value[:8])
        return f"[{shown}{', ...' if len(value) > 8 else ''}]" + (
            f" ({len(value)} items)" if len(value) > 8 else "")
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_format_number(v)}" for k, v in value.items()) + "}"
    return str(value)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _render_report(result: ReproduceResult, out_root: Path) -> str:
    """REPORT.md: summary, provenance, the notebooks' states, every claim with its numbers."""
    prov = result.provenance
    claims = [(run, claim) for run in result.notebooks for claim in run.claims]
    verdicts = Counter(claim.get("verdict", "?") for _, claim in claims)
    states = Counter(run.status for run in result.notebooks)

    def rel(path: str | None) -> str:
        if path is None:
            return "-"
        return os.path.relpath(path, out_root) if Path(path).is_relative_to(out_root) else path

    lines = [f"# Reproduction report: profile `{result.profile}`", "",
             "Generated by `python -m stabnb reproduce`. Definitions marked *reconstructed* are "
             "our reconstruction of the paper's (arXiv:2602.01136); no number here is the "
             "paper's own.", ""]
    if result.interrupted:
        lines += ["**This run was interrupted; rerun the command to finish it.**", ""]
    lines += ["## Summary", "",
              f"- Claims: {len(claims)} "
              f"({', '.join(f'{n} {v}' for v, n in sorted(verdicts.items())) or 'none'})",
              f"- Notebooks: {', '.join(f'{n} {s}' for s, n in sorted(states.items()))}", "",
              "## Provenance", "", "| | |", "|---|---|"]
    dirty = {True: " (uncommitted changes)", False: "", None: " (state unknown)"}[prov["dirty"]]
    commit = prov["commit"] or "none (not a git checkout, or no commit yet)"
    for label, value in (("commit", f"{commit}{dirty}"), ("profile", prov["profile"]),
                         ("seed", prov["seed"]),
                         ("device", f"{prov['device']} ({prov['device_name']})"),
                         ("jobs", prov["jobs"]), ("date (UTC)", prov["date"]),
                         ("wall time of this run", f"{prov['wall_s']} s"),
                         ("python", prov["python"]), ("torch", prov["torch"]),
                         ("captum", prov["captum"]), ("papermill", prov["papermill"]),
                         ("stabnb", prov["stabnb"]), ("platform", prov["platform"]),
                         ("CPU count", prov["cpu_count"])):
        lines.append(f"| {label} | {_cell(value)} |")
    lines += ["", "## Notebooks", "",
              "| notebook | status | wall time (s) | finished (UTC) | commit | claims | note |",
              "|---|---|---|---|---|---|---|"]
    for run in result.notebooks:
        wall = "-" if run.wall_s is None else f"{run.wall_s:.1f}"
        commit = (run.commit or "-")[:12]
        lines.append(f"| {run.path} | {run.status} | {wall} | {run.finished_at or '-'} | "
                     f"{commit} | {len(run.claims)} | {_cell(run.error or run.note)} |")
    problems = [run for run in result.notebooks if run.status in (*FAILED, "not on disk")
                or run.note.startswith("skipped by")]
    if problems:
        lines += ["", "## Skipped and failed notebooks", ""]
        for run in problems:
            where = f" (executed notebook: `{rel(run.executed)}`)" if run.executed else ""
            lines.append(f"- **{run.path}**: {run.status}: {run.error or run.note}{where}")
    lines += ["", "## Claims", ""]
    if not claims:
        lines.append("No claims were recorded.")
    for run in result.notebooks:
        if not run.claims:
            continue
        lines += [f"### {run.path}", ""]
        for claim in run.claims:
            tag = ", reconstructed" if claim.get("reconstructed") else ""
            lines += [f"**{claim.get('name')}**: {str(claim.get('verdict', '?')).upper()}{tag}",
                      "", f"> {claim.get('statement', '')}", ""]
            numbers = claim.get("numbers") or {}
            if numbers:
                lines += ["| number | value |", "|---|---|"]
                lines += [f"| {_cell(k)} | {_cell(_format_number(v))} |"
                          for k, v in numbers.items()]
                lines.append("")
    return "\n".join(lines).rstrip() + "\n"
