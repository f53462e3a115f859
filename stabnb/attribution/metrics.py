"""Stability metrics between a clean attribution and K perturbed ones, batched over the last dim."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..stats import sort, spearman

__all__ = ["METRICS", "relative_l2", "cosine_similarity", "spearman_correlation",
           "top_k_intersection"]

METRICS = ("relative_l2", "cosine", "spearman", "top_k")


def relative_l2(reference: Tensor, perturbed: Tensor) -> Tensor:
    """Relative L2 change ``‖p − r‖₂ / ‖r‖₂`` along the last dim.

    Args:
        reference: ``(..., d)`` attributions at the clean inputs.
        perturbed: ``(..., K, d)`` attributions at K perturbed copies of each input.

    Returns:
        ``(..., K)``; NaN where ``‖r‖ = 0`` (undefined; :class:`AttributionStability` warns).
    """
    reference = reference.unsqueeze(-2)
    norm = reference.norm(dim=-1)
    change = (perturbed - reference).norm(dim=-1) / torch.where(norm > 0, norm, 1)
    return change.masked_fill(norm == 0, math.nan)


def cosine_similarity(reference: Tensor, perturbed: Tensor) -> Tensor:
    """Cosine ``⟨p, r⟩ / (‖p‖ ‖r‖)`` along the last dim, ``(..., d), (..., K, d) -> (..., K)``.

    A zero vector has no direction; its cosine with anything is defined as 0.
    """
    reference = reference.unsqueeze(-2)
    dot = (perturbed * reference).sum(-1)
    norms = perturbed.norm(dim=-1) * reference.norm(dim=-1)
    return torch.where(norms > 0, dot / torch.where(norms > 0, norms, 1), 0).clamp(-1, 1)


def spearman_correlation(reference: Tensor, perturbed: Tensor) -> Tensor:
    """Spearman ρ (:func:`stabnb.stats.spearman`, ties -> average ranks),
    ``(..., d), (..., K, d) -> (..., K)``; the reference is ranked once.

    When a vector is constant its ranks have no variance; ρ is then defined as 1 if both
    vectors are constant (same ranking) and 0 otherwise.
    """
    return spearman(reference.unsqueeze(-2), perturbed).to(perturbed.dtype)


def _sorted_top_k(ordered: Tensor, order: Tensor, k: int) -> Tensor:
    """Indices of the k largest magnitudes from an ascending sort (``values.sort(-1)``).

    They lie among the k smallest and the k largest values, so only those 2k candidates
    are compared: no second sort of ``|values|``.
    """
    if 2 * k < ordered.shape[-1]:
        ordered = torch.cat([ordered[..., :k], ordered[..., -k:]], dim=-1)
        order = torch.cat([order[..., :k], order[..., -k:]], dim=-1)
    return order.gather(-1, ordered.abs().topk(k, dim=-1).indices)


def _top_k_overlap(reference_top: Tensor, perturbed_top: Tensor, num_features: int) -> Tensor:
    """``|T_r ∩ T_p| / k`` from top-k index sets ``(..., k)`` and ``(..., K, k)``."""
    marked = reference_top.new_zeros((*reference_top.shape[:-1], num_features), dtype=torch.bool)
    marked.scatter_(-1, reference_top, True)
    hits = marked.unsqueeze(-2).expand(*perturbed_top.shape[:-1], num_features).gather(
        -1, perturbed_top)
    return hits.sum(-1) / perturbed_top.shape[-1]


def top_k_intersection(reference: Tensor, perturbed: Tensor, k: int) -> Tensor:
    """Top-k overlap ``|T_k(|r|) ∩ T_k(|p|)| / k``, ``(..., d), (..., K, d) -> (..., K)``.

    ``T_k`` holds the indices of the k largest magnitudes, read off an ascending sort of the
    values (:func:`_sorted_top_k`, the sort :meth:`AttributionStability.measure` shares with
    the ranks); ties at the k-th magnitude are broken by the sort order (deterministic on
    one device, otherwise unspecified).
    """
    d = reference.shape[-1]
    if not 1 <= k <= d:
        raise ValueError(f"k={k} must lie in [1, {d}] (the number of features).")
    overlap = _top_k_overlap(_sorted_top_k(*sort(reference), k),
                             _sorted_top_k(*sort(perturbed), k), d)
    return overlap.to(perturbed.dtype)

