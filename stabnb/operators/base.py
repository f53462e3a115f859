"""The :class:`LinearOperator` protocol (curvlinops-style) and :class:`DenseOperator`.

An operator has ``shape``, ``dtype``, ``device``, ``@`` on flat vectors and column blocks,
``.T`` and ``to_dense()``; the network operators of :mod:`stabnb.operators` and the spectral
algorithms of :mod:`stabnb.spectra` meet here.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["LinearOperator", "DenseOperator"]


class LinearOperator:
    """A matrix known through its products: ``A @ v`` for a vector or a column block.

    Subclasses implement ``_matmat(X)`` for ``X`` of shape ``(shape[1], k)`` and, unless
    ``SELF_ADJOINT``, ``_rmatmat(Y)`` for ``Y`` of shape ``(shape[0], k)``.

    Examples::

        >>> A = torch.randn(3, 3, dtype=torch.float64)
        >>> op = DenseOperator(A)
        >>> torch.allclose(op.T @ torch.ones(3, dtype=torch.float64), A.T.sum(1))
        True
    """

    SELF_ADJOINT = False

    def __init__(self, shape: tuple[int, int], dtype: torch.dtype, device: torch.device):
        self.shape = (int(shape[0]), int(shape[1]))
        self.dtype = dtype
        self.device = torch.device(device)

    def _matmat(self, X: Tensor) -> Tensor:
        raise NotImplementedError

    def _rmatmat(self, Y: Tensor) -> Tensor:
        if self.SELF_ADJOINT:
            return self._matmat(Y)
        raise NotImplementedError(f"{type(self).__name__} has no adjoint product.")

    def _check_operand(self, x: Tensor, rows: int) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"operand must be a torch.Tensor, got {type(x).__name__}.")
        if x.dim() not in (1, 2) or x.shape[0] != rows:
            raise ValueError(
                f"operand of shape {tuple(x.shape)} does not fit an operator of shape "
                f"{self.shape}; pass a vector of length {rows} or a block ({rows}, k).")
        if x.dtype != self.dtype or x.device != self.device:
            raise ValueError(
                f"operand is {x.dtype} on {x.device} but the operator is {self.dtype} on "
                f"{self.device}; convert it with .to(device=A.device, dtype=A.dtype).")

    def __matmul__(self, x: Tensor) -> Tensor:
        self._check_operand(x, self.shape[1])
        if x.dim() == 1:
            return self._matmat(x.unsqueeze(1)).squeeze(1)
        return self._matmat(x)

    @property
    def T(self) -> LinearOperator:  # noqa: N802 (mirrors Tensor.T)
        """The adjoint operator ``Aᵀ``."""
        return self if self.SELF_ADJOINT else _Adjoint(self)

    def to_dense(self) -> Tensor:
        """The dense matrix ``A @ I`` (``shape[1]`` products; for small operators only)."""
        return self @ torch.eye(self.shape[1], dtype=self.dtype, device=self.device)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape}, dtype={self.dtype}, device={self.device})"


class _Adjoint(LinearOperator):
    def __init__(self, parent: LinearOperator):
        super().__init__((parent.shape[1], parent.shape[0]), parent.dtype, parent.device)
        self.parent = parent

    def _matmat(self, X: Tensor) -> Tensor:
        return self.parent._rmatmat(X)

    def _rmatmat(self, Y: Tensor) -> Tensor:
        return self.parent._matmat(Y)

    @property
    def T(self) -> LinearOperator:  # noqa: N802
        return self.parent


class DenseOperator(LinearOperator):
    """A dense matrix seen as a :class:`LinearOperator` (for tests and composition)."""

    def __init__(self, matrix: Tensor):
        if matrix.dim() != 2:
            raise ValueError(f"matrix must be 2-D, got shape {tuple(matrix.shape)}.")
        super().__init__(tuple(matrix.shape), matrix.dtype, matrix.device)
        self.matrix = matrix

    def _matmat(self, X: Tensor) -> Tensor:
        return self.matrix @ X

    def _rmatmat(self, Y: Tensor) -> Tensor:
        return self.matrix.T @ Y
