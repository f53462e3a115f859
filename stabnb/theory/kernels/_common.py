"""Checks and the one ``eigh`` behind every kernel matrix function of R7–R8."""

from __future__ import annotations

import math

import torch

from ...checks import check_finite


def _check_kernel(kernel: torch.Tensor) -> None:
    if kernel.dim() != 2 or kernel.shape[0] != kernel.shape[1]:
        raise ValueError(f"kernel must be a square matrix (n, n); got shape {tuple(kernel.shape)}.")
    check_finite(kernel, "kernel")
    scale = kernel.abs().max().clamp_min(torch.finfo(kernel.dtype).tiny)
    asymmetry = float((kernel - kernel.T).abs().max() / scale)
    if asymmetry > 1e3 * torch.finfo(kernel.dtype).eps:
        raise ValueError(f"kernel is not symmetric (relative asymmetry {asymmetry:.2e}); pass a "
                         "symmetric PSD Gram matrix such as ntk_gram(model, inputs).")


def _check_rows(values: torch.Tensor, n: int, name: str) -> None:
    if values.dim() not in (1, 2) or values.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},) or ({n}, C) to match the kernel; "
                         f"got {tuple(values.shape)}.")
    check_finite(values, name)


def _check_cross(cross_kernel: torch.Tensor, n: int) -> None:
    if cross_kernel.dim() != 2 or cross_kernel.shape[1] != n:
        raise ValueError(f"cross_kernel must have shape (m, {n}) = K(x, X) for m query points; "
                         f"got {tuple(cross_kernel.shape)}.")
    check_finite(cross_kernel, "cross_kernel")


def _check_positive(name: str, value: float) -> None:
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"{name}={value!r} must be a positive finite number.")


def _check_times(times: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    if times.dim() != 1 or bool((times < 0).any()):
        raise ValueError(f"times must be a 1-D tensor of times t ≥ 0; got shape "
                         f"{tuple(times.shape)}.")
    return times.to(dtype=kernel.dtype, device=kernel.device)


def _row_norms(values: torch.Tensor) -> torch.Tensor:
    return values.abs() if values.dim() == 1 else torch.linalg.vector_norm(values, dim=1)


def _eigh(kernel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenpairs of the symmetric kernel; round-off negatives of a PSD matrix are kept as is."""
    return torch.linalg.eigh((kernel + kernel.T) / 2)


def _apply(vectors: torch.Tensor, eigenvalues_fn: torch.Tensor,
           values: torch.Tensor) -> torch.Tensor:
    """U diag(g) Uᵀ v for v of shape (n,) or (n, C), or a stack (T, n[, C]) when g is (T, n)."""
    coefficients = vectors.T @ values                          # (n,) or (n, C)
    if eigenvalues_fn.dim() == 1:
        scaled = eigenvalues_fn.view(-1, *([1] * (values.dim() - 1))) * coefficients
        return vectors @ scaled
    scaled = eigenvalues_fn.view(*eigenvalues_fn.shape, *([1] * (values.dim() - 1))) * coefficients
    return torch.einsum("ij,tj...->ti...", vectors, scaled)
