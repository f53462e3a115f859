"""Notebook execution: papermill in a pool of worker processes that stop cleanly and die with the runner.

- SIGINT and SIGTERM to the runner (whatever signal state it inherited, e.g. SIGINT ignored
  under ``setsid`` or ``nohup``) stop the run: no new notebook starts, the running ones stop
  their kernels and report "interrupted", and the runner exits 130 / 143 (:func:`stop_on_signals`).
- The workers sit in their own process group, so a signal to the runner's group reaches the
  runner alone, which then asks the workers to stop.
- If the runner dies, even by SIGKILL, its workers and their kernels die too: Linux's
  ``PR_SET_PDEATHSIG`` (:func:`die_with_parent`) in the workers and the kernels they start,
  and a watchdog in each worker that kills its kernels and exits when its parent changes.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import papermill
from jupyter_client.manager import AsyncKernelManager

from ..io import temp_sibling
from .manifest import Entry

__all__ = ["Stop", "stop_on_signals", "die_with_parent", "run_notebooks"]

# Exception names (in a notebook) meaning "this notebook's data source is missing" (stabnb.data).
DATA_ERRORS = ("DataSourceError",)


# How often a worker's watchdog looks at its parent and at the stop request (seconds).
WATCH_S = 0.2
INTERRUPTED = {"status": "interrupted", "error": "interrupted; rerun to resume"}


class Stop:
    """The signal that stopped the run (``signum``), or None while it runs on."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum: int, frame: Any) -> None:
        self.signum = self.signum or signum


@contextlib.contextmanager
def stop_on_signals() -> Iterator[Stop]:
    """Within the block, SIGINT and SIGTERM set the yielded :class:`Stop` instead of killing
    the process (installed explicitly: an inherited ``SIG_IGN`` does not survive); the
    previous handlers come back afterwards."""
    stop = Stop()
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (``prctl(PR_SET_PDEATHSIG)``);
    elsewhere a no-op (the workers' watchdog covers it)."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG


def run_notebooks(tasks: list[tuple[int, Entry, dict[str, Any]]], jobs: int,
                   finish: Callable[[int, Entry, dict[str, Any]], None],
                   kernel_env: dict[str, str], stop: Stop) -> list[Entry] | None:
    """Run ``tasks`` in a pool of ``jobs`` worker processes, calling ``finish`` on each outcome.

    Processes, not threads: papermill changes the working folder of its process. At most
    ``jobs`` notebooks are handed out at once, so when ``stop`` is set nothing is queued: the
    running notebooks stop their kernels and report "interrupted", and the entries never
    started are returned. Returns None when the run was not stopped.
    """
    if not tasks or stop.signum:
        return [entry for _, entry, _ in tasks] if stop.signum else None
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    stopping = context.Event()
    pool = ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=context,
                               initializer=_init_worker,
                               initargs=(kernel_env, os.getpid(), stopping))
    waiting = list(tasks)
    running: dict[Future, tuple[int, Entry]] = {}
    try:
        while running or (waiting and not stop.signum):
            while waiting and len(running) < jobs and not stop.signum:
                index, entry, task = waiting.pop(0)
                entry.result.unlink(missing_ok=True)
                running[pool.submit(_execute, task)] = (index, entry)
            done, _ = wait(running, timeout=WATCH_S, return_when=FIRST_COMPLETED)
            if stop.signum and not stopping.is_set():
                print(f"{signal.Signals(stop.signum).name}: stopping the running notebooks; "
                      "rerun to resume.", flush=True)
                stopping.set()
            for future in done:
                index, entry = running.pop(future)
                try:
                    outcome = future.result()
                except BaseException as err:  # the worker process itself died, or was stopped
                    outcome = {**INTERRUPTED, "wall_s": 0.0} if stop.signum else {
                        "status": "error", "error": f"{type(err).__name__}: {err}", "wall_s": 0.0}
                finish(index, entry, outcome)
    finally:
        pool.shutdown(wait=True)
    return [entry for _, entry, _ in waiting] if stop.signum else None


# A worker's state: its parent, the stop request, whether a notebook runs, its kernels' pids.
_WORKER: dict[str, Any] = {"parent": None, "stop": None, "running": False, "interrupted": False,
                           "kernels": set()}


def _init_worker(kernel_env: dict[str, str], parent: int, stopping: Any) -> None:
    """Set the environment of the kernels a pool worker starts (quiet bars, headless plots,
    figures and study folders under the out-root), tie the worker's life to the runner's,
    and start its watchdog. The worker leaves the runner's process group: signals reach it
    through the runner only."""
    os.environ.update(kernel_env)
    die_with_parent()
    if hasattr(os, "setpgrp"):
        os.setpgrp()
    _WORKER.update(parent=parent, stop=stopping)
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the runner's handler, inherited by fork
    threading.Thread(target=_watch, daemon=True).start()


def _interrupt(signum: int, frame: Any) -> None:
    """SIGINT in a worker: stop the running notebook once (papermill then shuts its kernel
    down); ignored while idle or already stopping."""
    if _WORKER["running"] and not _WORKER["interrupted"]:
        _WORKER["interrupted"] = True
        raise KeyboardInterrupt


def _watch() -> None:
    """A worker's watchdog: interrupt the running notebook when the runner asks; when the
    runner is gone, kill the worker's kernels and exit."""
    while True:
        time.sleep(WATCH_S)
        if os.getppid() != _WORKER["parent"]:
            for pid in list(_WORKER["kernels"]):
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)  # each kernel leads its own session
            os._exit(1)
        if _WORKER["stop"].is_set() and _WORKER["running"] and not _WORKER["interrupted"]:
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)


class _BoundKernelManager(AsyncKernelManager):
    """A kernel that dies with the worker that started it (and is killed by its watchdog)."""

    async def start_kernel(self, **kw: Any) -> None:
        await super().start_kernel(**kw, preexec_fn=die_with_parent)
        _WORKER["kernels"].add(self.provisioner.pid)


def _papermill(source: Path, partial: str, parameters: dict[str, Any]) -> None:
    """papermill on ``source``, interruptible (by :func:`_interrupt`) only while it runs."""
    _WORKER.update(running=True, interrupted=False)
    try:
        papermill.execute_notebook(str(source), partial, parameters=parameters,
                                   kernel_name="python3", language="python", cwd=str(source.parent),
                                   progress_bar=False, start_timeout=180,
                                   kernel_manager_class=_BoundKernelManager)
    finally:
        _WORKER["running"] = False
        _WORKER["kernels"].clear()


def _execute(task: dict[str, Any]) -> dict[str, Any]:
    """Run one notebook with papermill (in a pool worker); never raises for notebook errors.

    papermill writes the executed notebook to a temporary sibling as it goes; it is moved
    onto ``runs/...`` at the end, so the final file always holds a whole run.
    """
    if _WORKER["stop"].is_set():
        return {**INTERRUPTED, "wall_s": 0.0}
    sys.stdout.write(task["label"] + "\n")  # one write: lines of parallel workers stay whole
    sys.stdout.flush()
    source, executed = Path(task["source"]), Path(task["executed"])
    fd, partial = temp_sibling(executed, ".ipynb")
    os.close(fd)
    outcome: dict[str, Any] = {"status": "ok", "error": None}
    started = time.perf_counter()
    try:
        _papermill(source, partial, task["parameters"])
    except papermill.PapermillExecutionError as err:
        outcome = {"status": "data missing" if err.ename in DATA_ERRORS else "error",
                   "error": f"cell [{err.exec_count}]: {err.ename}: {err.evalue}"}
    except Exception as err:  # a dead kernel, a timeout, an unreadable notebook
        outcome = {"status": "error", "error": f"{type(err).__name__}: {err}"}
    except KeyboardInterrupt:  # papermill has shut the kernel down
        outcome = dict(INTERRUPTED)
    finally:
        outcome["wall_s"] = round(time.perf_counter() - started, 2)
        if os.path.getsize(partial):
            os.chmod(partial, 0o644)  # mkstemp's 0600 is for the temporary file only
            os.replace(partial, executed)
        else:
            os.unlink(partial)
    return outcome
