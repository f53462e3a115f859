"""The four stability operators of a network, matrix-free, with exact batched paths.

Operators (curvlinops-style objects: ``shape``, ``dtype``, ``device``, ``@`` on flat vectors
and column blocks, ``.T``, ``to_dense()``):

- :class:`InputJacobian` ``J_f(x) ∈ R^{C×d}`` of one input,
- :class:`ParamJacobian` ``∇_θ f(X) ∈ R^{nC×p}`` of a batch (rows sample-major: ``i·C + c``),
- :class:`NTKGram` ``K_ij = ⟨∇_θ f(x_i), ∇_θ f(x_j)⟩_F`` (n×n), or the nC×nC block ``J Jᵀ``,
- :class:`LossHessian` ``∇²_θ L`` of a batch's mean loss and :class:`LoaderLossHessian`, its
  mean over a data loader (cross-entropy or MSE).

Definitions (which NTK, which Hessian) follow ``docs/reconstruction.md``, section 2.

Exact batched functions for small outputs: :func:`input_jacobians`,
:func:`input_jacobian_singular_values`, :func:`parameter_jacobian`, :func:`ntk_gram`.

Operators draw no random numbers, write nothing to ``.grad`` and never flip
``train()``/``eval()``: a model with BatchNorm or Dropout in training mode, or with a
BatchNorm that keeps no running statistics, is refused. Inputs follow the one input-domain
rule of :mod:`stabnb.checks`: integer dtypes are refused (pass ``x.float() / 255``), any
float values are accepted (the operators are defined off the pixel box too), and a model
with an ``input_shape`` refuses inputs of another shape. Non-finite logits or Jacobians
raise ``ValueError`` naming the quantity. The
per-sample quantities assume that samples do not interact in the forward pass, which eval
mode guarantees for every model in :mod:`stabnb.models`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, jacrev, jvp, vjp, vmap

from .checks import (
    check_finite,
    check_input_shape,
    check_model_finite,
    check_pixel_inputs,
    require_eval_mode,
)
from .models import functional

__all__ = [
    "LinearOperator", "DenseOperator", "InputJacobian", "ParamJacobian", "NTKGram", "LossHessian",
    "LoaderLossHessian", "input_jacobians", "input_jacobian_singular_values",
    "parameter_jacobian", "ntk_gram", "LOSSES", "NTK_METHODS",
]

LOSSES = ("cross_entropy", "mse")
_NONFINITE_MODEL = ("the inputs and weights are finite, so the model itself is not finite there "
                    "(e.g. a log or sqrt of a negative value, an overflow): fix the model, or "
                    "use float64")


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


# --------------------------------------------------------------------------- model plumbing

def _model_dtype_device(model: nn.Module, inputs: Tensor) -> tuple[torch.dtype, torch.device]:
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype, tensor.device
    return (inputs.dtype if inputs.is_floating_point() else torch.get_default_dtype()), inputs.device


def _prepare(model: nn.Module, inputs: Tensor, name: str = "inputs", *,
             batched: bool = True) -> Tensor:
    """Refuse train mode, batch-statistics BatchNorm, non-finite weights, non-pixel inputs
    (integer dtypes, NaN/Inf; :func:`~stabnb.checks.check_pixel_inputs` with no range) and a
    wrong input shape; move inputs to the model's dtype/device."""
    require_eval_mode(model)
    check_model_finite(model)
    check_pixel_inputs(inputs, name, pixel_range=None)
    if batched and (inputs.dim() < 2 or inputs.shape[0] == 0):
        raise ValueError(f"{name} must be a non-empty batch (n, *input_shape); got shape "
                         f"{tuple(inputs.shape)}. Add a batch dimension with x.unsqueeze(0).")
    check_input_shape(model, inputs, name, batched=batched)
    dtype, device = _model_dtype_device(model, inputs)
    inputs = inputs.to(device=device, dtype=dtype)
    check_finite(inputs, name)          # finite before, but a cast to a narrower dtype overflows
    return inputs


def _input_function(model: nn.Module) -> Callable[[Tensor], Tensor]:
    """``x ↦ model(x)`` with the parameters held constant (no autograd graph to θ)."""
    params = {name: p.detach() for name, p in model.named_parameters()}

    def f(x: Tensor) -> Tensor:
        return functional_call(model, params, (x,))

    return f


def _check_logits(out: Tensor, n: int) -> int:
    if out.dim() != 2 or out.shape[0] != n:
        raise ValueError(f"model must map (n, *input_shape) to logits (n, C); for n={n} it "
                         f"returned shape {tuple(out.shape)}.")
    return int(out.shape[1])


def _chunks(n: int, chunk_size: int | None) -> list[slice]:
    if chunk_size is None:
        return [slice(0, n)]
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size={chunk_size} must be a positive integer or None.")
    return [slice(i, min(i + int(chunk_size), n)) for i in range(0, n, int(chunk_size))]


class _ParamLayout:
    """The params-dict ↔ flat-vector mapping (names in ``named_parameters`` order)."""

    def __init__(self, params: dict[str, Tensor]):
        self.names = list(params)
        self.shapes = [params[k].shape for k in self.names]
        self.sizes = [params[k].numel() for k in self.names]
        self.numel = sum(self.sizes)

    def unflatten(self, vector: Tensor) -> dict[str, Tensor]:
        parts = torch.split(vector, self.sizes)
        return {k: part.reshape(shape) for k, part, shape in zip(self.names, parts, self.shapes)}

    def flatten(self, tensors: dict[str, Tensor] | Iterable[Tensor], lead: int = 0) -> Tensor:
        """Concatenate per-parameter tensors with ``lead`` leading batch dims into (*lead, p)."""
        values = tensors.values() if isinstance(tensors, dict) else tensors
        return torch.cat([t.reshape(*t.shape[:lead], -1) for t in values], dim=lead)


# --------------------------------------------------------------------------- exact paths

def input_jacobians(model: nn.Module, inputs: Tensor, *, chunk_size: int | None = None) -> Tensor:
    """Per-sample input Jacobians ``J_f(x_i) = ∂f(x_i)/∂x_i``, shape ``(n, C, *input_shape)``.

    Cost: C vector-Jacobian products (one ``vmap``-ed backward) per chunk of samples, memory
    ``chunk_size·C·d``. Samples must not interact (eval mode).

    Args:
        model: network mapping ``(n, *input_shape)`` to logits ``(n, C)``; eval mode.
        inputs: batch ``(n, *input_shape)``, moved to the model's dtype/device.
        chunk_size: samples per backward pass. Default: all at once.

    Raises:
        ValueError: model in train mode, non-finite weights or inputs, non-(n, C) outputs.
    """
    inputs = _prepare(model, inputs)
    f = _input_function(model)
    pieces = []
    for part in _chunks(inputs.shape[0], chunk_size):
        x = inputs[part]
        out, pullback = vjp(f, x)
        num_classes = _check_logits(out, x.shape[0])
        check_finite(out, "model outputs (logits) for the input Jacobian", _NONFINITE_MODEL)
        basis = torch.eye(num_classes, dtype=out.dtype, device=out.device)
        cotangents = basis[:, None, :].expand(num_classes, x.shape[0], num_classes)
        (jac,) = vmap(pullback)(cotangents)                    # (C, b, *input_shape)
        check_finite(jac, "input Jacobian", _NONFINITE_MODEL)
        pieces.append(jac.movedim(0, 1))
    return torch.cat(pieces)


def input_jacobian_singular_values(model: nn.Module, inputs: Tensor, *,
                                   chunk_size: int | None = None) -> Tensor:
    """Singular values of every ``J_f(x_i)``, descending, shape ``(n, min(C, d))``.

    ``J_f(x) ∈ R^{C×d}`` has rank ≤ C, so its spectrum is exact and cheap: C VJPs per chunk
    (:func:`input_jacobians`) and a batched ``svdvals`` (O(C²d) per sample), memory
    ``chunk_size·C·d``.

    Examples::

        >>> from stabnb.models import MLP
        >>> model = MLP(4, (6,), 3).double().eval()
        >>> s = input_jacobian_singular_values(model, torch.rand(5, 4, dtype=torch.float64))
        >>> s.shape
        torch.Size([5, 3])
    """
    inputs = _prepare(model, inputs)
    pieces = [torch.linalg.svdvals(input_jacobians(model, inputs[part]).flatten(2))
              for part in _chunks(inputs.shape[0], chunk_size)]
    return torch.cat(pieces)


def _per_sample_function(f: Callable[[dict[str, Tensor], Tensor], Tensor]):
    """``θ ↦ (f(θ, x), f(θ, x))`` for one sample: the output and, as ``jacrev`` aux, the logits."""
    def f_single(params: dict[str, Tensor], x: Tensor) -> tuple[Tensor, Tensor]:
        out = f(params, x.unsqueeze(0)).squeeze(0)
        return out, out.detach()
    return f_single


def parameter_jacobian(model: nn.Module, inputs: Tensor, *,
                       chunk_size: int | None = None) -> Tensor:
    """Per-sample parameter Jacobians ``∇_θ f(x_i)``, shape ``(n, C, p)``.

    ``vmap(jacrev)`` over samples (C reverse passes per sample, vectorised); memory
    ``chunk_size·C·p``. Columns follow ``model.named_parameters()`` (trainable only).

    Raises:
        ValueError: model in train mode or without trainable parameters; non-finite values.
    """
    inputs = _prepare(model, inputs)
    params, f = functional(model)
    layout = _ParamLayout(params)
    _check_logits(f(params, inputs[:1]), 1)
    jac_fn = vmap(jacrev(_per_sample_function(f), has_aux=True), in_dims=(None, 0))
    pieces = []
    for part in _chunks(inputs.shape[0], chunk_size):
        jac, logits = jac_fn(params, inputs[part])
        check_finite(logits, "model outputs (logits) for the parameter Jacobian",
                     _NONFINITE_MODEL)
        jac = layout.flatten(jac, lead=2)
        check_finite(jac, "parameter Jacobian", _NONFINITE_MODEL)
        pieces.append(jac)
    return torch.cat(pieces)


NTK_METHODS = ("auto", "structured", "contraction")


def _structured_layers(model: nn.Module) -> list[nn.Module] | None:
    """The ``nn.Linear``/``nn.Conv2d`` modules holding every trainable parameter, or ``None``.

    ``None`` when a trainable parameter sits elsewhere (BatchNorm, a custom module), is shared
    between modules, or a convolution is grouped, non-zero-padded or padded by name.
    """
    layers, seen = [], set()
    for module in model.modules():
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if not own:
            continue
        if type(module) is nn.Conv2d:
            if module.groups != 1 or module.padding_mode != "zeros" or isinstance(
                    module.padding, str):
                return None
        elif type(module) is not nn.Linear:
            return None
        if any(id(p) in seen for p in own):
            return None
        seen.update(id(p) for p in own)
        layers.append(module)
    return layers


_LinearFactor = tuple[Tensor, Tensor | None, bool]


def _ntk_factors(model: nn.Module, layers: list[nn.Module],
                 inputs: Tensor) -> tuple[list[_LinearFactor], Tensor] | None:
    """Structured Jacobian factors of one chunk: ``(g, a, bias)`` per Linear layer, conv rows.

    One forward pass records each layer's input ``a(x)``; one ``vmap``-ed backward (C
    cotangents) gives the output cotangents ``g_c(x) = ∂f_c/∂(layer output)``. Linear:
    ``g (b, C, out)``, ``a (b, in)`` (``None`` when the weight is frozen) and whether the bias
    is trainable. Conv2d: its weight and bias Jacobian rows ``Σ_p g_c[:, p] U[:, p]ᵀ`` (``U``
    the unfolded input) and ``Σ_p g_c[:, p]``, concatenated into ``(b, C, q)``. ``None`` when
    a layer is not called exactly once, or a Linear layer sees more than a flat batch.
    """
    records: dict[nn.Module, list[tuple[Tensor, Tensor]]] = {m: [] for m in layers}

    def hook(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
        records[module].append((args[0].detach(), output))

    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        with torch.enable_grad():
            logits = model(inputs.detach().requires_grad_(True))
    finally:
        for handle in handles:
            handle.remove()
    b = inputs.shape[0]
    num_classes = _check_logits(logits, b)
    check_finite(logits.detach(), "model outputs (logits) for the parameter Jacobian",
                 _NONFINITE_MODEL)
    if any(len(calls) != 1 for calls in records.values()) or any(
            type(m) is nn.Linear and records[m][0][0].dim() != 2 for m in layers):
        return None
    basis = torch.eye(num_classes, dtype=logits.dtype, device=logits.device)
    cotangents = torch.autograd.grad(
        logits, [records[m][0][1] for m in layers], basis[:, None, :].expand(-1, b, -1),
        is_grads_batched=True, allow_unused=True, materialize_grads=True)
    linear: list[_LinearFactor] = []
    conv_rows = []
    for module, grad in zip(layers, cotangents):
        a = records[module][0][0]
        g = grad.movedim(0, 1)                                     # (b, C, *out_shape)
        weight = module.weight.requires_grad
        bias = module.bias is not None and module.bias.requires_grad
        if type(module) is nn.Linear:
            linear.append((g, a if weight else None, bias))
            continue
        g = g.flatten(3)                                           # (b, C, O, P)
        if weight:
            unfolded = F.unfold(a, module.kernel_size, module.dilation, module.padding,
                                module.stride)                     # (b, I·k, P)
            conv_rows.append(torch.einsum("bcop,bkp->bcok", g, unfolded).flatten(2))
        if bias:
            conv_rows.append(g.sum(-1))
    rows = torch.cat(conv_rows, dim=2) if conv_rows else logits.new_zeros(b, num_classes, 0)
    return linear, rows


def _row_gram(rows: Tensor, block: bool) -> Tensor:
    """``(n, C, q)`` rows to the block ``(n, C, n, C)`` or trace-contracted ``(n, n)`` Gram."""
    if block:
        flat = rows.flatten(0, 1)
        return (flat @ flat.T).view(*rows.shape[:2], *rows.shape[:2])
    return torch.einsum("icq,jcq->ij", rows, rows)


def _structured_gram(linear: list[_LinearFactor], rows: Tensor, block: bool) -> Tensor:
    """NTK from the factors of :func:`_ntk_factors` (all samples).

    A Linear weight's Jacobian for output c at x is ``g_c(x) a(x)ᵀ``, so its NTK entry is
    ``⟨g_c(x), g_c'(x')⟩ · ⟨a(x), a(x')⟩`` and a bias adds ``⟨g_c(x), g_c'(x')⟩``; conv rows
    are contracted directly (Novak et al., 2022, structured derivatives).
    """
    n, num_classes = rows.shape[:2]
    gram = _row_gram(rows, block)
    for g, a, bias in linear:
        cotangent = _row_gram(g, block)
        if a is not None:
            inner = a @ a.T
            gram = gram + cotangent * (inner[:, None, :, None] if block else inner)
        if bias:
            gram = gram + cotangent
    return gram.reshape(n * num_classes, n * num_classes) if block else gram


def ntk_gram(model: nn.Module, inputs: Tensor, *, block: bool = False,
             chunk_size: int | None = None, method: str = "auto") -> Tensor:
    """Empirical NTK Gram matrix, from structured layer factors or by Jacobian contraction.

    Trace-contracted (default) ``K_ij = ⟨∇_θ f(x_i), ∇_θ f(x_j)⟩_F = Σ_c ⟨∇_θ f_c(x_i),
    ∇_θ f_c(x_j)⟩``, shape ``(n, n)``; ``block=True`` gives ``J Jᵀ``, shape ``(nC, nC)`` with
    rows ``i·C + c``.

    ``method="structured"`` (Novak et al., 2022, "Fast Finite Width Neural Tangent Kernel",
    structured derivatives) never forms ``J``: for a Linear layer ``W`` the Jacobian of f_c
    at x is the outer product ``g_c(x) a(x)ᵀ`` of the back-propagated output cotangent and
    the layer input, so ``K_W((x,c),(x',c')) = ⟨g_c(x), g_c'(x')⟩·⟨a(x), a(x')⟩``, and a bias
    contributes ``⟨g_c(x), g_c'(x')⟩``. One forward and C vectorised backward passes per chunk
    give every g and a; the Gram costs (nC)²·Σ out + n²·Σ in flops instead of (nC)²·p.
    Conv2d weights contribute through their per-row Jacobians ``Σ_p g_c[:, p] U[:, p]ᵀ``
    (``U`` the unfolded input: p_conv numbers per row, no autograd per row). It needs every
    trainable parameter in an ``nn.Linear`` (on flat inputs) or ``nn.Conv2d`` (zero padding,
    ``groups=1``) called once per forward.

    ``method="contraction"``: Jacobians (:func:`parameter_jacobian`) then one GEMM,
    n²·C·p flops (block: n²·C²·p). With ``chunk_size=b`` only two chunks of Jacobians
    (2·b·C·p numbers) are held at a time and the ⌈n/b⌉(⌈n/b⌉+1)/2 off-diagonal tiles are
    recomputed from fresh Jacobians: memory for time. ``"auto"`` (default) is
    ``"structured"`` where it applies, else ``"contraction"``. For n·C·p too large to form at
    all, use :class:`NTKGram` with :func:`stabnb.spectra.lanczos`.

    Args:
        model: network in eval mode mapping ``(n, *input_shape)`` to logits ``(n, C)``.
        inputs: batch ``(n, *input_shape)``.
        block: the nC×nC block Gram instead of the n×n trace. Default: False.
        chunk_size: samples per forward/backward pass (structured: factors of all chunks are
            kept, ``n·C·(Σ out + p_conv) + n·Σ in`` numbers). Default: all at once.
        method: ``"auto"``, ``"structured"`` or ``"contraction"``. Default: ``"auto"``.

    Raises:
        ValueError: unknown ``method``; ``"structured"`` on a model it does not cover; model
            in train mode, non-finite weights or inputs, non-(n, C) outputs.

    Examples::

        >>> from stabnb.models import MLP
        >>> model = MLP(4, (6,), 3).double().eval()
        >>> x = torch.rand(5, 4, dtype=torch.float64)
        >>> J = parameter_jacobian(model, x)
        >>> torch.allclose(ntk_gram(model, x), torch.einsum('icp,jcp->ij', J, J))
        True
    """
    if method not in NTK_METHODS:
        raise ValueError(f"method={method!r} is unknown; choose one of {NTK_METHODS}.")
    inputs = _prepare(model, inputs)
    n = inputs.shape[0]
    parts = _chunks(n, chunk_size)
    if method != "contraction":
        layers = _structured_layers(model)
        factors = None if layers is None else [_ntk_factors(model, layers, inputs[part])
                                                for part in parts]
        if factors is not None and all(f is not None for f in factors):
            linear = [(torch.cat([f[0][k][0] for f in factors]),
                       None if a is None else torch.cat([f[0][k][1] for f in factors]), bias)
                      for k, (_, a, bias) in enumerate(factors[0][0])]
            return _structured_gram(linear, torch.cat([f[1] for f in factors]), block)
        if method == "structured":
            raise ValueError(
                "method='structured' needs every trainable parameter in an nn.Linear (flat "
                "inputs) or nn.Conv2d (zero padding, groups=1) called once per forward; this "
                "model has others. Use method='auto' or 'contraction'.")

    def contract(a: Tensor, b: Tensor) -> Tensor:
        if block:
            return a.reshape(-1, a.shape[-1]) @ b.reshape(-1, b.shape[-1]).T
        return a.reshape(a.shape[0], -1) @ b.reshape(b.shape[0], -1).T

    if len(parts) == 1:
        jac = parameter_jacobian(model, inputs)
        return contract(jac, jac)
    gram = None
    for ia, pa in enumerate(parts):
        jac_a = parameter_jacobian(model, inputs[pa])
        num_classes = jac_a.shape[1]
        scale = num_classes if block else 1
        if gram is None:
            gram = jac_a.new_zeros(n * scale, n * scale)
        rows = slice(pa.start * scale, pa.stop * scale)
        for pb in parts[ia:]:
            jac_b = jac_a if pb == pa else parameter_jacobian(model, inputs[pb])
            cols = slice(pb.start * scale, pb.stop * scale)
            tile = contract(jac_a, jac_b)
            gram[rows, cols] = tile
            gram[cols, rows] = tile.T
    return gram


# --------------------------------------------------------------------------- operators

class InputJacobian(LinearOperator):
    """``J_f(x) = ∂f(x)/∂x ∈ R^{C×d}`` of one input: ``@`` is a JVP, ``.T @`` a VJP.

    Args:
        model: network in eval mode mapping ``(1, *input_shape)`` to ``(1, C)``.
        x: one input ``input_shape`` (no batch dimension); vectors are flat, length d.
    """

    def __init__(self, model: nn.Module, x: Tensor):
        x = _prepare(model, x, "x", batched=False)
        self._f = _input_function(model)
        self._x = x
        out, self._pullback = vjp(self._single, x)
        if out.dim() != 1:
            raise ValueError(f"model must map one input to a logit vector (C,); got shape "
                             f"{tuple(out.shape)} for x of shape {tuple(x.shape)}.")
        super().__init__((out.shape[0], x.numel()), x.dtype, x.device)

    def _single(self, x: Tensor) -> Tensor:
        return self._f(x.unsqueeze(0)).squeeze(0)

    def _matmat(self, X: Tensor) -> Tensor:
        def push(t: Tensor) -> Tensor:
            return jvp(self._single, (self._x,), (t.reshape(self._x.shape),))[1]
        return vmap(push, in_dims=1, out_dims=1)(X)

    def _rmatmat(self, Y: Tensor) -> Tensor:
        def pull(u: Tensor) -> Tensor:
            return self._pullback(u)[0].reshape(-1)
        return vmap(pull, in_dims=1, out_dims=1)(Y)


class _BatchFunction:
    """``θ ↦ f(θ, X).reshape(-1)`` for a fixed batch, with its pullback at the current θ."""

    def __init__(self, model: nn.Module, inputs: Tensor):
        self.inputs = _prepare(model, inputs)
        self.params, self.f = functional(model)
        self.layout = _ParamLayout(self.params)
        out, self.pullback = vjp(self.flat_output, self.params)
        self.num_classes = _check_logits(out.view(self.inputs.shape[0], -1), self.inputs.shape[0])
        self.num_outputs = out.numel()

    def flat_output(self, params: dict[str, Tensor]) -> Tensor:
        return self.f(params, self.inputs).reshape(-1)

    def jvp_flat(self, t: Tensor) -> Tensor:
        return jvp(self.flat_output, (self.params,), (self.layout.unflatten(t),))[1]

    def vjp_flat(self, u: Tensor) -> Tensor:
        return self.layout.flatten(self.pullback(u)[0])


class ParamJacobian(LinearOperator):
    """``∇_θ f(X) ∈ R^{nC×p}`` of a batch (rows ``i·C + c``): ``@`` a JVP, ``.T @`` a VJP.

    Each product costs one forward-mode (or one reverse) pass over the batch.
    """

    def __init__(self, model: nn.Module, inputs: Tensor):
        self._fn = _BatchFunction(model, inputs)
        super().__init__((self._fn.num_outputs, self._fn.layout.numel), self._fn.inputs.dtype,
                         self._fn.inputs.device)

    def _matmat(self, X: Tensor) -> Tensor:
        return vmap(self._fn.jvp_flat, in_dims=1, out_dims=1)(X)

    def _rmatmat(self, Y: Tensor) -> Tensor:
        return vmap(self._fn.vjp_flat, in_dims=1, out_dims=1)(Y)


class NTKGram(LinearOperator):
    """Implicit empirical NTK: ``K v = J (Jᵀ v)`` without forming ``J = ∇_θ f(X)``.

    ``block=False``: the n×n trace-contracted ``K = Σ_c J_c J_cᵀ`` (C VJP+JVP pairs per
    product, vectorised); ``block=True``: the nC×nC ``J Jᵀ`` (one pair). Memory O(p + nC);
    use with :func:`stabnb.spectra.lanczos` when ``n·C·p`` is too large for :func:`ntk_gram`.
    """

    SELF_ADJOINT = True

    def __init__(self, model: nn.Module, inputs: Tensor, block: bool = False):
        self._fn = _BatchFunction(model, inputs)
        self.block = bool(block)
        n, num_classes = self._fn.inputs.shape[0], self._fn.num_classes
        size = n * num_classes if self.block else n
        super().__init__((size, size), self._fn.inputs.dtype, self._fn.inputs.device)

    def _gram(self, u: Tensor) -> Tensor:
        return self._fn.jvp_flat(self._fn.vjp_flat(u))

    def _matmat(self, X: Tensor) -> Tensor:
        if self.block:
            return vmap(self._gram, in_dims=1, out_dims=1)(X)
        n, num_classes = self.shape[0], self._fn.num_classes
        eye = torch.eye(num_classes, dtype=X.dtype, device=X.device)
        # cotangent for (column k, class c): X[:, k] placed in output column c.
        cot = X.T[:, None, :, None] * eye[None, :, None, :]           # (k, C, n, C)
        out = vmap(self._gram)(cot.reshape(-1, n * num_classes))
        out = out.reshape(X.shape[1], num_classes, n, num_classes)
        return torch.diagonal(out, dim1=1, dim2=3).sum(-1).T           # (n, k)


def _loss_value(loss: str, logits: Tensor, targets: Tensor) -> Tensor:
    """Mean loss: cross-entropy, or MSE ``(1/2n) Σ_i ‖f(x_i) − y_i‖²`` (so GGN = JᵀJ/n)."""
    if loss == "cross_entropy":
        return F.cross_entropy(logits, targets)
    return 0.5 * (logits - targets).pow(2).sum(-1).mean()


def _prepare_targets(loss: str, targets: Tensor, n: int, num_classes: int,
                     dtype: torch.dtype, device: torch.device) -> Tensor:
    if loss not in LOSSES:
        raise ValueError(f"loss={loss!r} is unknown; choose one of {LOSSES}.")
    if not isinstance(targets, Tensor):
        raise TypeError(f"targets must be a torch.Tensor, got {type(targets).__name__}.")
    targets = targets.to(device)
    labels = not targets.is_floating_point()
    if labels:
        targets = targets.long()           # int32/uint8 labels work like int64 ones
        if targets.shape != (n,):
            raise ValueError(f"integer targets must be labels of shape ({n},); got "
                             f"{tuple(targets.shape)}.")
        if bool((targets < 0).any()) or bool((targets >= num_classes).any()):
            raise ValueError(f"labels must lie in [0, {num_classes}); got range "
                             f"[{int(targets.min())}, {int(targets.max())}].")
        return targets if loss == "cross_entropy" else F.one_hot(targets, num_classes).to(dtype)
    if loss == "cross_entropy":
        raise ValueError("cross_entropy needs integer class labels of shape (n,); got floating "
                         "targets. Pass labels, or use loss='mse' for regression targets.")
    if targets.shape != (n, num_classes):
        raise ValueError(f"MSE targets must have shape ({n}, {num_classes}) like the logits; "
                         f"got {tuple(targets.shape)}.")
    targets = targets.to(dtype)
    check_finite(targets, "targets")
    return targets


class _BatchGradient:
    """First-order graph of one batch's mean loss, kept to differentiate again (HVPs)."""

    def __init__(self, model: nn.Module, inputs: Tensor, targets: Tensor, loss: str):
        inputs = _prepare(model, inputs)
        params, f = functional(model)
        self.params = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        self.layout = _ParamLayout(self.params)
        n = inputs.shape[0]
        with torch.enable_grad():
            logits = f(self.params, inputs)
            num_classes = _check_logits(logits, n)
            targets = _prepare_targets(loss, targets, n, num_classes, logits.dtype,
                                       logits.device)
            value = _loss_value(loss, logits, targets)
            grads = torch.autograd.grad(value, list(self.params.values()), create_graph=True,
                                        materialize_grads=True)
        self.n = n
        self.loss = value.detach()
        self.grad = self.layout.flatten(grads).detach()
        self._live = [i for i, g in enumerate(grads) if g.requires_grad]
        self._grads = [grads[i] for i in self._live]

    def hvp(self, v: Tensor) -> Tensor:
        """``H v``: one backward through the stored gradient graph (``retain_graph``)."""
        if not self._grads:          # loss linear in θ: zero Hessian
            return torch.zeros_like(v)
        parts = self.layout.unflatten(v)
        cotangents = [parts[self.layout.names[i]] for i in self._live]
        hv = torch.autograd.grad(self._grads, list(self.params.values()), grad_outputs=cotangents,
                                 retain_graph=True, materialize_grads=True)
        return self.layout.flatten(hv)


class LossHessian(LinearOperator):
    """Hessian ``H = ∇²_θ L(θ)`` of one batch's mean loss, by Hessian-vector products.

    Cross-entropy ``L = (1/n) Σ_i CE(f(x_i), y_i)``, or MSE ``L = (1/2n) Σ_i ‖f(x_i) − y_i‖²``
    (integer labels are one-hot encoded), whose Gauss–Newton part is ``JᵀJ/n``. The gradient is
    built once with ``create_graph=True``; each product is then one backward pass through that
    graph (about the cost of a forward+backward), cheaper than torch.func forward-over-reverse.
    Nothing is written to ``.grad``.

    Args:
        model: network in eval mode.
        inputs: batch ``(n, *input_shape)``.
        targets: labels ``(n,)`` (int64), or float ``(n, C)`` regression targets for MSE.
        loss: ``"cross_entropy"`` or ``"mse"``. Default: ``"cross_entropy"``.
    """

    SELF_ADJOINT = True

    def __init__(self, model: nn.Module, inputs: Tensor, targets: Tensor,
                 loss: str = "cross_entropy"):
        self._batch = _BatchGradient(model, inputs, targets, loss)
        self.loss = loss
        vector = self._batch.grad
        super().__init__((vector.numel(), vector.numel()), vector.dtype, vector.device)

    def _matmat(self, X: Tensor) -> Tensor:
        return torch.stack([self._batch.hvp(X[:, k]) for k in range(X.shape[1])], dim=1)


class LoaderLossHessian(LinearOperator):
    """Hessian of the mean loss over a data loader, ``H = Σ_b (n_b/N) H_b``.

    Each product runs over every batch (forward, gradient with ``create_graph``, one HVP
    backward per column), so no graph outlives a batch: memory is one batch's.

    Args:
        model: network in eval mode.
        loader: re-iterable source of ``(inputs, targets)`` batches (a ``DataLoader`` or a
            list); one-shot iterators are refused.
        loss: ``"cross_entropy"`` or ``"mse"``. Default: ``"cross_entropy"``.
    """

    SELF_ADJOINT = True

    def __init__(self, model: nn.Module, loader: Iterable, loss: str = "cross_entropy"):
        if iter(loader) is loader:
            raise ValueError("loader is a one-shot iterator; pass a list of (inputs, targets) "
                             "batches or a DataLoader, which can be iterated per product.")
        if loss not in LOSSES:
            raise ValueError(f"loss={loss!r} is unknown; choose one of {LOSSES}.")
        require_eval_mode(model)
        params, _ = functional(model)
        self._model, self._loader, self.loss = model, loader, loss
        numel = _ParamLayout(params).numel
        dtype, device = _model_dtype_device(model, next(iter(params.values())))
        super().__init__((numel, numel), dtype, device)

    def _matmat(self, X: Tensor) -> Tensor:
        total, count = torch.zeros_like(X), 0
        for batch in self._loader:
            inputs, targets = batch[0], batch[1]
            grad = _BatchGradient(self._model, inputs, targets, self.loss)
            hv = torch.stack([grad.hvp(X[:, k]) for k in range(X.shape[1])], dim=1)
            total += grad.n * hv
            count += grad.n
        if count == 0:
            raise ValueError("loader yielded no batches; the mean Hessian is undefined.")
        return total / count
