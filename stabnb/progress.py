"""Progress bars for long work, silenced for headless runs.

Bars are on by default; ``STABNB_PROGRESS=0`` (or ``progress=False`` where a function
takes it) turns them off, as the test suite and papermill smoke runs do.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

__all__ = ["progress", "progress_enabled"]

T = TypeVar("T")


def progress_enabled(enabled: bool | None = None) -> bool:
    """An explicit choice wins; otherwise the ``STABNB_PROGRESS`` variable (default on)."""
    if enabled is not None:
        return enabled
    return os.environ.get("STABNB_PROGRESS", "1").lower() not in ("0", "false", "no", "off")


def progress(iterable: Iterable[T], *, desc: str, total: int | None = None,
             enabled: bool | None = None, leave: bool = False) -> Iterator[T]:
    """Wrap ``iterable`` in a tqdm bar labelled ``desc`` unless progress is disabled."""
    if not progress_enabled(enabled):
        return iter(iterable)
    from tqdm.auto import (
        tqdm,  # imported only when shown: a notebook widget bar (ipywidgets)
    )

    return iter(tqdm(iterable, desc=desc, total=total, leave=leave, dynamic_ncols=True))
