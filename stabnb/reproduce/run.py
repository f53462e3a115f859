"""The reproduce command: run every notebook headless, skip what is unchanged, write a report.

Each notebook runs with papermill in a fresh ``python3`` kernel whose working folder is the
notebook's own, with the parameters ``profile``, ``seed``, ``device`` and ``output_path``
injected, and any others given (each declared by every selected notebook, else refused before
anything runs) (``STABNB_PROGRESS=0``, ``MPLBACKEND=Agg`` in its environment). Outputs, under
``out_root``::

    figures/<profile>/<name>.png, .pdf        figures (``STABNB_FIGURES_DIR`` for the kernels)
    runs/<profile>/<relative path>.ipynb      executed notebooks (errors included)
    runs/work/<profile>/...                   study folders (``STABNB_WORK_DIR`` for the kernels)
    results/<profile>/<stem>.json             each notebook's claims (Notebook.finish)
    results/<profile>/manifest.json           fingerprints of the last runs (skip/resume)
    results/<profile>/claims.json, REPORT.md  every claim, its numbers, verdict, provenance

A notebook is skipped when its fingerprint -- its cells' sources, its parameters, the
stabnb source files, and the library versions and ``STABNB_*``/``CI`` settings -- equals
the one recorded at its last successful run and its result file is still there, unchanged.
The manifest is rewritten after every notebook, so an interrupted run resumes where it
stopped. A failing notebook does not stop the others; it makes the exit code non-zero.
A claim that does not reproduce is a result, not a failure. Recorded paths are relative
to the out-root (:mod:`~stabnb.reproduce.records`).

One run at a time per out-root (:func:`stabnb.io.exclusive`): a second one is refused,
naming the first, or waits for it (``wait``). It then removes the temporary files killed
runs left under the out-root and in the data cache. SIGINT and SIGTERM stop the run
cleanly (exit code 130 / 143); if the runner is killed, its workers and kernels die with
it (:mod:`~stabnb.reproduce.execute`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from ..checks import resolve_device
from ..data import default_cache_dir
from ..io import exclusive, remove_stale_temps, write_json, write_text
from ..notebook import PROFILES
from .execute import Stop, run_notebooks, stop_on_signals
from .manifest import (
    KERNEL_ENV,
    Entry,
    Manifest,
    check_parameters,
    code_digest,
    digest,
    environment,
    last_state,
    library_digest,
    ordered_keys,
    select,
    stale_reason,
)
from .provenance import provenance as collect_provenance
from .records import NotebookRun, ReproduceResult, finished_run, recorded_run
from .render import render_report, verdict_counts

__all__ = ["reproduce", "default_jobs"]


def default_jobs(device: torch.device) -> int:
    """Notebooks at once by default: 1 on a GPU, else ``min(2, cpu count)``."""
    return 1 if device.type == "cuda" else min(2, os.cpu_count() or 1)


def reproduce(profile: str = "quick", *, device: str = "auto", jobs: int | None = None,
              notebooks: list[str | os.PathLike] | None = None, only: list[str] | None = None,
              force: bool = False, allow_cpu_paper: bool = False, seed: int = 0,
              out_root: str | os.PathLike = ".",
              notebooks_dir: str | os.PathLike | None = None, wait: bool = False,
              retrain: bool = False,
              parameters: dict[str, Any] | None = None) -> ReproduceResult:
    """Run the notebooks at ``profile`` on ``device`` and write the report.

    Args:
        profile: ``"smoke"``, ``"quick"`` (the CPU default) or ``"paper"`` (a GPU).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; injected resolved.
        jobs: notebooks run at once. Default: ``min(2, cpu count)``, 1 on a GPU.
        notebooks: explicit notebook paths (each must exist). Default: :data:`NOTEBOOKS`
            under ``notebooks_dir``, skipping (and reporting) those not written yet.
        only: keep the notebooks whose relative path matches one of these patterns
            (``fnmatch``; a pattern without wildcards matches as a substring, e.g. ``"E3"``).
        force: rerun notebooks even when unchanged (finished study cells are reused).
        allow_cpu_paper: allow ``profile="paper"`` without a GPU (hours on a CPU).
        seed: the ``seed`` parameter of every notebook.
        out_root: folder receiving ``results/``, ``runs/`` (study folders in ``runs/work``)
            and ``figures/``. Default: the working folder.
        notebooks_dir: folder the default list is read from. Default: ``<project>/notebooks``.
        wait: when another run holds ``out_root``, wait for it instead of refusing.
        retrain: rerun the notebooks (as ``force``) and have their studies retrain finished
            cells too (``STABNB_RETRAIN=<start time>`` in the kernels' environment).
        parameters: further papermill parameters injected into every selected notebook
            (``{"num_inputs": 2}``); each must be declared by every selected notebook.

    Returns:
        A :class:`ReproduceResult`; its ``exit_code`` is non-zero if a notebook errored
        (1) or a signal stopped the run (128 + its number).

    Raises:
        ValueError: unknown profile or device, ``paper`` without a GPU, a missing notebook
            path, a pattern matching nothing, ``jobs < 1``, a parameter that a selected
            notebook does not declare or that has its own argument (``profile``...).
        stabnb.io.FolderBusy: another run holds ``out_root`` and ``wait`` is false.
        OSError: ``out_root`` cannot be written.
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
        jobs = default_jobs(resolved)
    if jobs < 1:
        raise ValueError(f"jobs={jobs} must be at least 1.")
    out_root = Path(out_root).resolve()
    results_dir, runs_dir = out_root / "results" / profile, out_root / "runs" / profile
    own = {"profile": profile, "seed": seed, "device": str(resolved)}
    clashing = sorted(set(parameters or {}) & {*own, "output_path"})
    if clashing:
        raise ValueError(f"parameter(s) {clashing} are set by reproduce itself; use --profile, "
                         "--seed or --device instead (output_path is always results/).")
    entries, absent = select(notebooks, only, notebooks_dir, results_dir, runs_dir)
    check_parameters(entries, parameters or {})
    advice = "wait for it to finish, or pass --wait (wait=True) to start when it does"
    with exclusive(out_root, wait=wait, advice=advice) as holder, stop_on_signals() as stop:
        remove_stale_temps([out_root, default_cache_dir()], before=holder["since"])
        return _run(profile, resolved, jobs, entries, absent, notebooks, force or retrain,
                    retrain, {**own, **(parameters or {})}, seed, out_root, started, stop)


def _run(profile: str, resolved: torch.device, jobs: int, entries: list[Entry],
         absent: list[str], notebooks: list[str | os.PathLike] | None, force: bool,
         retrain: bool, parameters: dict[str, Any], seed: int, out_root: Path, started: float,
         stop: Stop) -> ReproduceResult:
    """:func:`reproduce` once it holds ``out_root``: run what is stale, write the report."""
    results_dir = out_root / "results" / profile
    shared = {"parameters": digest(parameters), "environment": digest(environment())}
    for entry in entries:
        entry.fingerprint = {"code": code_digest(entry.source),
                             "package": library_digest(entry.source), **shared}
    manifest = Manifest(results_dir / "manifest.json")
    provenance = collect_provenance(profile, seed, resolved, jobs)

    runs: dict[str, NotebookRun] = {key: NotebookRun(key, "not on disk",
                                                     "not written yet; skipped")
                                    for key in absent}
    todo = []
    for entry in entries:
        record = manifest.get(entry.key)
        stale = stale_reason(record, entry)
        if not entry.selected:
            runs[entry.key] = recorded_run(entry, record, "not selected",
                                            f"last state: {last_state(record, stale)}", out_root)
        elif stale is None and not force:
            runs[entry.key] = recorded_run(entry, record, "unchanged", "reused last run",
                                            out_root)
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

    def finish(index: int, entry: Entry, outcome: dict[str, Any]) -> None:
        """Record a finished notebook in the manifest and print its line."""
        run = runs[entry.key] = finished_run(entry, outcome, provenance["commit"], out_root)
        manifest.record(entry, run)
        print(f"[{index:>{width}}/{total}] {run.status:<12} {entry.key} "
              f"{run.wall_s:.1f} s  {run.error or verdict_counts(run.claims)}", flush=True)

    tasks = [(index, entry, {
        "source": str(entry.source), "executed": str(entry.executed),
        "parameters": {**parameters, "output_path": str(entry.result)},
        "label": f"[{index:>{width}}/{total}] {'start':<12} {entry.key} ({reason})"})
        for index, (entry, reason) in enumerate(todo, start=1)]
    results_dir.mkdir(parents=True, exist_ok=True)
    kernel_env = {**KERNEL_ENV, "STABNB_FIGURES_DIR": str(out_root / "figures"),
                  "STABNB_WORK_DIR": str(out_root / "runs" / "work")}
    if retrain:  # study cells finished before this moment are recomputed (stabnb.study)
        kernel_env["STABNB_RETRAIN"] = f"{time.time():.3f}"
    if resolved.type == "cpu" and jobs > 1 and "OMP_NUM_THREADS" not in os.environ:
        # Kernels side by side must not oversubscribe the cores: OpenMP threads that outnumber
        # them spin against each other and slow small kernels many times over.
        kernel_env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    unstarted = run_notebooks(tasks, jobs, finish, kernel_env, stop)
    for entry in unstarted or ():
        runs[entry.key] = NotebookRun(entry.key, "interrupted",
                                      "not run: the run was interrupted; rerun to resume")
    provenance["wall_s"] = round(time.perf_counter() - started, 1)

    ordered = tuple(runs[key] for key in ordered_keys(entries, absent, notebooks))
    claims_path, report_path = results_dir / "claims.json", results_dir / "REPORT.md"
    result = ReproduceResult(profile, ordered, provenance, claims_path, report_path,
                             stop.signum)
    write_json(claims_path, {
        "profile": profile, "provenance": provenance,
        "notebooks": [{k: v for k, v in run.to_dict().items() if k != "claims"}
                      for run in ordered],
        "claims": [{"notebook": run.path, **claim} for run in ordered for claim in run.claims]})
    write_text(report_path, render_report(result))
    return result
