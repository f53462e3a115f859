"""Atomic file output: every file stabnb writes appears whole or not at all.

A writer fills a temporary file in the destination's folder and renames it into place
(``os.replace`` is atomic on POSIX and Windows), so an interrupted run never leaves a
half-written cache, checkpoint, figure or report behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch

__all__ = ["atomic_open", "write_text", "write_json", "read_json", "save_torch", "load_torch",
           "project_root"]


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; rename it onto ``path`` on success."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise OSError(f"cannot write to {path.parent}: {err.strerror}; choose a writable "
                      "folder (check its permissions or the setting that points there).") from err
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


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented, key-sorted JSON to ``path`` atomically."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


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


def package_digest() -> str:
    """SHA-256 of stabnb's own source files (the runner and CLI excluded): what a cached result
    computed by the package depends on."""
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        if path.name in ("runner.py", "__main__.py"):
            continue
        digest.update(path.relative_to(package).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()
