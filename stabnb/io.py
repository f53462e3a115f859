"""Atomic file output: every file stabnb writes appears whole or not at all; one writer per folder.

A writer fills a temporary file in the destination's folder and renames it into place
(``os.replace`` is atomic on POSIX and Windows), so an interrupted run never leaves a
half-written cache, checkpoint, figure or report behind. A killed writer leaves its
temporary file (:data:`TEMP_NAME`); :func:`remove_stale_temps` removes those of earlier runs.
:func:`exclusive` keeps a folder to one run at a time.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import math
import os
import pickle
import re
import socket
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import filelock
import torch

__all__ = ["TEMP_NAME", "FolderBusy", "temp_sibling", "remove_stale_temps", "exclusive",
           "atomic_open", "write_text", "write_json", "read_json", "save_torch", "load_torch",
           "project_root", "source_digest", "to_jsonable"]


# The name of every temporary file stabnb writes (temp_sibling): ".<name>.<8 random>.tmp[.ipynb]".
TEMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp(\.ipynb)?")


def temp_sibling(path: str | os.PathLike, suffix: str = "") -> tuple[int, str]:
    """Create ``.<name>.<random>.tmp<suffix>`` beside ``path`` (creating its folder); return
    ``mkstemp``'s open descriptor and name.

    Raises:
        OSError: the folder cannot be written, with the folder named and what to do.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    except OSError as err:
        raise OSError(f"cannot write to {path.parent}: {err.strerror}; choose a writable "
                      "folder (check its permissions or the setting that points there).") from err


def remove_stale_temps(folders: Iterable[str | os.PathLike], before: float) -> list[Path]:
    """Delete the temporary files (:data:`TEMP_NAME`) under ``folders`` last written before
    ``before`` (a ``time.time()``), i.e. left by writers killed before then; return them.

    Only stabnb's own temporary names are touched; a file still being written is newer.
    """
    removed = []
    for folder in dict.fromkeys(Path(f) for f in folders):
        for path in folder.rglob(".*.tmp*") if folder.is_dir() else ():
            with contextlib.suppress(FileNotFoundError):
                if (TEMP_NAME.fullmatch(path.name) and path.is_file()
                        and path.stat().st_mtime < before):
                    path.unlink()
                    removed.append(path)
    return removed


class FolderBusy(BlockingIOError):
    """Another process holds the folder's :func:`exclusive` lock; ``holder`` says who."""

    def __init__(self, message: str, holder: dict[str, Any]):
        super().__init__(message)
        self.holder = holder


@contextlib.contextmanager
def exclusive(folder: str | os.PathLike, *, wait: bool = False,
              advice: str = "wait for it to finish") -> Iterator[dict[str, Any]]:
    """Hold ``<folder>/.stabnb.lock`` (``filelock``: released by the OS when the holder dies, even
    by SIGKILL) for the block; yield the holder record written beside it in
    ``.stabnb.lock.json``: ``pid``, ``host``, ``started`` (ISO time), ``since`` (``time.time()``)
    and ``command``.

    Args:
        folder: the folder to keep to one process (created if missing).
        wait: block until the holder releases it, instead of refusing.
        advice: what the refusal tells the user to do (say, "pass --wait to wait for it").

    Raises:
        FolderBusy: ``wait`` is false and another process holds the lock; the message names
            the holder (pid, host, start time, command) and repeats ``advice``.
        OSError: the folder cannot be written.
    """
    folder = Path(folder)
    lock_path, record_path = folder / ".stabnb.lock", folder / ".stabnb.lock.json"
    fd, probe = temp_sibling(lock_path)  # a clear error for an unwritable folder
    os.close(fd)
    os.unlink(probe)
    lock = filelock.FileLock(lock_path, timeout=-1 if wait else 0)
    try:
        lock.acquire()
    except filelock.Timeout:
        try:
            holder = read_json(record_path)
            who = (f"pid {holder['pid']} on {holder['host']}, started {holder['started']}: "
                   f"{holder['command']}")
        except (OSError, ValueError, KeyError):
            holder, who = {}, "a process that has not written its details yet"
        raise FolderBusy(f"{folder} is in use by another stabnb run ({who}); {advice}.",
                         holder) from None
    try:
        since = time.time()
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": since,
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(since)),
                  "command": " ".join([Path(sys.orig_argv[0]).name, *sys.orig_argv[1:]])}
        write_json(record_path, holder)
        yield holder
    finally:
        with contextlib.suppress(FileNotFoundError):
            record_path.unlink()
        lock.release()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; rename it onto ``path`` on success."""
    path = Path(path)
    fd, tmp = temp_sibling(path)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_open(path, "w") as handle:
        handle.write(text)


def to_jsonable(value: Any) -> Any:
    """Plain JSON values from tensors, arrays, numpy/torch scalars, tuples, paths and dataclass
    results (their ``to_dict()``); non-finite floats become ``None`` (JSON has no NaN).

    Examples::

        >>> to_jsonable({"a": torch.tensor([1.0, float("nan")]), "b": (2, Path("x"))})
        {'a': [1.0, None], 'b': [2, 'x']}
    """
    if hasattr(value, "to_dict") and not isinstance(value, type):
        return to_jsonable(value.to_dict())
    if isinstance(value, torch.Tensor):
        return to_jsonable(value.detach().cpu().tolist())
    if hasattr(value, "tolist") and hasattr(value, "dtype"):  # numpy arrays and scalars
        return to_jsonable(value.tolist())
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON; convert it to numbers, "
                    "strings, lists or dicts first.")


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` (through :func:`to_jsonable`) as indented, key-sorted JSON atomically."""
    write_text(path, json.dumps(to_jsonable(data), indent=2, sort_keys=True, allow_nan=False)
               + "\n")


def read_json(path: str | os.PathLike, *, fix: str = "delete it and rerun") -> Any:
    """Read a JSON file.

    Raises:
        ValueError: the file is not valid UTF-8 JSON (truncated or edited); the message names
            it, the place of the error and ``fix``.
    """
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err.msg}: line {err.lineno}, column "
                         f"{err.colno}): it is corrupt or truncated; {fix}.") from err
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not valid JSON (not UTF-8 text at byte {err.start}): it "
                         f"is corrupt; {fix}.") from err


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` atomically."""
    with atomic_open(path, "wb") as handle:
        torch.save(obj, handle)


def load_torch(path: str | os.PathLike, *, what: str = "file",
               map_location: str | torch.device | None = None) -> Any:
    """``torch.load`` with ``weights_only=True``: tensors and plain containers, never code.

    A pickle that would build any other object (a crafted file runs code when unpickled
    with ``weights_only=False``) is refused, as is a truncated or corrupt file.

    Raises:
        ValueError: the file cannot be loaded this way; the message names it and says to
            delete it and rerun (stabnb rewrites it).
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, KeyError,
            AttributeError, TypeError, ImportError, IndexError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"{what} {path} cannot be loaded (corrupt, truncated, or not written by stabnb: "
            f"{reason[:200]}); delete it and rerun, and stabnb will rebuild it.") from err


def project_root(start: str | os.PathLike | None = None) -> Path | None:
    """The nearest folder at or above ``start`` (default: cwd) holding stabnb's pyproject, if any."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file() and 'name = "stabnb"' in pyproject.read_text():
            return folder
    return None


def source_digest(modules: Iterable[str], *, exclude: Iterable[str] = ()) -> str:
    """SHA-256 of the code of ``modules`` (``"stabnb.study"``, ...) and of every stabnb module they
    import, transitively: what a cached result computed by that code depends on.

    Each module enters as its syntax tree with docstrings dropped (comments never reach the tree),
    so editing prose, comments or an unrelated module (plotting, notebook support) leaves the
    digest unchanged, while any change to code that runs changes it. ``exclude`` names modules
    the caller's results never run although an import reaches them (``"stabnb.plotting"``, which
    a plotting helper imports lazily); they and what only they import are left out.
    """
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for name in sorted(_imported_modules(modules, package, set(exclude))):
        digest.update(name.encode() + b"\0" + _code_dump(_module_file(name, package)).encode())
    return digest.hexdigest()


def _module_file(name: str, package: Path) -> Path:
    relative = Path(*name.split(".")[1:])
    candidate = package / relative
    return candidate / "__init__.py" if candidate.is_dir() else candidate.with_suffix(".py")


def _is_module(name: str, package: Path) -> bool:
    return name.split(".")[0] == package.name and _module_file(name, package).is_file()


def _code_dump(path: Path) -> str:
    """The module's syntax tree without docstrings, as text."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, include_attributes=False)


def _imported_modules(modules: Iterable[str], package: Path,
                      exclude: set[str] | None = None) -> set[str]:
    """``modules`` and the stabnb modules they import, transitively (parents included), without
    ``exclude``."""
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in seen or name in (exclude or ()) or not _is_module(name, package):
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        path = _module_file(name, package)
        here = parts if path.name == "__init__.py" else parts[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                todo += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(here[:len(here) - node.level + 1]) if node.level else ""
                origin = ".".join(filter(None, (base, node.module or "")))
                todo.append(origin)
                todo += [f"{origin}.{alias.name}" for alias in node.names]
    return seen
