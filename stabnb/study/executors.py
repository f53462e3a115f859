"""Executors for :func:`stabnb.study.run_study` beyond this machine: Dask and Slurm (submitit).

No scheduler of our own: Dask's ``Client.get_executor`` already is a
``concurrent.futures.Executor``; submitit's executors are not, and :class:`SubmititExecutor`
adapts one. :func:`open_executor` builds either from command-line style settings, with clear
messages for a missing optional dependency, an unreachable scheduler or a bad partition.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any

__all__ = ["EXECUTORS", "SubmititExecutor", "open_executor"]

EXECUTORS = ("local", "dask", "slurm")


def _require(module: str, extra: str) -> Any:
    try:
        return __import__(module)
    except ImportError as err:
        raise ValueError(f"--executor {extra} needs the {module!r} package, which is not "
                         f"installed; pip install 'stabnb[{extra}]'.") from err


class SubmititExecutor(Executor):
    """A ``concurrent.futures.Executor`` over a submitit executor (Slurm, or its local one).

    ``submit`` submits one job and returns a ``Future`` that a small waiting thread resolves
    with the job's result or exception (a job killed by Slurm raises submitit's
    ``UncompletedJobError``, which :func:`~stabnb.study.run_study` retries).

    Args:
        executor: a ``submitit.AutoExecutor``, ``SlurmExecutor`` or ``LocalExecutor``, its
            parameters already set (``update_parameters``).
    """

    def __init__(self, executor: Any):
        self._executor = executor
        self._threads: list[threading.Thread] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        submitit = _require("submitit", "slurm")
        try:
            job = self._executor.submit(fn, *args, **kwargs)
        except (submitit.core.utils.FailedSubmissionError, subprocess.CalledProcessError) as err:
            raise ValueError(f"the scheduler refused the job: {err}. Check the partition "
                             "(sinfo lists them) and the job's resources.") from err
        future.set_running_or_notify_cancel()

        def resolve() -> None:
            try:
                future.set_result(job.result())
            except BaseException as err:  # the job's failure, delivered to the caller
                future.set_exception(err)

        thread = threading.Thread(target=resolve, daemon=True, name=f"submitit-{job.job_id}")
        thread.start()
        self._threads.append(thread)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if wait:
            for thread in self._threads:
                thread.join()


def _slurm_partitions() -> list[str] | None:
    """Partition names from ``sinfo``, or ``None`` when sinfo is not there to ask."""
    if shutil.which("sinfo") is None:
        return None
    listed = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True,
                            timeout=30, check=False)
    return sorted({name.strip().rstrip("*") for name in listed.stdout.split()} - {""})


def _dask_executor(scheduler: str | None, timeout: float) -> tuple[Executor, Callable[[], None]]:
    distributed = _require("distributed", "dask")
    if scheduler is None:
        raise ValueError("--executor dask needs --scheduler ADDRESS (e.g. tcp://host:8786, "
                         "the address `dask scheduler` prints).")
    try:
        client = distributed.Client(scheduler, timeout=timeout)
    except (OSError, TimeoutError) as err:
        raise ValueError(f"cannot reach the Dask scheduler at {scheduler} within {timeout:g} s "
                         f"({type(err).__name__}: {err}); start one with `dask scheduler` and "
                         "workers with `dask worker ADDRESS`, or check the address.") from err
    return client.get_executor(pure=False), client.close


def _slurm_executor(folder: Path, partitions: Sequence[str], jobs: int | None,
                    slurm: dict[str, Any]) -> tuple[Executor, Callable[[], None]]:
    submitit = _require("submitit", "slurm")
    if shutil.which("sbatch") is None:
        raise ValueError("--executor slurm needs Slurm's sbatch, which is not on PATH; run "
                         "from a Slurm login node, or use --executor local or dask.")
    known = _slurm_partitions()
    unknown = [p for p in partitions if known is not None and p not in known]
    if unknown:
        raise ValueError(f"Slurm partition(s) {unknown} do not exist; sinfo lists {known}.")
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    parameters = {"slurm_partition": ",".join(partitions)} if partitions else {}
    if jobs is not None:
        parameters["slurm_array_parallelism"] = jobs
    executor.update_parameters(**parameters, **slurm)
    return SubmititExecutor(executor), lambda: None


@contextlib.contextmanager
def open_executor(kind: str, *, folder: str | os.PathLike, scheduler: str | None = None,
                  partitions: Sequence[str] = (), jobs: int | None = None, timeout: float = 10.0,
                  slurm: dict[str, Any] | None = None) -> Iterator[Executor | None]:
    """The executor ``kind`` names, closed on exit; ``None`` for ``"local"`` (run_study's own).

    Args:
        kind: ``"local"``, ``"dask"`` or ``"slurm"``.
        folder: the study folder; Slurm's job files go to ``<folder>/slurm``.
        scheduler: the Dask scheduler's address (``tcp://host:8786``).
        partitions: Slurm partitions, checked against ``sinfo``.
        jobs: Slurm jobs at once. Default: Slurm's limit.
        timeout: seconds to wait for the Dask scheduler. Default: 10.
        slurm: further ``update_parameters`` (``timeout_min``, ``cpus_per_task``, ``gpus_per_node``).

    Raises:
        ValueError: unknown kind, a missing optional dependency (naming its extra), an
            unreachable scheduler, no ``sbatch``, an unknown partition.
    """
    if kind not in EXECUTORS:
        raise ValueError(f"executor={kind!r} is unknown; choose one of {EXECUTORS}.")
    if kind == "local":
        yield None
        return
    if kind == "dask":
        executor, close = _dask_executor(scheduler, timeout)
    else:
        executor, close = _slurm_executor(Path(folder) / "slurm", partitions, jobs,
                                          dict(slurm or {}))
    try:
        yield executor
    finally:
        close()
