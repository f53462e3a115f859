"""Random network families the theory checks run over, and the per-sample results they return.

Each ``check_*`` function of :mod:`stabnb.theory` takes a model and a batch of inputs and returns a
frozen :class:`PerSampleResult` of per-sample tensors (the actual value, the bound,
``slack = bound / actual`` and ``holds``); :func:`random_networks` draws a family and
:func:`check_family` runs one check over it, as tidy per-sample records.
"""


import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from ..io import to_jsonable
from ..models import ACTIVATIONS, MLP, SmallCNN, initialize
from ..progress import progress
from ..rng import resolve_generator

__all__ = ["PerSampleResult", "RandomNetwork", "random_networks", "FamilyCheck", "check_family"]


class PerSampleResult:
    """to_dict() and per-sample records() for the frozen check dataclasses below."""

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready (tensors as lists, NaN as None)."""
        return {f.name: to_jsonable(getattr(self, f.name)) for f in fields(self)}

    def records(self) -> list[dict[str, Any]]:
        """One dict per sample: every per-sample (n,) field plus the scalar settings."""
        per_sample = {f.name: getattr(self, f.name) for f in fields(self)
                      if isinstance(getattr(self, f.name), torch.Tensor)
                      and getattr(self, f.name).dim() == 1}
        scalars = {f.name: getattr(self, f.name) for f in fields(self)
                   if isinstance(getattr(self, f.name), (int, float, str, bool))}
        n = len(next(iter(per_sample.values())))
        return [{"sample": i, **scalars, **{k: v[i].item() for k, v in per_sample.items()}}
                for i in range(n)]



@dataclass(frozen=True)
class RandomNetwork:
    """One member of a random family: the model (eval mode) and the cell it was drawn for."""

    model: nn.Module
    input_shape: tuple[int, ...]
    architecture: str
    width: int
    depth: int
    activation: str
    index: int

    def to_dict(self) -> dict[str, Any]:
        return {"architecture": self.architecture, "width": self.width, "depth": self.depth,
                "activation": self.activation, "index": self.index,
                "num_parameters": sum(p.numel() for p in self.model.parameters())}


def random_networks(input_shape: Sequence[int], num_classes: int, *, architecture: str = "mlp",
                    widths: Sequence[int] = (16, 32), depths: Sequence[int] = (1, 2, 3),
                    activations: Sequence[str] = ("relu", "tanh", "gelu"),
                    num_per_cell: int = 1, gain: float = math.sqrt(2.0), bias_std: float = 0.1,
                    generator: torch.Generator | None = None, seed: int = 0,
                    dtype: torch.dtype = torch.float64,
                    device: str | torch.device = "cpu") -> list[RandomNetwork]:
    """Draw a family of random networks over widths × depths × activations × ``num_per_cell``.

    Weights are i.i.d. ``N(0, gain²/fan_in)`` and biases ``N(0, bias_std²)``, drawn from
    ``generator`` (not the global stream). ``"mlp"``: :class:`~stabnb.models.MLP` with ``depth``
    hidden layers of ``width``; ``"cnn"``: :class:`~stabnb.models.SmallCNN` with ``depth`` conv
    blocks of ``width`` channels (the image side must be divisible by 2^depth) and a hidden
    layer of ``width``.

    Args:
        input_shape: one input's shape, ``(d,)`` or ``(C, H, W)`` (an MLP flattens).
        num_classes: outputs C.
        gain: weight scale; √2 keeps ReLU activations of order one. Default: √2.
        bias_std: bias scale (non-zero biases move the ReLU kinks off the origin). Default: 0.1.
        generator: CPU generator of the weights. Default: a fresh one seeded with ``seed``.
        seed: seed of that fresh generator. Default: 0.
        dtype, device: of the returned models. Default: float64 on the CPU.

    Returns:
        ``len(widths)·len(depths)·len(activations)·num_per_cell`` networks in eval mode.
    """
    generator = generator if generator is not None else torch.Generator().manual_seed(seed)
    shape = tuple(int(s) for s in input_shape)
    unknown = [a for a in activations if a not in ACTIVATIONS]
    if unknown:
        raise ValueError(f"activations {unknown} are unknown; choose from {sorted(ACTIVATIONS)}.")
    if architecture not in ("mlp", "cnn"):
        raise ValueError(f"architecture={architecture!r} is unknown; choose 'mlp' or 'cnn'.")
    if architecture == "cnn" and (len(shape) != 3 or any(shape[1] % 2 ** d for d in depths)):
        raise ValueError(f"architecture='cnn' needs input_shape (C, H, W) with H divisible by "
                         f"2**depth for depths={tuple(depths)}; got {shape}.")
    family = []
    for width in widths:
        for depth in depths:
            for activation in activations:
                for _ in range(num_per_cell):
                    if architecture == "mlp":
                        model = MLP(math.prod(shape), (width,) * depth, num_classes, activation)
                    else:
                        model = SmallCNN(shape[0], num_classes, shape[1], (width,) * depth,
                                         hidden=width, activation=activation)
                    initialize(model, generator, gain=gain, bias_std=bias_std)
                    family.append(RandomNetwork(model.to(device=device, dtype=dtype).eval(),
                                                shape, architecture, width, depth, activation,
                                                len(family)))
    return family


@dataclass(frozen=True)
class FamilyCheck:
    """One check run over a family: tidy per-sample ``records`` (network fields + check fields)."""

    check: str
    records: tuple[dict[str, Any], ...]

    def column(self, name: str, **where: Any) -> torch.Tensor:
        """Values of ``name`` over the records matching ``where`` (e.g. ``activation='relu'``)."""
        rows = [r for r in self.records if all(r[k] == v for k, v in where.items())]
        return torch.tensor([r[name] for r in rows], dtype=torch.float64)

    def grouped(self, name: str, by: str = "activation", **where: Any) -> dict[Any, torch.Tensor]:
        """``{group: column(name)}`` for each value of the record field ``by``, first seen first."""
        groups = dict.fromkeys(r[by] for r in self.records
                               if all(r[k] == v for k, v in where.items()))
        return {g: self.column(name, **{by: g}, **where) for g in groups}

    def per_network(self, name: str, reduce: str = "min", **where: Any) -> torch.Tensor:
        """``name`` reduced over each network's samples: "min", "max", "median" or "all".

        NaN values (a 0/0 slack: actual and bound both vanish, as for a network whose ReLU
        gates are all shut at an input) are left out; a network with no other value gives NaN.
        """
        reducers: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
            "min": torch.min, "max": torch.max, "median": torch.median,
            "all": lambda v: v.bool().all().double()}
        if reduce not in reducers:
            raise ValueError(f"reduce={reduce!r} is unknown; choose from {sorted(reducers)}.")
        networks = sorted({r["index"] for r in self.records
                           if all(r[k] == v for k, v in where.items())})
        reduced = []
        for index in networks:
            values = self.column(name, index=index, **where)
            values = values[~values.isnan()]
            reduced.append(reducers[reduce](values) if values.numel()
                           else torch.tensor(math.nan, dtype=torch.float64))
        return torch.stack(reduced) if reduced else torch.empty(0, dtype=torch.float64)

    def quantiles(self, name: str, q: Sequence[float] = (0.05, 0.25, 0.5, 0.75, 0.95),
                  **where: Any) -> dict[float, float]:
        """Quantiles of ``name`` over the matching records (NaNs dropped; NaN if none is left)."""
        values = self.column(name, **where)
        values = values[~values.isnan()]
        if values.numel() == 0:
            return {float(k): math.nan for k in q}
        return {float(k): float(v) for k, v in zip(q, torch.quantile(values, torch.tensor(
            q, dtype=values.dtype)))}

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.check, "records": list(self.records)}


def check_family(family: Sequence[RandomNetwork], check: Callable[..., PerSampleResult], *,
                 num_inputs: int, generator: torch.Generator | None = None, seed: int = 0,
                 progress_enabled: bool | None = None, **kwargs: Any) -> FamilyCheck:
    """Run ``check(model, inputs, **kwargs)`` on every network with ``num_inputs`` inputs in [0, 1].

    Inputs are uniform pixels of the network's input shape, drawn from ``generator``, which is
    also passed to checks that take one. Returns one record per (network, sample).
    """
    generator = resolve_generator(generator, seed)
    records = []
    for member in progress(family, desc=check.__name__, enabled=progress_enabled):
        parameter = next(member.model.parameters())
        inputs = torch.rand((num_inputs, *member.input_shape), generator=generator,
                            dtype=parameter.dtype)
        extra = dict(kwargs)
        if "generator" in inspect.signature(check).parameters:
            extra["generator"] = generator
        result = check(member.model, inputs.to(parameter.device), **extra)
        records += [{**member.to_dict(), **row} for row in result.records()]
    return FamilyCheck(check.__name__, tuple(records))
