"""Spectral regularisers: each is a callable ``reg(model, inputs, targets) -> λ · penalty``.

Four penalties, compared on the same footing by :mod:`stabnb.study` (which of them the paper
used is unknown; see ``docs/reconstruction.md``, "Regularisers"):

- :class:`JacobianSpectralPenalty` (default): ``λ · mean_x ‖J_f(x)‖₂²``, warm-started power
  iteration through JVPs and VJPs.
- :class:`JacobianFrobeniusPenalty` (Hoffman, Roberts & Yaida 2019): random-projection estimate
  of ``λ · mean_x ‖J_f(x)‖_F²``.
- :class:`WeightSpectralPenalty` (Yoshida & Miyato 2017): ``λ Σ_i ‖W_i‖₂²``, per-layer power
  iteration; for a convolution the norm of the convolution operator.
- :class:`InputCurvaturePenalty`: the input Hessian of the target logit (R5's β), either its
  spectral norm or the finite-difference change of the input gradient.

Every penalty plugs into :func:`stabnb.train.train`'s ``regularizer`` hook: it returns a scalar
already multiplied by its strength λ and differentiable in θ, works with the model in train mode
(BatchNorm's running statistics are left as the training forward pass set them), and exposes its
carried state (power-iteration vectors, random-generator state) as attributes, through
``reset()`` and through ``state_dict()`` / ``load_state_dict()`` for checkpoints.

Shared forward pass: a penalty with ``shares_forward = True`` (the three input-Jacobian and
curvature penalties) also accepts ``reg(model, x, y, logits=model(x))`` where ``x`` requires
grad and ``logits`` is the training step's own forward pass on it; it then builds its products
on that graph instead of running its own forward pass (same value and gradient up to float
rounding). The caller should then backpropagate with ``inputs=`` the parameters, so that no
gradient of the loss is computed for ``x``. :func:`stabnb.train.train` does this; see
:func:`shared_forward_inputs`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BASELINE", "SPECTRAL_PENALTIES", 
    "REGULARIZERS", "JacobianSpectralPenalty", "JacobianFrobeniusPenalty", "WeightSpectralPenalty",
    "InputCurvaturePenalty", "make_regularizer", "shared_forward_inputs",
]

BASELINE = "none"
"""The name of the unregularised baseline in every study grid."""
SPECTRAL_PENALTIES = ("jacobian_spectral", "jacobian_frobenius", "weight_spectral")
"""The spectral regularisers (a)–(c) of ``docs/reconstruction.md``: the paper's claim is about these;
``input_curvature`` (d) is our extension, not a spectral penalty."""
REGULARIZERS = (BASELINE, "jacobian_spectral", "jacobian_frobenius", "weight_spectral",
                "input_curvature")

CURVATURE_FORMS = ("finite_difference", "hessian")


def _check_strength(strength: float) -> float:
    strength = float(strength)
    if not strength >= 0.0 or strength == float("inf"):
        raise ValueError(f"strength={strength!r} must be a finite λ ≥ 0; use 0 to switch the "
                         "penalty off, or a positive value such as 1e-3.")
    return strength


def _check_count(name: str, value: int) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer, e.g. {name}=1.")
    return int(value)


def _unit(v: torch.Tensor) -> torch.Tensor:
    """Normalise each sample (leading dim) to unit norm; an all-zero sample stays zero."""
    norms = v.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))
    return torch.where(norms > 0, v / torch.where(norms > 0, norms, 1.0), v)


def shared_forward_inputs(regularizer: Any, inputs: torch.Tensor) -> torch.Tensor | None:
    """``inputs`` detached with ``requires_grad`` if ``regularizer`` shares the forward pass.

    Returns ``None`` for a regulariser without ``shares_forward = True`` (any plain callable):
    the caller then runs ``reg(model, x, y)``. Otherwise the caller runs its forward pass on the
    returned tensor ``x`` and calls ``reg(model, x, y, logits=logits)``.
    """
    if regularizer is None or not getattr(regularizer, "shares_forward", False):
        return None
    return inputs.detach().requires_grad_(True)


def _shared_logits(inputs: torch.Tensor, logits: torch.Tensor) -> None:
    if not inputs.requires_grad or not logits.requires_grad:
        raise ValueError("logits= must be the model's output on inputs that require grad: run "
                         "x = inputs.detach().requires_grad_(True); logits = model(x); "
                         "reg(model, x, y, logits=logits) (see shared_forward_inputs).")
    if logits.dim() != 2 or len(logits) != len(inputs):
        raise ValueError(f"logits of shape {tuple(logits.shape)} do not match inputs of shape "
                         f"{tuple(inputs.shape)}; expected ({len(inputs)}, C).")


def _input_graph(model: nn.Module, inputs: torch.Tensor,
                 logits: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, model(x))`` with x requiring grad: the training pass's when ``logits`` is given,
    else a forward pass of its own (BatchNorm running statistics left untouched)."""
    if logits is not None:
        _shared_logits(inputs, logits)
        return inputs, logits
    x = inputs.detach().requires_grad_(True)
    with _batchnorm_stats_kept(model):
        return x, model(x)


def _has_train_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training
               for module in model.modules())


@contextlib.contextmanager
def _batchnorm_stats_kept(model: nn.Module) -> Iterator[None]:
    """Run the penalty's own forward passes on throwaway copies of BatchNorm's running stats.

    In train mode every forward pass updates ``running_mean``/``running_var``/
    ``num_batches_tracked`` in place; the penalty's extra passes must not count as extra
    batches. The buffers are swapped for clones and the originals put back afterwards (not
    copied back in place, which would invalidate the tensors the double-backward graph saved).
    """
    saved = [(module, dict(module.named_buffers(recurse=False))) for module in model.modules()
             if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training]
    for module, buffers in saved:
        for name, buffer in buffers.items():
            setattr(module, name, buffer.clone())
    try:
        yield
    finally:
        for module, buffers in saved:
            for name, buffer in buffers.items():
                setattr(module, name, buffer)


class _Penalty:
    """Strength λ, a seeded generator made on first use on the inputs' device, and its state.

    ``repr`` lists the settings (``_SETTINGS``) and nothing else: :func:`stabnb.train.train`
    hashes it into the checkpoint key, so equal settings must give equal text.
    """

    _SETTINGS: tuple[str, ...]
    shares_forward = False

    def __init__(self, strength: float, seed: int):
        self.strength = _check_strength(strength)
        self.seed = int(seed)
        self.generator: torch.Generator | None = None
        self._pending_generator: dict[str, Any] | None = None

    def __repr__(self) -> str:
        settings = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._SETTINGS)
        return f"{type(self).__name__}({settings})"

    def _generator_on(self, device: torch.device) -> torch.Generator:
        if self.generator is None or self.generator.device != device:
            self.generator = torch.Generator(device=device).manual_seed(self.seed)
            pending = self._pending_generator
            if pending is not None and pending["device"] == str(device):
                self.generator.set_state(pending["state"])
                self._pending_generator = None
        return self.generator

    def reset(self) -> None:
        """Forget carried state: the next call starts from fresh draws of the seeded generator."""
        self.generator = None
        self._pending_generator = None

    def state_dict(self) -> dict[str, Any]:
        """Carried state for checkpoints (tensors by reference, as ``nn.Module.state_dict``)."""
        if self.generator is None:
            return {"generator": self._pending_generator}
        return {"generator": {"device": str(self.generator.device),
                              "state": self.generator.get_state()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output; the generator resumes on first use on its device."""
        self.generator = None
        self._pending_generator = state.get("generator")


class _SlotVectorPenalty(_Penalty):
    """A penalty carrying one unit vector per batch slot, ``vectors`` of shape (slots, ...)."""

    def __init__(self, strength: float, seed: int):
        super().__init__(strength, seed)
        self.vectors: torch.Tensor | None = None

    def _start_vectors(self, x: torch.Tensor) -> torch.Tensor:
        """Carried vectors for the first ``len(x)`` slots; fresh Gaussian draws where none fit."""
        carried = self.vectors
        if carried is None or carried.shape[1:] != x.shape[1:]:
            carried = x.new_zeros((0, *x.shape[1:]))
        carried = carried[: len(x)].to(device=x.device, dtype=x.dtype)
        start = torch.cat([carried, x.new_zeros((len(x) - len(carried), *x.shape[1:]))])
        missing = start.flatten(1).norm(dim=1) == 0
        if bool(missing.any()):
            start[missing] = _unit(torch.randn((int(missing.sum()), *x.shape[1:]),
                                               generator=self._generator_on(x.device),
                                               device=x.device, dtype=x.dtype))
        return start

    def _carry(self, new: torch.Tensor) -> None:
        new = _unit(new.detach())
        old = self.vectors
        if old is not None and old.shape[1:] == new.shape[1:] and len(old) > len(new):
            new = torch.cat([new, old[len(new):].to(device=new.device, dtype=new.dtype)])
        self.vectors = new

    def reset(self) -> None:
        super().reset()
        self.vectors = None

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "vectors": self.vectors}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.vectors = state.get("vectors")


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


class WeightSpectralPenalty(_Penalty):
    """λ Σ_i ‖W_i‖₂² over the ``nn.Linear`` and ``nn.Conv2d`` layers (Yoshida & Miyato 2017).

    Per layer, warm-started power iteration ``u = Av/‖Av‖``, ``v = Aᵀu/‖Aᵀu‖`` without graph,
    then ``σ = uᵀ A v`` with the weight in the graph (so ``∂σ²/∂W = 2σ uvᵀ``, the gradient of
    ``σ₁²`` at convergence). For a Linear layer A is the weight matrix. For a Conv2d layer A is
    the **convolution operator** at the layer's input shape (C_in, H, W): ``Av`` is
    ``conv2d(v, W)`` (no bias) and ``Aᵀu`` is ``conv_transpose2d(u, W)`` with the matching
    stride, padding, dilation, groups and output padding. Input shapes are recorded by forward
    hooks on the first call (one extra forward pass) unless given as ``input_shapes``.

    torch's ``torch.nn.utils.parametrizations.spectral_norm`` (and the older
    ``torch.nn.utils.spectral_norm``) normalises by the norm of the **reshaped kernel**, the
    (out, in·k_h·k_w) matrix ``weight.flatten(1)`` (``_SpectralNorm._reshape_weight_to_matrix``),
    not by the operator norm. By Parseval, for stride 1 and circular padding the reshaped-kernel
    norm is a lower bound on the operator norm, up to √(k_h k_w) times smaller; zero padding
    changes this only at the borders.

    Other layers (BatchNorm scales, biases) are not penalised. Cost per call: ``num_iters``
    products with each A and Aᵀ on one vector, negligible next to a training step.
    arXiv:1705.10941.

    Args:
        strength: λ ≥ 0.
        num_iters: power iterations per layer and call. Default: 1.
        seed: seed of the generator drawing start vectors. Default: 0.
        input_shapes: ``{module name: (C_in, H, W)}`` for Conv2d layers; others are recorded.
    """

    _SETTINGS = ("strength", "num_iters", "seed")

    def __init__(self, strength: float, num_iters: int = 1, *, seed: int = 0,
                 input_shapes: Mapping[str, Sequence[int]] | None = None):
        super().__init__(strength, seed)
        self.num_iters = _check_count("num_iters", num_iters)
        self.input_shapes: dict[str, tuple[int, ...]] = {
            name: tuple(int(s) for s in shape) for name, shape in (input_shapes or {}).items()}
        self.vectors: dict[str, torch.Tensor] = {}

    def reset(self) -> None:
        super().reset()
        self.vectors = {}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "vectors": dict(self.vectors),
                "input_shapes": dict(self.input_shapes)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.vectors = dict(state.get("vectors", {}))
        self.input_shapes = {name: tuple(shape)
                             for name, shape in state.get("input_shapes", {}).items()}

    def _record_input_shapes(self, model: nn.Module, inputs: torch.Tensor,
                             convs: Sequence[tuple[str, nn.Conv2d]]) -> None:
        def hook(name: str):
            def record(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
                self.input_shapes[name] = tuple(args[0].shape[1:])
            return record

        handles = [module.register_forward_pre_hook(hook(name)) for name, module in convs]
        try:
            with torch.no_grad(), _batchnorm_stats_kept(model):
                model(inputs)
        finally:
            for handle in handles:
                handle.remove()

    def __call__(self, model: nn.Module, inputs: torch.Tensor,
                 targets: torch.Tensor | None = None) -> torch.Tensor:
        layers = [(name, module) for name, module in model.named_modules()
                  if isinstance(module, (nn.Linear, nn.Conv2d))]
        if not layers:
            raise ValueError("model has no nn.Linear or nn.Conv2d layer; WeightSpectralPenalty "
                             "has nothing to penalise (use another regulariser).")
        convs = [(name, module) for name, module in layers if isinstance(module, nn.Conv2d)]
        for name, conv in convs:
            if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
                raise ValueError(f"layer {name!r} has padding={conv.padding!r}, padding_mode="
                                 f"{conv.padding_mode!r}; WeightSpectralPenalty supports integer "
                                 "zero padding only (padding=int or tuple, padding_mode='zeros').")
        if any(name not in self.input_shapes for name, _ in convs):
            self._record_input_shapes(model, inputs.detach(), convs)
        generator = self._generator_on(layers[0][1].weight.device)
        total = layers[0][1].weight.new_zeros(())
        for name, module in layers:
            forward, adjoint, shape = self._operator(name, module)
            weight = module.weight
            v = self.vectors.get(name)
            if v is None or v.shape != shape:
                v = torch.randn(shape, generator=generator, device=weight.device,
                                dtype=weight.dtype)
            v = v.to(device=weight.device, dtype=weight.dtype)
            v = v / v.norm()
            with torch.no_grad():
                for _ in range(self.num_iters):
                    u = forward(v, weight)
                    u = u / u.norm()
                    v = adjoint(u, weight)
                    v = v / v.norm()
                u = forward(v, weight)
                u = u / u.norm()
            self.vectors[name] = v
            total = total + (u * forward(v, weight)).sum().pow(2)
        return self.strength * total

    def _operator(self, name: str, module: nn.Module):
        """``(A, Aᵀ, shape of v)`` for one layer, as functions of (vector, weight)."""
        if isinstance(module, nn.Linear):
            return ((lambda v, w: w @ v), (lambda u, w: w.T @ u), (module.in_features,))
        shape = (1, *self.input_shapes[name])
        stride, padding, dilation = module.stride, module.padding, module.dilation
        kernel, groups = module.kernel_size, module.groups
        out_side = [(shape[2 + i] + 2 * padding[i] - dilation[i] * (kernel[i] - 1) - 1)
                    // stride[i] + 1 for i in range(2)]
        output_padding = tuple(
            shape[2 + i] - ((out_side[i] - 1) * stride[i] - 2 * padding[i]
                            + dilation[i] * (kernel[i] - 1) + 1) for i in range(2))
        return (
            lambda v, w: F.conv2d(v, w, None, stride, padding, dilation, groups),
            lambda u, w: F.conv_transpose2d(u, w, None, stride, padding, output_padding, groups,
                                            dilation),
            shape,
        )


class InputCurvaturePenalty(_SlotVectorPenalty):
    """Penalise the input curvature of the target logit f_c, c the training label (R5's β).

    R5 bounds the saliency change ``‖∇_x f_c(x+δ) − ∇_x f_c(x)‖`` by β‖δ‖, β the Lipschitz
    constant of ``x ↦ ∇_x f_c(x)``, i.e. ``sup ‖∇²_x f_c‖₂``; a penalty on ``‖J_f‖`` does not
    control it. Two forms:

    - ``form='finite_difference'`` (default): ``λ · mean_x ‖∇_x f_c(x+δ) − ∇_x f_c(x)‖²`` with
      ``δ ~ N(0, σ² I)`` drawn from the seeded generator. For smooth activations and small σ its
      expectation is ``σ² ‖∇²_x f_c(x)‖_F²`` (``E‖Hδ‖² = σ² ‖H‖_F²``). For ReLU networks it is the
      only form that sees anything: it measures the gate flips between x and x+δ. δ is not clipped
      to the pixel range. Cost: one forward and one ``create_graph`` backward pass on 2n inputs
      (x and x+δ in one batch; with BatchNorm in train mode they share the batch statistics).
      With ``logits=`` and no BatchNorm in train mode, the training step's pass serves for x and
      the forward pass is on x+δ only (n inputs); one backward pass of
      ``f_c(x+δ) − f_c(x)`` to x gives the difference directly.
    - ``form='hessian'``: ``λ · mean_x ‖∇²_x f_c(x)‖₂²`` by power iteration on input-space
      Hessian-vector products ``Hv`` (double backward), vectors carried per batch slot as in
      :class:`JacobianSpectralPenalty`; the value is ``‖Hv‖²`` at the last iterate (a lower bound,
      tight when v is the top eigenvector of ``H²``). **Zero almost everywhere for ReLU (and any
      piecewise-linear) network**: the penalty is then identically 0 and has no gradient; use a
      smooth activation (tanh, gelu, softplus, silu) with this form. Cost: one forward pass
      (none with ``logits=``), one ``create_graph`` backward pass and ``num_iters``
      double-backward passes.

    Source: ``docs/reconstruction.md`` "Regularisers" (d), our reconstruction.

    Args:
        strength: λ ≥ 0.
        form: ``'finite_difference'`` or ``'hessian'``. Default: ``'finite_difference'``.
        sigma: σ of δ in pixel units (finite-difference form). Default: 0.05, the default
            Gaussian perturbation of the attribution-stability probe, so the penalty targets the
            gradient change that the stability metrics measure.
        num_iters: Hessian power iterations per call (Hessian form). Default: 1.
        seed: seed of the generator drawing δ or start vectors. Default: 0.
    """

    _SETTINGS = ("strength", "form", "sigma", "num_iters", "seed")
    shares_forward = True

    def __init__(self, strength: float, form: str = "finite_difference", *, sigma: float = 0.05,
                 num_iters: int = 1, seed: int = 0):
        super().__init__(strength, seed)
        if form not in CURVATURE_FORMS:
            raise ValueError(f"form={form!r} is unknown; choose one of {CURVATURE_FORMS}.")
        if not float(sigma) > 0 or float(sigma) == float("inf"):
            raise ValueError(f"sigma={sigma!r} must be a finite σ > 0 (pixel units), e.g. 0.05.")
        self.form = form
        self.sigma = float(sigma)
        self.num_iters = _check_count("num_iters", num_iters)

    def __call__(self, model: nn.Module, inputs: torch.Tensor,
                 targets: torch.Tensor | None = None, *,
                 logits: torch.Tensor | None = None) -> torch.Tensor:
        """The penalty; ``logits``: the training pass ``model(inputs)`` (see module)."""
        if targets is None or targets.shape != inputs.shape[:1]:
            raise ValueError(f"InputCurvaturePenalty needs integer class labels of shape "
                             f"({len(inputs)},) as targets; got "
                             f"{None if targets is None else tuple(targets.shape)}.")
        if logits is not None:
            _shared_logits(inputs, logits)
        if self.form == "finite_difference":
            return self._finite_difference(model, inputs, targets, logits)
        return self._hessian(model, inputs, targets, logits)

    def _finite_difference(self, model: nn.Module, inputs: torch.Tensor,
                           targets: torch.Tensor, logits: torch.Tensor | None) -> torch.Tensor:
        x = inputs.detach()
        delta = self.sigma * torch.randn(x.shape, generator=self._generator_on(x.device),
                                         device=x.device, dtype=x.dtype)
        if logits is not None and not _has_train_batchnorm(model):
            # x+δ built from the shared leaf: one backward of f_c(x+δ) − f_c(x) to it gives
            # ∇f_c(x+δ) − ∇f_c(x). (Train-mode BatchNorm: x and x+δ must share batch
            # statistics, so the 2n batch below is used instead.)
            index = targets.view(-1, 1)
            shifted = model(inputs + delta).gather(1, index).sum()
            change = torch.autograd.grad(shifted - logits.gather(1, index).sum(), inputs,
                                         retain_graph=True, create_graph=True)[0]
            return self.strength * change.flatten(1).pow(2).sum(dim=1).mean()
        both = torch.cat([x, x + delta]).requires_grad_(True)
        with _batchnorm_stats_kept(model):
            out = model(both)
        target_logits = out.gather(1, torch.cat([targets, targets]).view(-1, 1)).sum()
        grads = torch.autograd.grad(target_logits, both, create_graph=True)[0]
        change = grads[len(x):] - grads[: len(x)]
        return self.strength * change.flatten(1).pow(2).sum(dim=1).mean()

    def _hessian(self, model: nn.Module, inputs: torch.Tensor,
                 targets: torch.Tensor, logits: torch.Tensor | None) -> torch.Tensor:
        if logits is None:
            x = inputs.detach().requires_grad_(True)
            with _batchnorm_stats_kept(model):
                out = model(x)
        else:
            x, out = inputs, logits
        v = self._start_vectors(x.detach())
        grads = torch.autograd.grad(out.gather(1, targets.view(-1, 1)).sum(), x,
                                    retain_graph=True, create_graph=True)[0]
        for step in range(self.num_iters):
            last = step == self.num_iters - 1
            hv = torch.autograd.grad(grads, x, v, retain_graph=True, create_graph=last,
                                     allow_unused=True, materialize_grads=True)[0]
            v = _unit(hv.detach())
        self._carry(v)
        return self.strength * hv.flatten(1).pow(2).sum(dim=1).mean()


_PENALTIES = {
    "jacobian_spectral": JacobianSpectralPenalty,
    "jacobian_frobenius": JacobianFrobeniusPenalty,
    "weight_spectral": WeightSpectralPenalty,
    "input_curvature": InputCurvaturePenalty,
}


def make_regularizer(name: str, strength: float, **kwargs: Any) -> _Penalty | None:
    """Build a regulariser by name: one of :data:`REGULARIZERS`.

    Args:
        name: ``'none'``, ``'jacobian_spectral'``, ``'jacobian_frobenius'``,
            ``'weight_spectral'`` or ``'input_curvature'``.
        strength: λ ≥ 0 (must be 0 for ``'none'``).
        **kwargs: the penalty's own options (``num_iters``, ``num_projections``, ``form``,
            ``sigma``, ``seed``, ...).

    Returns:
        The penalty, or ``None`` for ``'none'`` (what :func:`stabnb.train.train` takes for
        "no regulariser").

    Raises:
        ValueError: unknown name, λ < 0, or options given to ``'none'``.
    """
    if name not in REGULARIZERS:
        raise ValueError(f"regularizer={name!r} is unknown; choose one of {REGULARIZERS}.")
    strength = _check_strength(strength)
    if name == "none":
        if strength != 0.0 or kwargs:
            raise ValueError(f"regularizer 'none' takes strength=0 and no options; got "
                             f"strength={strength!r}, options={sorted(kwargs)}.")
        return None
    return _PENALTIES[name](strength, **kwargs)
