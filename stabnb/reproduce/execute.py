"""Notebook execution: papermill in a pool of worker processes, Ctrl-C stopping cleanly."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import papermill

from .manifest import Entry

__all__ = ["run_notebooks"]

# Exception names (in a notebook) meaning "this notebook's data source is missing" (stabnb.data).
DATA_ERRORS = ("DataSourceError",)


def run_notebooks(tasks: list[tuple[int, Entry, dict[str, Any]]], jobs: int,
                   finish: Callable[[int, Entry, dict[str, Any]], None],
                   kernel_env: dict[str, str]) -> list[Entry] | None:
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
    running: dict[Future, tuple[int, Entry]] = {}

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
        outcome = {"status": "data missing" if err.ename in DATA_ERRORS else "error",
                   "error": f"cell [{err.exec_count}]: {err.ename}: {err.evalue}"}
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
