"""The empirical NTK: exact Gram matrices (structured or by contraction) and :class:`NTKGram`.

Trace-contracted ``K_ij = ⟨∇_θ f(x_i), ∇_θ f(x_j)⟩_F`` (n×n), or the nC×nC block ``J Jᵀ``;
which NTK is ours follows ``docs/reconstruction.md``, section 2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import vmap

from ..checks import check_finite
from ._common import _NONFINITE_MODEL, _check_logits, _chunks, _prepare
from .base import LinearOperator
from .jacobian import _BatchFunction, parameter_jacobian

__all__ = ["NTKGram", "ntk_gram", "NTK_METHODS"]

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
