"""Input-Jacobian penalties: the spectral norm (power iteration) and the Frobenius norm (random
projections), regularisers (a) and (b) of ``docs/reconstruction.md``, "Regularisers"."""

from __future__ import annotations


import torch
from torch import nn

from ._base import _check_count, _input_graph, _Penalty, _SlotVectorPenalty, _unit


class JacobianSpectralPenalty(_SlotVectorPenalty):
    """λ · mean_x ‖J_f(x)‖₂², with J_f(x) = ∂f(x)/∂x the (C × d) input Jacobian of the logits.

    Power iteration on J Jᵀ: ``u = Jv/‖Jv‖``, ``v ← Jᵀu``, all on one recorded forward pass.
    ``Jᵀu`` is a VJP; ``Jv`` is the transpose of a VJP (the "double-VJP trick"): ``g(w) = Jᵀw``
    is recorded once per call with a dummy cotangent w, and ``Jv = ∂(g·v)/∂w`` is a backward
    pass through that record, cheaper here than torch's forward-mode AD (which recomputes the
    primal and multiplies by the zero tangents of the weights) and, unlike ``torch.func.jvp``,
    fine with BatchNorm updating its buffers in train mode. The penalty is ``λ · mean ‖Jᵀu‖²``
    from the last iteration, a lower bound on ``mean σ₁²`` that is tight once ``u`` is the top
    left singular vector; the last VJP keeps its graph, so the penalty is differentiable in θ,
    and by the envelope theorem its gradient equals that of ``σ₁²`` at convergence (``u`` held
    fixed).

    Warm start: the right singular vector estimates ``v`` are carried across calls in
    :attr:`vectors`, one per **batch slot** (row i of the next batch starts from row i of the
    last). With a fixed batch this is a true warm start; under minibatch shuffling the slot holds
    another sample's vector, which acts as a data-shaped random restart: ``Jv`` for any start ``v``
    is already one power step in the C-dimensional output space, so one iteration per step gives a
    usable estimate, and ``num_iters`` > 1 sharpens it within the step. Missing slots (a larger
    batch, the first call) are drawn from the seeded generator.

    Cost per call: one forward pass with graph (none with ``logits=``: the training step's own
    pass is used), one input-gradient backward pass recording ``g``, ``num_iters`` backward
    passes through that record (the JVPs) and ``num_iters`` input-gradient backward passes (the
    last with ``create_graph``), plus the double-backward pass that the training step's
    ``loss.backward()`` makes through it. BatchNorm in train mode: the batch map
    mixes samples, and the products are those of the whole batch map (cross-sample terms are
    O(1/batch)); running statistics are restored after the penalty's passes.

    Source: ``docs/reconstruction.md`` "Regularisers" (a); the paper's exact estimator is unknown (our
    reconstruction).

    Args:
        strength: λ ≥ 0.
        num_iters: power iterations (JVP + VJP pairs) per call. Default: 1.
        seed: seed of the generator drawing start vectors. Default: 0.

    Examples::

        >>> from stabnb.models import MLP
        >>> model = MLP(4, (6,), 3, activation="tanh").double()
        >>> x = torch.rand(8, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> y = torch.arange(8) % 3
        >>> reg = JacobianSpectralPenalty(1e-2, num_iters=2)
        >>> loss = torch.nn.functional.cross_entropy(model(x), y) + reg(model, x, y)
        >>> loss.backward()
        >>> bool(reg(model, x, y) > 0)
        True
    """

    _SETTINGS = ("strength", "num_iters", "seed")
    shares_forward = True

    def __init__(self, strength: float, num_iters: int = 1, *, seed: int = 0):
        super().__init__(strength, seed)
        self.num_iters = _check_count("num_iters", num_iters)

    def __call__(self, model: nn.Module, inputs: torch.Tensor,
                 targets: torch.Tensor | None = None, *,
                 logits: torch.Tensor | None = None) -> torch.Tensor:
        """``λ · mean ‖Jᵀu‖²``; ``logits``: the training pass ``model(inputs)`` (see module)."""
        x, out = _input_graph(model, inputs, logits)
        v = self._start_vectors(x.detach())
        dummy = torch.zeros_like(out, requires_grad=True)
        transpose = torch.autograd.grad(out, x, dummy, retain_graph=True, create_graph=True)[0]
        for step in range(self.num_iters):
            jv = torch.autograd.grad(transpose, dummy, v, retain_graph=True, allow_unused=True,
                                     materialize_grads=True)[0]
            last = step == self.num_iters - 1
            jtu = torch.autograd.grad(out, x, _unit(jv), retain_graph=True, create_graph=last)[0]
            v = _unit(jtu.detach())
        self._carry(v)
        return self.strength * jtu.flatten(1).pow(2).sum(dim=1).mean()


class JacobianFrobeniusPenalty(_Penalty):
    """λ · mean_x ‖J_f(x)‖_F² by random projections (Hoffman, Roberts & Yaida 2019).

    For each sample, an orthonormal frame ``q_1 … q_m`` of the output space R^C spanning a
    uniformly random m-dimensional subspace (QR of a Gaussian C × m matrix); then
    ``‖J‖_F² ≈ (C/m) Σ_j ‖q_jᵀ J‖²``, unbiased since ``E[Σ_j q_j q_jᵀ] = (m/C) I``. With
    ``m = C`` the frame is a basis and the value is exact; ``m = 1`` is Hoffman et al.'s estimator
    ``C ‖vᵀJ‖²`` with v uniform on the sphere.

    Cost per call: one forward pass (none with ``logits=``: the training step's own pass is
    used) and m backward passes with ``create_graph``, plus the double-backward pass through
    them in ``loss.backward()``. arXiv:1908.02729.

    Args:
        strength: λ ≥ 0.
        num_projections: m, between 1 and C. Default: 1.
        seed: seed of the generator drawing the projections. Default: 0.
    """

    _SETTINGS = ("strength", "num_projections", "seed")
    shares_forward = True

    def __init__(self, strength: float, num_projections: int = 1, *, seed: int = 0):
        super().__init__(strength, seed)
        self.num_projections = _check_count("num_projections", num_projections)

    def __call__(self, model: nn.Module, inputs: torch.Tensor,
                 targets: torch.Tensor | None = None, *,
                 logits: torch.Tensor | None = None) -> torch.Tensor:
        """``λ (C/m) mean Σ_j ‖q_jᵀJ‖²``; ``logits``: the training pass ``model(inputs)``."""
        x, out = _input_graph(model, inputs, logits)
        n, c = out.shape
        m = self.num_projections
        if m > c:
            raise ValueError(f"num_projections={m} exceeds the number of outputs C={c}; use at "
                             f"most {c} (num_projections={c} is exact).")
        gaussian = torch.randn(n, c, m, generator=self._generator_on(out.device),
                               device=out.device, dtype=out.dtype)
        frames = torch.linalg.qr(gaussian).Q
        squared = out.new_zeros(n)
        for j in range(m):
            a = torch.autograd.grad(out, x, frames[..., j], retain_graph=True,
                                    create_graph=True)[0]
            squared = squared + a.flatten(1).pow(2).sum(dim=1)
        return self.strength * (c / m) * squared.mean()
