"""Numerical checks of the reconstructed results R1–R8 (``docs/reconstruction.md``).

Every statement checked here is **our reconstruction**, not a quotation of Katende (2026), whose
exact theorems are not available offline. One module per group of results:

- :mod:`~stabnb.theory.product` — R1 (weight–gate product) and R2's layer-wise bound;
- :mod:`~stabnb.theory.sensitivity` — R2 (forward), R3 (entropy-refined typical), R4 (parameter);
- :mod:`~stabnb.theory.attribution_bounds` — R5 (saliency) and R6 (Integrated Gradients);
- :mod:`~stabnb.theory.kernels` — R7 (label noise through the NTK) and R8 (training dynamics);
- :mod:`~stabnb.theory.concentration` — E1's matrices and networks of controlled spectral concentration;
- :mod:`~stabnb.theory.families` — random network families and the per-sample results of every check.

The theory layer uses the stability library (operators, spectra, summaries) and is used by the
notebooks; nothing in the library imports it.
"""

from .attribution_bounds import (
    CompletenessCheck,
    IntegratedGradientsCheck,
    SaliencyCheck,
    check_ig_completeness,
    check_integrated_gradients,
    check_saliency,
)
from .families import (
    FamilyCheck,
    PerSampleResult,
    RandomNetwork,
    check_family,
    random_networks,
)
from .product import (
    Factor,
    ProductCheck,
    ProductRepresentation,
    check_product_representation,
    layerwise_bound,
    weight_gate_product,
)
from .sensitivity import (
    ForwardSensitivityCheck,
    GMSIForwardCheck,
    ParameterSensitivityCheck,
    TypicalSensitivityCheck,
    check_forward_sensitivity,
    check_gmsi_forward_bound,
    check_parameter_sensitivity,
    check_typical_sensitivity,
)

__all__ = [
    "CompletenessCheck", "IntegratedGradientsCheck", "SaliencyCheck", "check_ig_completeness",
    "check_integrated_gradients", "check_saliency",
    "FamilyCheck", "PerSampleResult", "RandomNetwork", "check_family", "random_networks",
    "Factor", "ProductCheck", "ProductRepresentation", "check_product_representation",
    "layerwise_bound", "weight_gate_product",
    "ForwardSensitivityCheck", "GMSIForwardCheck", "ParameterSensitivityCheck",
    "TypicalSensitivityCheck", "check_forward_sensitivity", "check_gmsi_forward_bound",
    "check_parameter_sensitivity", "check_typical_sensitivity",
]
