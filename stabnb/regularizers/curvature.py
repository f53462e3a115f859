"""The input-curvature penalty of the target logit (R5's β), our extension (d) of
``docs/reconstruction.md``, "Regularisers"."""

from __future__ import annotations


import torch
from torch import nn

from ._base import (_batchnorm_stats_kept, _check_count, _has_train_batchnorm, _shared_logits,
                    _SlotVectorPenalty, _unit, check_clip, check_sigma, noisy_copy)

CURVATURE_FORMS = ("finite_difference", "hessian")
CURVATURE_TARGETS = ("prediction", "label")
"""Whose logit's curvature is penalised: the predicted class (what the stability probe
attributes) or the training label."""


class InputCurvaturePenalty(_SlotVectorPenalty):
    """Penalise the input curvature of the target logit f_c (R5's β); c is the predicted class
    (default, the class the stability probe attributes) or the training label.

    R5 bounds the saliency change ``‖∇_x f_c(x+δ) − ∇_x f_c(x)‖`` by β‖δ‖, β the Lipschitz
    constant of ``x ↦ ∇_x f_c(x)``, i.e. ``sup ‖∇²_x f_c‖₂``; a penalty on ``‖J_f‖`` does not
    control it. Two forms:

    - ``form='finite_difference'`` (default): ``λ · mean_x ‖∇_x f_c(x+δ) − ∇_x f_c(x)‖²`` with
      ``δ ~ N(0, σ² I)`` drawn from the seeded generator and ``x+δ`` clipped to ``clip`` (the
      pixel range, as the stability probe clips). For smooth activations and small σ its
      expectation is ``σ² ‖∇²_x f_c(x)‖_F²`` (``E‖Hδ‖² = σ² ‖H‖_F²``, before clipping). For ReLU
      networks it is the only form that sees anything: it measures the gate flips between x and
      x+δ. This is the evaluation's own perturbation family (Gaussian, σ = 0.05): the studies
      judge it on held-out families (``docs/reconstruction.md``, "Held-out perturbations"). Cost: one forward and one ``create_graph`` backward pass on 2n inputs
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
        sigma: σ of δ in pixel units (finite-difference form). Default: 0.05, the training
            family of the attribution-stability probe (its held-out families differ).
        target: ``'prediction'`` (the class predicted at x, as the probe attributes) or
            ``'label'`` (the training label). Default: ``'prediction'``.
        clip: ``(low, high)`` range that ``x+δ`` is clipped to, or None for no clipping.
            Default: ``(0.0, 1.0)``, the pixel range the probe clips to.
        num_iters: Hessian power iterations per call (Hessian form). Default: 1.
        seed: seed of the generator drawing δ or start vectors. Default: 0.
    """

    _SETTINGS = ("strength", "form", "sigma", "target", "clip", "num_iters", "seed")
    shares_forward = True

    def __init__(self, strength: float, form: str = "finite_difference", *, sigma: float = 0.05,
                 target: str = "prediction", clip: tuple[float, float] | None = (0.0, 1.0),
                 num_iters: int = 1, seed: int = 0):
        super().__init__(strength, seed)
        if form not in CURVATURE_FORMS:
            raise ValueError(f"form={form!r} is unknown; choose one of {CURVATURE_FORMS}.")
        if target not in CURVATURE_TARGETS:
            raise ValueError(f"target={target!r} is unknown; choose one of {CURVATURE_TARGETS}.")
        self.form = form
        self.sigma = check_sigma(sigma)
        self.target = target
        self.clip = check_clip(clip)
        self.num_iters = _check_count("num_iters", num_iters)

    def _classes(self, model: nn.Module, x: torch.Tensor, labels: torch.Tensor,
                 logits: torch.Tensor | None) -> torch.Tensor:
        if self.target == "label":
            return labels
        if logits is None:
            with torch.no_grad(), _batchnorm_stats_kept(model):
                logits = model(x.detach())
        return logits.detach().argmax(1)

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
        classes = self._classes(model, inputs, targets, logits)
        if self.form == "finite_difference":
            return self._finite_difference(model, inputs, classes, logits)
        return self._hessian(model, inputs, classes, logits)

    def _finite_difference(self, model: nn.Module, inputs: torch.Tensor,
                           targets: torch.Tensor, logits: torch.Tensor | None) -> torch.Tensor:
        x = inputs.detach()
        # δ' = clip(x + δ) − x: the perturbation actually applied, a constant of the graph.
        delta = noisy_copy(x, self.sigma, self._generator_on(x.device), self.clip) - x
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
