"""Shared test settings: what to collect, and the offline data root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Notebooks under fixtures/ are inputs of the runner tests (one fails on purpose), not nbval tests.
collect_ignore_glob = ["fixtures/*"]


@pytest.fixture(scope="session")
def offline_root() -> Path:
    """The offline MNIST/CIFAR-10 copies (``$STABNB_OFFLINE_DATA``); tests that need them skip without."""
    value = os.environ.get("STABNB_OFFLINE_DATA")
    if not value or not Path(value, "SHA256SUMS").exists():
        pytest.skip("real data tests need STABNB_OFFLINE_DATA (make test sets it to ../shared/data)")
    return Path(value)
