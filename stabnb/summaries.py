"""Scalar summaries of a spectrum: entropy, effective and stable rank, norms, conditioning.

All functions take singular values (or, for ``kind="eigen"``, PSD eigenvalues) along the last
dimension and are batched over any leading dimensions. Which entropy the paper uses is
unknown; the default and the alternatives below are our reconstruction (``docs/reconstruction.md``), named
explicitly because the tools users know disagree:

- ``"squared"`` (default, for singular values): ``p_i = s_i² / ‖A‖_F²``,
- ``"roy_vetterli"`` (Roy & Vetterli 2007): ``p_i = s_i / Σ_j s_j``,
- ``"eigen"`` (for PSD operators: NTK, Hessian): ``p_i = λ_i / Σ_j λ_j``.

For the default, ``1 ≤ stable_rank ≤ effective_rank ≤ rank`` always.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .io import to_jsonable

__all__ = [
    "ENTROPY_KINDS", "spectral_entropy", "effective_rank", "stable_rank", "condition_number",
    "numerical_rank", "SpectrumSummary", "summarize_spectrum",
]

ENTROPY_KINDS = ("squared", "roy_vetterli", "eigen")


def _check_values(values: Tensor, name: str = "values") -> Tensor:
    if not isinstance(values, Tensor) or not values.is_floating_point():
        got = values.dtype if isinstance(values, Tensor) else type(values).__name__
        raise ValueError(f"{name} must be a floating-point tensor of spectra, got {got}.")
    if values.dim() == 0 or values.shape[-1] == 0:
        raise ValueError(f"{name} must hold at least one value along the last dim; got shape "
                         f"{tuple(values.shape)}.")
    bad = ~torch.isfinite(values)
    if bool(bad.any()):
        raise ValueError(f"{name} contains {int(bad.sum())} NaN/Inf; clean the spectrum first.")
    return values


def _nonnegative(values: Tensor, kind: str) -> Tensor:
    """Round-off negatives (≥ −√eps·max|v|, as eigvalsh gives for a PSD matrix) count as 0."""
    floor = -math.sqrt(torch.finfo(values.dtype).eps) * values.abs().amax(-1, keepdim=True)
    if bool((values < floor).any()):
        raise ValueError(f"kind={kind!r} needs non-negative values; got min "
                         f"{float(values.min()):.3g}. Pass singular values, or the eigenvalues "
                         "of a PSD operator.")
    return values.clamp_min(0)


def _probabilities(values: Tensor, kind: str) -> Tensor:
    values = _check_values(values)
    if kind not in ENTROPY_KINDS:
        raise ValueError(f"kind={kind!r} is unknown; choose one of {ENTROPY_KINDS}.")
    if kind == "squared":
        top = values.abs().amax(-1, keepdim=True)       # rescale first: s² may underflow
        weights = (values / torch.where(top > 0, top, torch.ones_like(top))).pow(2)
    elif kind == "roy_vetterli":
        weights = values.abs() if bool((values >= 0).all()) else _nonnegative(values, kind)
    else:
        weights = _nonnegative(values, kind)
    total = weights.sum(-1, keepdim=True)
    if bool((total == 0).any()):
        raise ValueError("a spectrum is identically zero; its entropy is undefined.")
    return weights / total


def spectral_entropy(values: Tensor, *, kind: str = "squared",
                     normalized: bool = False) -> Tensor:
    """Spectral entropy ``H = −Σ_i p_i log p_i`` (natural log, 0·log 0 = 0) along ``dim=-1``.

    ``p_i`` by ``kind`` (module docstring). ``normalized=True`` divides by ``log r``, r the
    number of values along the last dim, giving a value in [0, 1]. Our reconstruction of the
    paper's spectral entropy.

    Examples::

        >>> spectral_entropy(torch.ones(4, dtype=torch.float64)).item() == math.log(4)
        True
        >>> abs(spectral_entropy(torch.tensor([3.0, 0.0, 0.0])).item())
        0.0
    """
    p = _probabilities(values, kind)
    entropy = -torch.special.xlogy(p, p).sum(-1)
    if normalized:
        r = values.shape[-1]
        if r < 2:
            raise ValueError("normalized entropy needs at least 2 values (log 1 = 0).")
        entropy = entropy / math.log(r)
    return entropy


def effective_rank(values: Tensor, *, kind: str = "squared") -> Tensor:
    """Effective rank ``exp(H)`` (Roy & Vetterli 2007 for ``kind="roy_vetterli"``).

    Examples::

        >>> effective_rank(torch.tensor([1.0, 1.0, 0.0])).item()
        2.0
    """
    return spectral_entropy(values, kind=kind).exp()


def stable_rank(singular_values: Tensor) -> Tensor:
    """Stable rank ``‖A‖_F² / ‖A‖₂² = Σ s_i² / max s_i²``, in [1, rank].

    Examples::

        >>> stable_rank(torch.tensor([2.0, 2.0, 0.0])).item()
        2.0
    """
    values = _check_values(singular_values, "singular_values").abs()
    top = values.amax(-1, keepdim=True)
    if bool((top == 0).any()):
        raise ValueError("a spectrum is identically zero; its stable rank is undefined.")
    return (values / top).pow(2).sum(-1)


def condition_number(values: Tensor) -> Tensor:
    """Condition number ``max|v| / min|v|`` (``inf`` when the smallest value is 0).

    For singular values this is ``s_1/s_r``; for the eigenvalues of an SPD operator
    ``λ_max/λ_min``.
    """
    magnitudes = _check_values(values).abs()
    return magnitudes.amax(-1) / magnitudes.amin(-1)


def numerical_rank(singular_values: Tensor, *, rtol: float | None = None) -> Tensor:
    """Number of values above ``rtol · max s`` (default ``rtol = r · eps``, r values)."""
    values = _check_values(singular_values, "singular_values").abs()
    if rtol is None:
        rtol = values.shape[-1] * torch.finfo(values.dtype).eps
    return (values > rtol * values.amax(-1, keepdim=True)).sum(-1)


@dataclass(frozen=True)
class SpectrumSummary:
    """Summaries of singular values (tensors with the batch shape of the input).

    Attributes:
        operator_norm: ``‖A‖₂ = s_1``. frobenius_norm: ``‖A‖_F = (Σ s_i²)^{1/2}``.
        stable_rank, entropy (``kind``), normalized_entropy (``H/log r``; 0 when r = 1), effective_rank
        (``exp H``), rank (numerical, :func:`numerical_rank`), condition_number (``s_1/s_r``
        over the r given values; ``inf`` if ``s_r = 0``).
    """

    operator_norm: Tensor
    frobenius_norm: Tensor
    stable_rank: Tensor
    entropy: Tensor
    normalized_entropy: Tensor
    effective_rank: Tensor
    rank: Tensor
    condition_number: Tensor
    kind: str

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: to_jsonable(getattr(self, name)) for name in (
            "operator_norm", "frobenius_norm", "stable_rank", "entropy", "normalized_entropy",
            "effective_rank", "rank", "condition_number")}
        out["kind"] = self.kind
        return out


def summarize_spectrum(singular_values: Tensor, *, kind: str = "squared") -> SpectrumSummary:
    """All summaries of :class:`SpectrumSummary` at once, batched over leading dims.

    Examples::

        >>> s = summarize_spectrum(torch.tensor([2.0, 1.0]))
        >>> float(s.operator_norm), float(s.stable_rank)
        (2.0, 1.25)
    """
    values = _check_values(singular_values, "singular_values")
    entropy = spectral_entropy(values, kind=kind)
    r = values.shape[-1]
    normalized = entropy / math.log(r) if r > 1 else torch.zeros_like(entropy)
    return SpectrumSummary(
        operator_norm=values.abs().amax(-1),
        frobenius_norm=torch.linalg.vector_norm(values, dim=-1),
        stable_rank=stable_rank(values),
        entropy=entropy,
        normalized_entropy=normalized,
        effective_rank=entropy.exp(),
        rank=numerical_rank(values),
        condition_number=condition_number(values),
        kind=kind,
    )
