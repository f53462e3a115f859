"""stabnb: matrix-spectral stability and attribution diagnostics for deep networks.

Companion to Katende (2026), *A Unified Matrix-Spectral Framework for Stability and
Interpretability in Deep Learning*, arXiv:2602.01136. Definitions the paper does not
pin down are our reconstruction and are marked as such where they appear.
"""

from .checks import check_finite, check_model_finite, require_eval_mode, resolve_device
from .models import MLP, ResNet20, SmallCNN, build_model, functional, num_parameters

__version__ = "0.1.0"

__all__ = [
    "check_finite", "check_model_finite", "require_eval_mode", "resolve_device",
    "MLP", "ResNet20", "SmallCNN", "build_model", "functional", "num_parameters",
]
