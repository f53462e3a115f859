"""Running a study's grid: locally, or on any ``concurrent.futures.Executor`` (Dask, Slurm).

Cells are idempotent and keyed: a finished cell (``cells/<cell>.json``, written atomically) is
never redone; one writer per cell (a :mod:`filelock` lock in ``locks/``; a second writer waits
for it, then finds the cell finished); a cell whose worker died is resubmitted (``retries``
times, resuming from its last epoch's checkpoint); a study resumed from another machine that
sees the same folder picks up where it stopped.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import (
    FIRST_COMPLETED,
    Executor,
    Future,
    ProcessPoolExecutor,
    wait,
)
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from filelock import FileLock
from torch import nn

from ..checks import resolve_device
from ..entropy_link import EntropyLinkTable
from ..io import load_torch, project_root, read_json, write_json, write_text
from ..progress import progress_enabled
from ..regularizers import BASELINE
from .cell import StudyData, _build, cell_path, code_digest, load_study_data, run_cell
from .config import Cell, StudyConfig, study_cells

__all__ = ["StudyResult", "StudyFailed", "run_study", "load_study", "study_dir", "check_folder"]


class StudyFailed(RuntimeError):
    """Some cells failed on every attempt; the finished ones are kept (rerun to retry)."""


@dataclass(frozen=True)
class StudyResult:
    """A finished (or partly finished) study: its records, where they live, which cells were
    resubmitted after a lost worker."""

    config: StudyConfig
    out_dir: Path
    records: pd.DataFrame
    retried: tuple[str, ...] = ()

    def per_sample(self, model: str, regularizer: str = BASELINE, strength: float = 0.0,
                   seed: int | None = None) -> EntropyLinkTable:
        """The per-sample entropy-link table of one cell (first seed by default)."""
        cell = Cell(model, regularizer, float(strength),
                    self.config.seeds[0] if seed is None else seed)
        path = self.out_dir / "cells" / f"{cell.name}.per_sample.json"
        if not path.exists():
            raise FileNotFoundError(f"no per-sample table for cell {cell.name} in {self.out_dir}; "
                                    "is it in the grid and finished?")
        stored = read_json(path, fix=_CELL_FIX)
        columns = {name: torch.tensor([math.nan if v is None else v for v in values],
                                      dtype=torch.float64)
                   for name, values in stored["columns"].items()}
        return EntropyLinkTable(columns, stored["settings"])

    def load_model(self, cell: Cell, data: StudyData | None = None, *,
                   device: str | torch.device = "cpu") -> nn.Module:
        """The trained network of the finished ``cell``, from its checkpoint, in eval mode.

        ``data`` is the cell's seed's :func:`load_study_data` (loaded when not given); it gives
        the input shape, the classes and the normalisation the network was built with.

        Raises:
            FileNotFoundError: the cell is not finished, or its checkpoint is gone (delete
                the cell's record and rerun run_study to retrain it).
        """
        path = cell_path(self.out_dir, cell)
        if not path.exists():
            raise FileNotFoundError(f"cell {cell.name} is not finished in {self.out_dir}; "
                                    "run_study first.")
        key = read_json(path, fix=_CELL_FIX)["provenance"]["checkpoint_key"]
        checkpoint = self.out_dir / "checkpoints" / f"{key}.pt"
        if not checkpoint.exists():
            raise FileNotFoundError(f"the checkpoint {checkpoint} of cell {cell.name} is gone; "
                                    f"delete {path} and rerun run_study to retrain the cell.")
        data = data or load_study_data(self.config, cell.seed)
        model = _build(self.config, data, cell)
        model.load_state_dict(load_torch(checkpoint, what="training checkpoint",
                                         map_location="cpu")["model"])
        return model.to(device).eval()

    def samples(self) -> pd.DataFrame:
        """Per-image values of every finished cell: the cell keys, ``seed``, ``image`` (the
        probe image's index within its seed, shared by all of that seed's cells),
        ``<method>.<column>`` of the first probe method's per-sample table, and the saliency's
        probe columns under their record names (``heldout.relative_l2``, ``attack.relative_l2``,
        ``dependence.ratio``, ``faithfulness.gain``... : the table's dotted columns) — what a
        bootstrap over images needs (:func:`stabnb.effects.regularizer_effects`)."""
        method = self.config.probe.methods[0]
        frames = []
        for cell in study_cells(self.config):
            path = self.out_dir / "cells" / f"{cell.name}.per_sample.json"
            if not path.exists():
                continue
            table = self.per_sample(cell.model, cell.regularizer, cell.strength, cell.seed)
            frame = pd.DataFrame({k if "." in k else f"{method}.{k}": v.numpy()
                                  for k, v in table.columns.items()})
            frames.append(frame.assign(model=cell.model, regularizer=cell.regularizer,
                                       strength=cell.strength, seed=cell.seed,
                                       image=range(len(frame))))
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()



_CELL_FIX = ("delete that file and rerun run_study: the cell is recomputed (training resumes "
             "from its checkpoint)")


def _read_config(out: Path) -> dict[str, Any]:
    """``out/config.json`` (fingerprint and config), refused with the fix if unreadable."""
    path = out / "config.json"
    fix = (f"delete the study folder {out} and rerun run_study (its cells are recomputed), or "
           "restore the file")
    stored = read_json(path, fix=fix)
    if not isinstance(stored, dict) or not isinstance(stored.get("config"), dict):
        raise ValueError(f"{path} holds no study config (no 'config' object): it is corrupt or "
                         f"not written by stabnb; {fix}.")
    return stored


def _records_frame(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    rows = [{k: v for k, v in r.items() if k != "provenance"}
            | {"device": r["provenance"]["device"], "torch": r["provenance"]["torch"]}
            for r in records]
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame = frame.sort_values(["model", "regularizer", "strength", "seed"], ignore_index=True)
    return frame


def _folder_key(config: StudyConfig) -> dict[str, Any]:
    return {"fingerprint": config.fingerprint(), "code": code_digest(), "config": config.to_dict()}


def check_folder(config: StudyConfig, out_dir: str | os.PathLike) -> None:
    """Refuse (``ValueError``) a folder that holds another config's, or other code's, results;
    writes nothing."""
    stored_path = Path(out_dir) / "config.json"
    if not stored_path.exists():
        return
    stored, mine = _read_config(Path(out_dir)), _folder_key(config)
    if stored.get("fingerprint") != mine["fingerprint"]:
        theirs = stored.get("config", {})
        differ = sorted(k for k in set(theirs) | set(mine["config"])
                        if theirs.get(k) != mine["config"].get(k))
        raise ValueError(f"{out_dir} holds results of a different study config (differs in "
                         f"{differ}); refusing to mix them. Use another out_dir, or delete "
                         "that folder to start over.")
    if stored.get("code") != mine["code"]:
        raise ValueError(f"{out_dir} holds results of this config computed by other code (cell "
                         f"code {stored.get('code', '?')[:10]}, now {mine['code'][:10]}); refusing "
                         "to mix them. Use study_dir() (keyed by the code) or another out_dir.")


def _claim_folder(config: StudyConfig, out: Path) -> None:
    check_folder(config, out)
    if not (out / "config.json").exists():
        write_json(out / "config.json", _folder_key(config))


@lru_cache(maxsize=8)
def _worker_data(config_json: str, seed: int) -> StudyData:
    return load_study_data(StudyConfig.from_dict(json.loads(config_json)), seed)


def _locked_cell(config: StudyConfig, cell: Cell, out: Path, device: str,
                 data: StudyData | None = None) -> dict[str, Any]:
    """Run ``cell`` holding its lock (another writer waits, then finds it finished)."""
    with FileLock(out / "locks" / f"{cell.name}.lock"):
        if cell_path(out, cell).exists():
            return read_json(cell_path(out, cell), fix=_CELL_FIX)
        data = data or _worker_data(json.dumps(config.to_dict()), cell.seed)
        return run_cell(config, data, cell, out, device=device)


def _worker_cell(config_json: str, cell: Cell, out_dir: str, device: str,
                 threads: int | None) -> dict[str, Any]:
    """What a worker runs (importable by name, so any executor can ship it)."""
    if threads is not None:
        torch.set_num_threads(threads)
    config = StudyConfig.from_dict(json.loads(config_json))
    return _locked_cell(config, cell, Path(out_dir), device)


class _Display:
    """Finished, running and failed cells: a tqdm bar on a terminal, plain lines otherwise."""

    def __init__(self, desc: str, total: int, done: int, enabled: bool | None):
        self.desc, self.total, self.done, self.failed = desc, total, done, 0
        self.enabled = progress_enabled(enabled)
        self.bar = None
        if self.enabled and sys.stderr.isatty():
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, initial=done, desc=desc, dynamic_ncols=True, leave=False)

    def update(self, running: int, finished: int = 0, failed: int = 0) -> None:
        self.done += finished
        self.failed += failed
        if self.bar is not None:
            self.bar.update(finished)
            self.bar.set_postfix(running=running, failed=self.failed)
        elif self.enabled:
            print(f"{self.desc}: {self.done}/{self.total} finished, {running} running, "
                  f"{self.failed} failed", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


RETRAIN_ENV = "STABNB_RETRAIN"
"""Set by ``python -m stabnb reproduce --retrain`` to the run's start (seconds since the epoch):
cells and checkpoints written before it are recomputed, those written since are kept."""


def _forget_older_cells(out: Path) -> None:
    """With ``$STABNB_RETRAIN=<time>``, delete the cell records and checkpoints older than it."""
    value = os.environ.get(RETRAIN_ENV)
    if not value:
        return
    try:
        since = float(value)
    except ValueError:
        raise ValueError(f"{RETRAIN_ENV}={value!r} must be a time in seconds since the epoch "
                         "(python -m stabnb reproduce --retrain sets it); unset it.") from None
    for folder in (out / "cells", out / "checkpoints"):
        for path in folder.glob("*") if folder.is_dir() else ():
            if path.is_file() and path.stat().st_mtime < since:
                path.unlink()


def run_study(config: StudyConfig, out_dir: str | os.PathLike, *, device: str = "auto",
              jobs: int | None = None, executor: Executor | None = None, retries: int = 2,
              threads: int | None = None, data: StudyData | None = None,
              progress_bar: bool | None = None) -> StudyResult:
    """Run every cell of ``config`` not yet finished in ``out_dir``; return all records.

    Args:
        config: the :class:`StudyConfig`.
        out_dir: the study's folder (:mod:`stabnb.study` for its layout); on a cluster, a
            folder every worker sees.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (where the cells run).
        jobs: without ``executor``: cells trained at once in local worker processes (each
            with ``cpu_count // jobs`` torch threads; on a GPU they share it); 1 runs them one
            after another in this process. Default: the ``STABNB_JOBS`` setting, else 1.
        executor: any ``concurrent.futures.Executor`` to run the cells on instead, e.g. a
            Dask ``Client(...).get_executor(pure=False)`` or
            :class:`stabnb.study.SubmititExecutor`. Default: local processes (``jobs``).
        retries: resubmissions of a cell whose worker failed or died before it is reported
            failed. Default: 2.
        threads: torch threads per worker. Default: ``cpu_count // jobs`` for local
            processes, the worker's own setting on an ``executor``.
        data: seed ``config.seeds[0]``'s loaded data, for a one-seed serial run.
        progress_bar: show finished, running and failed cells. Default: ``STABNB_PROGRESS``.

    Raises:
        ValueError: ``out_dir`` holds another config's (or code's) results; bad ``jobs``.
        StudyFailed: cells failed on every attempt (the others are kept).
        stabnb.data.DataSourceError: the data set cannot be had (serial runs).
    """
    if jobs is None:
        jobs = _jobs_setting()
    if jobs < 1:
        raise ValueError(f"jobs={jobs} must be ≥ 1.")
    if retries < 0:
        raise ValueError(f"retries={retries} must be ≥ 0.")
    out = Path(out_dir)
    _claim_folder(config, out)
    _forget_older_cells(out)
    cells = study_cells(config)
    todo = [c for c in cells if not cell_path(out, c).exists()]
    resolved = resolve_device(device)
    display = _Display(f"study {config.dataset}", len(cells), len(cells) - len(todo), progress_bar)
    retried: list[str] = []
    try:
        if todo and executor is None and jobs == 1:
            loaded = {config.seeds[0]: data} if data is not None and len(config.seeds) == 1 else {}
            for index, cell in enumerate(todo):
                display.update(running=1)
                if cell.seed not in loaded:
                    loaded = {cell.seed: load_study_data(config, cell.seed)}
                _locked_cell(config, cell, out, str(resolved), loaded[cell.seed])
                _write_table(cells, out)
                display.update(running=0 if index == len(todo) - 1 else 1, finished=1)
        elif todo:
            local = executor is None
            if local and threads is None:
                threads = max(1, (os.cpu_count() or 1) // jobs)
            retried = _run_on_executor(config, todo, cells, out, str(resolved), executor, jobs,
                                       retries, threads, display)
    finally:
        display.close()
    return StudyResult(config, out, _write_table(cells, out), tuple(retried))


def _jobs_setting() -> int:
    """``STABNB_JOBS`` (cell worker processes of every study a notebook runs), else 1."""
    text = os.environ.get("STABNB_JOBS", "1")
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"STABNB_JOBS={text!r} is not a whole number; set it to the cell "
                         "workers per study (1 runs cells in the notebook's process).") from None


def _local_pool(jobs: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"))


def _run_on_executor(config: StudyConfig, todo: Sequence[Cell], cells: Sequence[Cell], out: Path,
                     device: str, executor: Executor | None, jobs: int, retries: int,
                     threads: int | None, display: _Display) -> list[str]:
    """Submit ``todo``, resubmit failed cells up to ``retries`` times; return those resubmitted."""
    config_json = json.dumps(config.to_dict())
    pool = executor or _local_pool(jobs)
    attempts = {cell: 0 for cell in todo}
    errors: dict[Cell, BaseException] = {}
    retried: list[str] = []

    def submit(cell: Cell) -> Future:
        attempts[cell] += 1
        return pool.submit(_worker_cell, config_json, cell, str(out), device, threads)

    pending = {submit(cell): cell for cell in todo}
    try:
        while pending:
            display.update(running=len(pending))
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                if future not in pending:  # resubmitted with its broken pool already
                    continue
                cell = pending.pop(future)
                error = future.exception()
                if error is None:
                    _write_table(cells, out)
                    display.update(running=len(pending), finished=1)
                    continue
                if isinstance(error, BrokenProcessPool) and executor is None:
                    pool.shutdown(wait=False, cancel_futures=True)
                    pool = _local_pool(jobs)
                    # every cell of the broken pool has to go again
                    for lost, other in list(pending.items()):
                        pending.pop(lost)
                        pending[submit(other)] = other
                if attempts[cell] <= retries:
                    retried.append(cell.name)
                    pending[submit(cell)] = cell
                else:
                    errors[cell] = error
                    display.update(running=len(pending), failed=1)
    finally:
        if executor is None:
            pool.shutdown(wait=True, cancel_futures=True)
    if errors:
        listing = "; ".join(f"{c.name}: {type(e).__name__}: {e}" for c, e in errors.items())
        raise StudyFailed(f"{len(errors)} cell(s) failed after {retries + 1} attempt(s) each "
                          f"({listing}); the {len(cells) - len(errors)} others are kept in {out}. "
                          "Fix the cause and rerun: finished cells are not redone.") \
            from next(iter(errors.values()))
    return retried


def _write_table(cells: Sequence[Cell], out: Path) -> pd.DataFrame:
    records = [read_json(p, fix=_CELL_FIX) for c in cells if (p := cell_path(out, c)).exists()]
    frame = _records_frame(records)
    write_text(out / "results.csv", frame.to_csv(index=False))
    return frame


def study_dir(name: str, profile: str, config: StudyConfig) -> Path:
    """Where a notebook keeps the study ``name`` of ``config`` at ``profile``:
    ``$STABNB_WORK_DIR`` (else ``<project>/runs/work``) ``/<profile>/<name>-<code>-<config>``.

    ``<code>`` is :func:`stabnb.study.code_digest` (the code a cell runs, docstrings and
    comments aside) and ``<config>`` the config's fingerprint, so cells computed by other code
    are never reused as if they were current, an edited config gets a fresh folder, and
    finished cells of the same code and config are reused.
    """
    root = os.environ.get("STABNB_WORK_DIR") or (project_root() or Path.cwd()) / "runs" / "work"
    return Path(root) / profile / f"{name}-{code_digest()[:10]}-{config.fingerprint()[:8]}"


def load_study(out_dir: str | os.PathLike) -> StudyResult:
    """A study's config and records from its folder, without running anything."""
    out = Path(out_dir)
    if not (out / "config.json").exists():
        raise FileNotFoundError(f"{out} holds no study (config.json is missing); run_study first.")
    config = StudyConfig.from_dict(_read_config(out)["config"])
    return StudyResult(config, out, _write_table(study_cells(config), out))
