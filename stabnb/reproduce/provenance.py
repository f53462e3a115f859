"""Where a run came from: commit, device, versions, date."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import papermill
import torch

__all__ = ["provenance", "version", "now", "cpu_name"]

# Folders of outputs, not sources: changes there do not make a checkout dirty.
OUTPUT_FOLDERS = ("results", "runs", "figures")


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(Path(__file__).resolve().parent), *args],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def cpu_name() -> str:
    """The processor's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` says:
    float rounding, and so trained networks, can differ between processors."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(profile: str, seed: int, device: torch.device, jobs: int) -> dict[str, Any]:
    commit = _git("rev-parse", "HEAD")
    changes = _git("status", "--porcelain", "--", ":(top)", *(f":(top,exclude){folder}"
                                                             for folder in OUTPUT_FOLDERS))
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return {"profile": profile, "seed": seed, "device": str(device), "device_name": device_name,
            "jobs": jobs, "commit": commit, "dirty": bool(changes) if changes is not None else None,
            "date": now(), "python": platform.python_version(), "torch": torch.__version__,
            "captum": version("captum"), "papermill": papermill.__version__,
            "stabnb": version("stabnb"), "platform": platform.platform(),
            "cpu_count": os.cpu_count()}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
