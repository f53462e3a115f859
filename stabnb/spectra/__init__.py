"""Spectral algorithms on any operator or dense tensor: top-k, trace, density, full spectrum.

Every function takes ``A``, a :class:`stabnb.operators.LinearOperator` or a dense 2-D tensor
(anything with ``shape``, ``dtype``, ``device``, ``@`` and ``.T``), and knows nothing of
models. Costs are counted in matrix-vector products (``num_matvecs``). Random probes come
from ``generator`` (any device; draws are moved to ``A``'s), or, when it is ``None``, from a
fresh generator seeded with ``seed``: one seed, one output. Estimates carry their error
(Ritz residuals, standard errors); not converging is a result (``converged=False``), while a
non-finite product stops the iteration with ``FloatingPointError``.

Modules: :mod:`~stabnb.spectra.krylov` (Lanczos, power iteration, top singular values),
:mod:`~stabnb.spectra.trace` (trace estimators), :mod:`~stabnb.spectra.density` (SLQ density,
full spectrum); every name is re-exported here.
"""

from ._common import DISTRIBUTIONS, Operator
from .density import SpectralDensity, full_spectrum, slq_density
from .krylov import (
    LanczosResult,
    PowerIterationResult,
    lanczos,
    power_iteration,
    top_singular_values,
)
from .trace import (
    TRACE_METHODS,
    TraceEstimate,
    control_variate_trace,
    estimate_trace,
    hutchinson_trace,
    hutchpp_trace,
)

__all__ = [
    "LanczosResult", "PowerIterationResult", "TraceEstimate", "SpectralDensity",
    "power_iteration", "lanczos", "top_singular_values", "hutchinson_trace", "hutchpp_trace",
    "slq_density", "full_spectrum", "control_variate_trace", "estimate_trace", "TRACE_METHODS",
    "Operator", "DISTRIBUTIONS",
]
