"""Top-k eigenpairs and singular values by Krylov methods: Lanczos (with verified
multiplicities) and power iteration."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..operators import LinearOperator
from ..rng import resolve_generator
from ._common import Operator, _draw, _matmul, _positive_int, _settings, _square_dim

__all__ = ["LanczosResult", "PowerIterationResult", "power_iteration", "lanczos",
           "top_singular_values"]


@dataclass(frozen=True)
class LanczosResult:
    """Top (or bottom) k eigenpairs from Lanczos.

    Attributes:
        values: (k,) eigenvalues, descending for ``which="largest"``, ascending for
            ``"smallest"`` (singular values, descending, for :func:`top_singular_values`).
        vectors: (dim, k) Ritz vectors, unit norm (right singular vectors for SVD).
        residuals: (k,) ``‖A v − θ v‖`` of each pair, a bound on its eigenvalue error.
        converged: every residual ≤ ``tol · ‖A‖`` (‖A‖ estimated by the largest |Ritz value|).
        num_matvecs: products with ``A`` used.
    """

    values: Tensor
    vectors: Tensor
    residuals: Tensor
    converged: bool
    num_matvecs: int
    num_iters: int
    tol: float
    which: str
    settings: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"values": self.values.tolist(), "residuals": self.residuals.tolist(),
                "converged": self.converged, "num_matvecs": self.num_matvecs,
                "num_iters": self.num_iters, "tol": self.tol, "which": self.which,
                **self.settings}


@dataclass(frozen=True)
class PowerIterationResult:
    """Dominant eigenpair (largest |λ|) of a symmetric operator, with its residual."""

    value: float
    vector: Tensor
    residual: float
    converged: bool
    num_matvecs: int
    tol: float
    settings: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "residual": self.residual, "converged": self.converged,
                "num_matvecs": self.num_matvecs, "tol": self.tol, **self.settings}



def _orthogonalise(q: Tensor, *bases: Tensor) -> Tensor:
    """``q`` minus its projections on the rows of each basis, Gram–Schmidt applied twice."""
    for _ in range(2):
        for basis in bases:
            q = q - basis.T @ (basis @ q)
    return q


def _lanczos_process(A: Operator, q: Tensor, num_iters: int, generator: torch.Generator,
                     *, restart: bool, breakdown_rtol: float = 0.0,
                     stop: Callable[[Tensor, float], bool] | None = None,
                     locked: Tensor | None = None):
    """Lanczos with full (twice-applied) reorthogonalisation.

    Returns ``(Q, T, beta_last)`` with ``Q`` (m, dim) orthonormal rows and ``T`` (m, m) the
    float64 tridiagonal, so ``A Qᵀ = Qᵀ T + beta_last q_{m+1} e_mᵀ``. On breakdown (an
    invariant subspace: ``β ≤ max(breakdown_rtol, √dim·eps)·‖T‖``) it restarts from a fresh
    orthogonal vector when ``restart``, else stops. ``stop(T, beta)`` is asked after each step
    without breakdown. With ``locked`` (r, dim) orthonormal rows, every vector is kept
    orthogonal to them (``q`` must be already): Lanczos on ``P A P`` restricted to the
    complement ``P = I − LᵀL``, whose dimension ``dim − r`` bounds the run.
    """
    dim = q.numel()
    locks = () if locked is None else (locked,)
    space = dim - (0 if locked is None else locked.shape[0])
    num_iters = min(num_iters, space)
    Q = torch.empty(num_iters, dim, dtype=A.dtype, device=A.device)
    alphas: list[float] = []
    betas: list[float] = []
    beta = 0.0
    rtol = max(breakdown_rtol, math.sqrt(dim) * torch.finfo(A.dtype).eps)
    scale = 0.0
    m = 0
    for j in range(num_iters):
        Q[j] = q
        w = _matmul(A, q, f"Lanczos step {j + 1}")
        alpha = float(q @ w)
        basis = Q[: j + 1]
        w = _orthogonalise(w, *locks, basis)
        beta = float(torch.linalg.vector_norm(w))
        alphas.append(alpha)
        m = j + 1
        scale = max(scale, abs(alpha), beta)
        if m == space:
            break
        if beta <= rtol * scale:
            # Invariant subspace: its Ritz values are exact, but eigenvalues outside it (or
            # further copies of repeated ones) are unseen, so never stop on residuals here.
            if not restart:
                break
            q = _orthogonalise(_draw((dim,), "gaussian", generator, A), *locks, basis)
            q = q / torch.linalg.vector_norm(q)
            betas.append(0.0)
            beta = 0.0
        else:
            if stop is not None and stop(_tridiagonal(alphas, betas), beta):
                break
            q = w / beta
            betas.append(beta)
    return Q[:m], _tridiagonal(alphas, betas[: m - 1]), beta


def _tridiagonal(alphas: list[float], betas: list[float]) -> Tensor:
    T = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if betas:
        off = torch.tensor(betas[: len(alphas) - 1], dtype=torch.float64)
        T = T + torch.diag(off, 1) + torch.diag(off, -1)
    return T


def _start_vector(A: Operator, dim: int, v0: Tensor | None,
                  generator: torch.Generator) -> Tensor:
    q = _draw((dim,), "gaussian", generator, A) if v0 is None else v0.to(A.device, A.dtype)
    if q.shape != (dim,):
        raise ValueError(f"v0 must have shape ({dim},), got {tuple(q.shape)}.")
    norm = torch.linalg.vector_norm(q)
    if not bool(torch.isfinite(norm)) or float(norm) == 0.0:
        raise ValueError("v0 must be a finite non-zero vector.")
    return q / norm



def power_iteration(A: Operator, *, num_iters: int = 100, tol: float = 1e-3,
                    v0: Tensor | None = None, generator: torch.Generator | None = None,
                    seed: int | None = 0) -> PowerIterationResult:
    """Dominant eigenpair of a symmetric ``A`` by power iteration, stopped on the residual.

    Iterates ``v ← A v / ‖A v‖`` with Rayleigh quotient ``θ = vᵀ A v`` until
    ``‖A v − θ v‖ ≤ tol·|θ|``, one product per iteration. Converges at rate |λ₂/λ₁|; prefer
    :func:`lanczos`, which needs far fewer products at the same residual.

    Examples::

        >>> A = torch.diag(torch.tensor([3.0, 1.0, 0.5], dtype=torch.float64))
        >>> round(power_iteration(A, tol=1e-10).value, 6)
        3.0
    """
    dim = _square_dim(A)
    num_iters = _positive_int(num_iters, "num_iters")
    gen = resolve_generator(generator, seed, device=A.device)
    v = _start_vector(A, dim, v0, gen)
    theta, residual, converged = 0.0, math.inf, False
    for it in range(num_iters):
        w = _matmul(A, v, f"power iteration {it + 1}")
        theta = float(v @ w)
        residual = float(torch.linalg.vector_norm(w - theta * v))
        if residual <= tol * abs(theta):
            converged = True
            break
        norm = torch.linalg.vector_norm(w)
        if float(norm) == 0.0:          # A v = 0: v is an eigenvector with eigenvalue 0
            converged = True
            break
        v = w / norm
    return PowerIterationResult(theta, v, residual, converged, it + 1, tol,
                                _settings(A, None if generator is not None else seed))


def lanczos(A: Operator, k: int = 1, *, num_iters: int | None = None, tol: float = 1e-3,
            which: str = "largest", v0: Tensor | None = None,
            generator: torch.Generator | None = None, seed: int | None = 0) -> LanczosResult:
    """The k largest (or smallest) eigenpairs of a symmetric ``A`` by Lanczos.

    Full reorthogonalisation (classical Gram–Schmidt, applied twice) keeps the Krylov basis
    orthonormal, so no spurious copies appear. After each step the tridiagonal ``T`` is
    diagonalised (``eigh``) and the Ritz residuals ``r_i = β_m |e_mᵀ y_i| = ‖A v_i − θ_i v_i‖``
    are checked: the run stops once ``r_i ≤ tol·‖A‖`` for the k wanted pairs, which bounds each
    eigenvalue's error by ``r_i`` (and typically by ``r_i²/gap``). Cost: one product per step,
    memory ``num_iters·dim``; a Krylov breakdown restarts from a fresh orthogonal vector.

    Multiplicities: one Krylov space holds one copy of each eigenvalue until it becomes
    invariant, and the residual rule can fire before that (``[10, 10, 5]`` for a triple 10).
    So a converged set is only accepted after a verification run: a fresh random start,
    orthogonal to the found vectors, iterated (in their orthogonal complement) until its
    extreme Ritz pair converges, must give no Ritz value beyond the k-th reported one by more
    than ``tol·‖A‖``. One that does is merged with the found vectors by Rayleigh–Ritz
    (explicit residuals, ``k + 1`` more products) and the check repeats. This costs about
    one more run to convergence on the next eigenvalue (``num_matvecs`` counts it).

    Args:
        A: symmetric operator or dense tensor (dim × dim).
        k: number of eigenpairs, ``1 ≤ k ≤ dim``.
        num_iters: maximal Krylov dimension. Default: ``min(dim, max(100, 10k))``.
        tol: relative residual tolerance. Default: 1e-3 (eigenvalues to 0.1 % of ‖A‖ or better).
        which: ``"largest"`` (algebraic, descending) or ``"smallest"`` (ascending).
        v0: start vector. Default: Gaussian from ``generator``/``seed``.
        generator, seed: randomness for the start (and restart) vectors.

    Returns:
        LanczosResult with values, vectors, residuals, ``converged`` (residuals within tol and
        the verification passed) and ``num_matvecs`` (all runs).

    Raises:
        ValueError: non-square A, k out of range. FloatingPointError: NaN/Inf product.

    Examples::

        >>> A = torch.diag(torch.arange(1.0, 21.0, dtype=torch.float64))
        >>> [round(v, 9) for v in lanczos(A, 3, tol=1e-10).values.tolist()]
        [20.0, 19.0, 18.0]
    """
    dim = _square_dim(A)
    k = _positive_int(k, "k")
    if k > dim:
        raise ValueError(f"k={k} exceeds the dimension {dim} of A; use k <= {dim}.")
    if which not in ("largest", "smallest"):
        raise ValueError(f"which={which!r} is unknown; use 'largest' or 'smallest'.")
    num_iters = min(dim, max(100, 10 * k)) if num_iters is None else _positive_int(num_iters,
                                                                                  "num_iters")
    if num_iters < k:
        raise ValueError(f"num_iters={num_iters} must be at least k={k}.")
    num_iters = min(num_iters, dim)
    gen = resolve_generator(generator, seed, device=A.device)
    q = _start_vector(A, dim, v0, gen)
    sign = 1.0 if which == "largest" else -1.0

    def wanted(theta: Tensor, count: int) -> Tensor:
        order = torch.argsort(sign * theta, descending=True)
        return order[:min(count, theta.numel())]

    def ritz_converged(count: int, scale: Callable[[Tensor], float]):
        def stop(T: Tensor, beta: float) -> bool:
            if T.shape[0] < count:
                return False
            theta, Y = torch.linalg.eigh(T)
            idx = wanted(theta, count)
            return bool((beta * Y[-1, idx].abs() <= tol * scale(theta)).all())
        return stop

    # A Krylov space invariant to within tol·‖A‖ restarts (setting β to 0 moves eigenvalues
    # by at most β), so repeated eigenvalues are not missed.
    Q, T, beta = _lanczos_process(A, q, num_iters, gen, restart=True, breakdown_rtol=tol,
                                  stop=ritz_converged(k, lambda t: float(t.abs().max())))
    steps = num_matvecs = Q.shape[0]
    theta, Y = torch.linalg.eigh(T)
    idx = wanted(theta, k)
    values, vectors = theta[idx], Q.T @ Y[:, idx].to(A.dtype)
    residuals = beta * Y[-1, idx].abs()
    if Q.shape[0] == dim:
        residuals = torch.zeros_like(residuals)
    norm = float(theta.abs().max())
    converged = len(idx) == k and bool((residuals <= tol * norm).all())
    # Verification: the residual rule can fire before the Krylov space holds every copy of a
    # repeated eigenvalue. A fresh start orthogonal to the found vectors, run until its own
    # extreme Ritz pair converges, must find nothing beyond the reported range; whatever it
    # finds there joins the found vectors (Rayleigh–Ritz, explicit residuals) and the check
    # repeats. Each round adds one copy, so at most k rounds change the answer.
    while converged and Q.shape[0] < dim and vectors.shape[1] < dim:
        locked = torch.linalg.qr(vectors)[0].T
        fresh = _orthogonalise(_draw((dim,), "gaussian", gen, A), locked)
        fresh = fresh / torch.linalg.vector_norm(fresh)
        Qv, Tv, beta_v = _lanczos_process(
            A, fresh, num_iters, gen, restart=True, breakdown_rtol=tol, locked=locked,
            stop=ritz_converged(1, lambda t: max(norm, float(t.abs().max()))))
        steps += Qv.shape[0]
        num_matvecs += Qv.shape[0]
        theta_v, Y_v = torch.linalg.eigh(Tv)
        top = wanted(theta_v, 1)
        norm = max(norm, float(theta_v.abs().max()))
        exhausted = Qv.shape[0] == dim - locked.shape[0]
        settled = exhausted or float(beta_v * Y_v[-1, top].abs()) <= tol * norm
        if float(sign * (theta_v[top] - values[-1])) <= tol * norm:
            converged = settled          # nothing new inside the range (if the check converged)
            break
        basis = torch.linalg.qr(torch.cat([vectors, Qv.T @ Y_v[:, top].to(A.dtype)], 1))[0]
        products = _matmul(A, basis, "Lanczos verification")
        num_matvecs += basis.shape[1]
        projected = (basis.T @ products).double()
        theta_b, Y_b = torch.linalg.eigh((projected + projected.T) / 2)
        idx = wanted(theta_b, k)
        values, Y_k = theta_b[idx], Y_b[:, idx].to(A.dtype)
        vectors = basis @ Y_k
        residuals = torch.linalg.vector_norm(products @ Y_k - vectors * values.to(A.dtype),
                                             dim=0).double()
        converged = bool((residuals <= tol * norm).all())
    return LanczosResult(values.to(A.dtype), vectors, residuals.to(A.dtype), converged,
                         num_matvecs, steps, tol, which,
                         _settings(A, None if generator is not None else seed))


class _Gram(LinearOperator):
    """``AᵀA`` (``side="right"``) or ``A Aᵀ`` (``side="left"``) of any operator."""

    SELF_ADJOINT = True

    def __init__(self, A: Operator, side: str):
        dim = A.shape[1] if side == "right" else A.shape[0]
        super().__init__((dim, dim), A.dtype, A.device)
        self.A, self.side = A, side

    def _matmat(self, X: Tensor) -> Tensor:
        if self.side == "right":
            return self.A.T @ (self.A @ X)
        return self.A @ (self.A.T @ X)


def top_singular_values(A: Operator, k: int = 1, *, num_iters: int | None = None,
                        tol: float = 1e-3, generator: torch.Generator | None = None,
                        seed: int | None = 0) -> LanczosResult:
    """The k largest singular values of any ``A`` (m × d) by Lanczos on the smaller Gram.

    Runs :func:`lanczos` on ``A Aᵀ`` when m < d, else on ``AᵀA`` (each Gram product is one
    ``A @`` and one ``A.T @``; ``num_matvecs`` counts Gram products); ``s_i = √λ_i``. The
    returned residuals ``r_i/s_i`` bound ``|s_i − s_true|`` (from ``|s² − s_true²| ≤ r``),
    and the vectors are right singular vectors (d × k).

    Examples::

        >>> A = torch.diag(torch.tensor([4.0, 2.0, 1.0], dtype=torch.float64))[:2]
        >>> [round(v, 9) for v in top_singular_values(A, 2, tol=1e-12).values.tolist()]
        [4.0, 2.0]
    """
    shape = tuple(A.shape)
    if len(shape) != 2:
        raise ValueError(f"A must be 2-D, got shape {shape}.")
    k = _positive_int(k, "k")
    if k > min(shape):
        raise ValueError(f"k={k} exceeds min{shape}={min(shape)}, the number of singular "
                         f"values; use k <= {min(shape)}.")
    side = "left" if shape[0] < shape[1] else "right"
    res = lanczos(_Gram(A, side), k, num_iters=num_iters, tol=tol, generator=generator,
                  seed=seed)
    values = res.values.clamp_min(0).sqrt()
    safe = torch.where(values > 0, values, torch.ones_like(values))
    vectors = res.vectors
    if side == "left":
        vectors = (A.T @ vectors) / safe
        vectors = torch.where(values > 0, vectors, torch.zeros_like(vectors))
    residuals = torch.where(values > 0, res.residuals / safe, res.residuals.sqrt())
    return LanczosResult(values, vectors, residuals, res.converged, res.num_matvecs,
                         res.num_iters, tol, "largest", res.settings)
