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


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """One torch thread per xdist worker: the tests' tiny kernels lose up to 100× to OpenMP
    contention when two workers share two cores."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
