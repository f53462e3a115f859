"""What every spectral algorithm shares: the operand check, probe draws, guarded products."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..operators import LinearOperator

Operator = LinearOperator | Tensor
DISTRIBUTIONS = ("rademacher", "gaussian")


def _settings(A: Operator, seed: int | None) -> dict[str, Any]:
    return {"seed": seed, "dtype": str(A.dtype).replace("torch.", ""), "device": str(A.device)}



def _square_dim(A: Operator) -> int:
    shape = tuple(A.shape)
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"A must be a square operator; got shape {shape}. For a rectangular "
                         "A use top_singular_values, or pass A.T @ A.")
    if isinstance(A, Tensor):
        if not A.is_floating_point():
            raise ValueError(f"A must be floating point, got {A.dtype}.")
        if not bool(torch.isfinite(A).all()):
            raise ValueError("A contains NaN/Inf; clean it before computing its spectrum.")
    return shape[0]


def _draw(shape: tuple[int, ...], distribution: str, generator: torch.Generator,
          A: Operator) -> Tensor:
    if distribution == "rademacher":
        z = torch.randint(0, 2, shape, generator=generator, device=generator.device)
        z = z.to(A.dtype).mul_(2).sub_(1)
    elif distribution == "gaussian":
        z = torch.randn(shape, generator=generator, device=generator.device, dtype=A.dtype)
    else:
        raise ValueError(f"distribution={distribution!r} is unknown; use one of {DISTRIBUTIONS}.")
    return z.to(A.device)


def _matmul(A: Operator, X: Tensor, step: str) -> Tensor:
    Y = A @ X
    if not bool(torch.isfinite(Y).all()):
        raise FloatingPointError(f"A @ v returned NaN/Inf at {step}; the operator is not "
                                 "finite there (check the model's weights and inputs).")
    return Y


def _positive_int(value: int, name: str) -> int:
    if int(value) != value or int(value) < 1:
        raise ValueError(f"{name}={value} must be a positive integer.")
    return int(value)
