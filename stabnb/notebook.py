"""Notebook support: validated parameters, profile sizes, figures, and claim verdicts.

A notebook's first code cell calls :func:`setup` on the values of its ``parameters``
cell; every later cell uses the returned :class:`Notebook`. Claims end the notebook:
:meth:`Notebook.claim` prints one deterministic verdict line (what nbval compares) and
:meth:`Notebook.finish` writes every claim, with its numbers, to ``output_path`` as JSON
(what :mod:`stabnb.reproduce` collects into the report).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch

from .checks import resolve_device
from .claims import Claim
from .io import atomic_open, project_root, write_json

__all__ = ["PROFILES", "Notebook", "setup"]

PROFILES = ("smoke", "quick", "paper")
T = TypeVar("T")


def _check_type(name: str, value: Any, expected: type | tuple[type, ...]) -> Any:
    """``value`` if it has the ``expected`` type (an int where a float is expected becomes a
    float; a bool is not an int), else a ``TypeError`` naming the parameter."""
    kinds = expected if isinstance(expected, tuple) else (expected,)
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        wanted = getattr(expected, "__name__", None) or " or ".join(t.__name__ for t in expected)
        raise TypeError(f"parameter {name}={value!r} has type {type(value).__name__}; "
                        f"it must be {wanted}.")
    return value


@dataclass
class Notebook:
    """What a notebook's cells share: profile, device, seed, where outputs go, its claims."""

    name: str
    profile: str
    seed: int
    device: torch.device
    output_path: Path | None
    figures_dir: Path
    claims: list[Claim] = field(default_factory=list)
    skipped: str | None = None

    def pick(self, value: T | None = None, /, **by_profile: T) -> T:
        """``value`` when it is set, else the one for this notebook's profile.

        A size is a parameter whose default is ``None``; the setup cell resolves it with
        ``epochs = nb.pick(epochs, smoke=1, quick=3, paper=3)``, so ``papermill -p epochs 10``
        overrides the profile and leaving it unset keeps the profile's value.
        """
        missing = [p for p in PROFILES if p not in by_profile]
        if missing:
            raise ValueError(f"pick() needs a value for every profile; missing {missing}.")
        return by_profile[self.profile] if value is None else value

    def generator(self, offset: int = 0) -> torch.Generator:
        """A fresh CPU generator seeded with ``seed + offset``: every draw in a notebook takes one
        (the package's randomness rule; nothing reads the global stream)."""
        return torch.Generator().manual_seed(self.seed + offset)

    def save_figure(self, fig: Any, name: str) -> Path:
        """Save ``fig`` as ``<figures_dir>/<profile>/<name>.png`` and ``.pdf`` (atomically)."""
        target = self.figures_dir / self.profile
        for suffix in ("png", "pdf"):
            with atomic_open(target / f"{name}.{suffix}", "wb") as handle:
                fig.savefig(handle, format=suffix, dpi=150, bbox_inches="tight",
                            metadata={"CreationDate": None} if suffix == "pdf" else None)
        return target / f"{name}.png"

    def claim(self, *args: Any, **fields: Any) -> None:
        """Record a :class:`~stabnb.claims.Claim` and print its verdict line.

        Pass a ``Claim`` (``nb.claim(summaries_claim(...))``) or its fields, as
        :class:`~stabnb.claims.Claim` takes them (``name, statement, passed, summary, numbers``,
        ``kind=``); ``passed=None`` means the numbers cannot decide. Keep ``summary`` to rounded
        numbers so the printed line is deterministic. A claim of the same name replaces the
        earlier one. Returns nothing, so a cell ending in ``nb.claim(...)`` shows the verdict line
        alone: nbval runs cells outside the kernel's history, where a trailing ``;`` does not
        silence a returned value.
        """
        given = len(args) == 1 and not fields and isinstance(args[0], Claim)
        claim = args[0] if given else Claim(*args, **fields)
        self.claims = [c for c in self.claims if c.name != claim.name] + [claim]
        print(claim.line())

    def skip(self, reason: str) -> None:
        """Mark the notebook as skipped (say, its data cannot be had here) and print why.

        The runner reports a skipped notebook as such, neither passed nor failed.
        """
        self.skipped = reason
        print(f"{self.name}: SKIPPED ({reason})")

    def finish(self, **extra: Any) -> None:
        """Write the claims (and ``extra`` results) to ``output_path`` as JSON, if one is set."""
        if self.output_path is None:
            return
        write_json(self.output_path, {
            "notebook": self.name, "profile": self.profile, "seed": self.seed,
            "device": str(self.device), "claims": [c.to_dict() for c in self.claims],
            **({"skipped": self.skipped} if self.skipped else {}), **extra})


def setup(name: str, *, profile: str, seed: int, device: str, output_path: str | None = None,
          figures_dir: str | None = None, **parameters: Any) -> Notebook:
    """Validate a notebook's parameters, seed every generator, and return its :class:`Notebook`.

    Args:
        name: the notebook's stable name (used in reports).
        profile: ``"smoke"`` (seconds; tests), ``"quick"`` (minutes on a CPU) or ``"paper"``.
        seed: base seed of :meth:`Notebook.generator`; the global streams are left alone.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        output_path: where :meth:`Notebook.finish` writes the claims JSON. Default: nowhere.
        figures_dir: root for figures. Default: ``$STABNB_FIGURES_DIR`` (the reproduce command
            sets it to ``<out-root>/figures``), else the scratch folder ``<project>/runs/scratch/
            figures``, so running a notebook by hand changes no tracked file.
        **parameters: the notebook's other parameters, as ``name=(value, expected_type)``;
            each is type-checked so a wrongly injected value fails here, by name.

    Raises:
        ValueError: unknown profile or device.
        TypeError: a parameter of the wrong type.
    """
    if not isinstance(profile, str) or profile not in PROFILES:
        raise ValueError(f"parameter profile={profile!r} is unknown; allowed values: {PROFILES}.")
    _check_type("seed", seed, int)
    _check_type("device", device, str)
    for key, (value, expected) in parameters.items():
        _check_type(key, value, expected)
    if output_path is not None:
        _check_type("output_path", output_path, str)
    return Notebook(
        name=name, profile=profile, seed=seed, device=resolve_device(device),
        output_path=Path(output_path) if output_path else None,
        figures_dir=Path(figures_dir or os.environ.get("STABNB_FIGURES_DIR")
                         or (project_root() or Path.cwd()) / "runs" / "scratch" / "figures"),
    )
