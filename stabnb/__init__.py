"""stabnb: matrix-spectral stability and attribution diagnostics for deep networks.

Companion to Katende (2026), *A Unified Matrix-Spectral Framework for Stability and
Interpretability in Deep Learning*, arXiv:2602.01136. Definitions the paper does not pin down
are our reconstruction (``docs/reconstruction.md``) and are marked as such where they appear.

Layout, in three layers that import one way (each only from the layers above it):

1. The stability library: ``data``, ``models``, ``train``, ``operators`` (the four operators),
   ``spectra`` (Lanczos, traces, densities), ``summaries`` (entropy, effective and stable rank),
   ``gmsi``, ``attribution`` (Captum probes), ``regularizers``, ``entropy_link``, ``stats``,
   with ``checks``, ``io``, ``rng`` and ``progress`` beneath them.
2. The theory checks, ``stabnb.theory`` (R1–R8), and the studies, ``study``, ``effects``,
   ``claims``.
3. The reproduction machinery: ``notebook`` (what a notebook's cells share), ``plotting`` and
   ``stabnb.reproduce`` (the reproduce command).

Randomness rule (:mod:`stabnb.rng`): every function that draws takes ``generator`` and
``seed``; ``generator=None`` means a fresh generator seeded with ``seed``; nothing reads or
reseeds torch's global stream. Same command, same numbers.

The main verbs are re-exported here (not those named like their module, ``stabnb.gmsi.gmsi``
and ``stabnb.train.train``, which would hide the module); each module documents the rest.
"""

import warnings

# torch loads its forward-AD decompositions with the deprecated torch.jit.script the first time
# a JVP runs; the FutureWarning is torch's own business and would land in every notebook.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated",
                        category=FutureWarning)

from .attribution import AttributionStability, attribution_method  # noqa: E402
from .checks import check_finite, check_model_finite, require_eval_mode, resolve_device  # noqa: E402
from .data import DataSourceError, load_dataset  # noqa: E402
from .entropy_link import envelope, per_sample_table, rank_correlation  # noqa: E402
from .gmsi import GMSIResult  # noqa: E402
from .models import MLP, ResNet20, SmallCNN, build_model, functional, num_parameters  # noqa: E402
from .operators import (  # noqa: E402
                        InputJacobian,
                        LoaderLossHessian,
                        LossHessian,
                        NTKGram,
                        ParamJacobian,
                        input_jacobian_singular_values,
                        ntk_gram,
)
from .regularizers import make_regularizer  # noqa: E402
from .spectra import (  # noqa: E402
                        control_variate_trace,
                        estimate_trace,
                        full_spectrum,
                        hutchinson_trace,
                        hutchpp_trace,
                        lanczos,
                        slq_density,
                        top_singular_values,
)
from .study import StudyConfig, load_study, run_study  # noqa: E402
from .summaries import (  # noqa: E402
                        effective_rank,
                        spectral_entropy,
                        stable_rank,
                        summarize_spectrum,
)
from .train import TrainConfig  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "AttributionStability", "attribution_method",
    "check_finite", "check_model_finite", "require_eval_mode", "resolve_device",
    "DataSourceError", "load_dataset",
    "envelope", "per_sample_table", "rank_correlation",
    "GMSIResult",
    "MLP", "ResNet20", "SmallCNN", "build_model", "functional", "num_parameters",
    "InputJacobian", "LoaderLossHessian", "LossHessian", "NTKGram", "ParamJacobian",
    "input_jacobian_singular_values", "ntk_gram",
    "make_regularizer",
    "control_variate_trace", "estimate_trace", "full_spectrum", "hutchinson_trace",
    "hutchpp_trace", "lanczos", "slq_density", "top_singular_values",
    "StudyConfig", "load_study", "run_study",
    "effective_rank", "spectral_entropy", "stable_rank", "summarize_spectrum",
    "TrainConfig",
]
