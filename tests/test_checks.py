import pytest
import torch
from torch import nn

from stabnb.checks import (
    check_finite,
    check_model_finite,
    require_eval_mode,
    resolve_device,
)
from stabnb.models import ResNet20


def test_non_finite_values_are_counted_and_named():
    check_finite(torch.ones(3), "x")
    with pytest.raises(ValueError, match="inputs contains 2 non-finite value"):
        check_finite(torch.tensor([1.0, float("nan"), float("inf")]), "inputs")
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="model parameter 'weight'"):
        check_model_finite(model)


def test_train_mode_with_batchnorm_or_dropout_is_refused():
    model = ResNet20(10)
    with pytest.raises(ValueError, match=r"call model.eval\(\) first"):
        require_eval_mode(model)
    require_eval_mode(model.eval())
    require_eval_mode(nn.Sequential(nn.Linear(2, 2)).train())  # nothing mode-dependent
    with pytest.raises(ValueError, match="train mode"):
        require_eval_mode(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.1)))


def test_devices_resolve_or_explain():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    assert resolve_device(None) == resolve_device("auto")
    with pytest.raises(ValueError, match="not a device name"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
