import pytest
import torch

from stabnb.models import (
    ACTIVATIONS,
    MLP,
    Normalize,
    build_model,
    functional,
    num_parameters,
)


@pytest.mark.parametrize("name,shape", [("mlp", (1, 28, 28)), ("cnn", (1, 28, 28)),
                                        ("cnn", (3, 32, 32)), ("resnet", (3, 32, 32)),
                                        ("resnet_fast", (3, 32, 32)),
                                        ("resnet_fast", (1, 28, 28))])
def test_models_map_pixel_images_to_logits(name, shape):
    model = build_model(name, shape, 10).eval()
    assert model(torch.rand(2, *shape)).shape == (2, 10)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_every_activation_builds(activation):
    model = MLP(4, (6,), 3, activation=activation)
    assert model(torch.rand(5, 4)).shape == (5, 3)


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="activation='swish' is unknown"):
        MLP(4, (6,), 3, activation="swish")
    with pytest.raises(ValueError, match="model='vit' is unknown"):
        build_model("vit", (1, 28, 28), 10)
    with pytest.raises(ValueError, match="needs image inputs"):
        build_model("cnn", (784,), 10)


def test_normalize_layer_uses_recorded_statistics():
    layer = Normalize((0.5, 0.25, 0.0), (0.5, 0.25, 1.0))
    x = torch.rand(2, 3, 4, 4)
    expected = (x - torch.tensor([0.5, 0.25, 0.0]).view(1, 3, 1, 1)) / torch.tensor([0.5, 0.25, 1.0]).view(1, 3, 1, 1)
    assert torch.allclose(layer(x), expected)


def test_functional_view_matches_model_and_counts_parameters():
    model = build_model("cnn", (1, 28, 28), 10, mean=(0.1307,), std=(0.3081,)).eval()
    params, f = functional(model)
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(f(params, x), model(x))
    assert all(not p.requires_grad for p in params.values())
    assert num_parameters(model) == sum(p.numel() for p in params.values())
    frozen = MLP(4, (6,), 3).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        functional(frozen)


def test_smooth_activations_swaps_every_relu_and_keeps_the_weights():
    from stabnb.models import build_model, initialize, smooth_activations
    model = initialize(build_model("cnn", (1, 8, 8), 3), torch.Generator().manual_seed(0))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    smooth_activations(model, 0.25)
    softplus = [m for m in model.modules() if isinstance(m, torch.nn.Softplus)]
    assert softplus and all(m.beta == 4.0 for m in softplus)
    assert not any(isinstance(m, torch.nn.ReLU) for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    z = torch.tensor([-1.0, 0.0, 2.0])
    torch.testing.assert_close(softplus[0](z), torch.log1p(torch.exp(4.0 * z)) / 4.0)
    with pytest.raises(ValueError, match="no nn.ReLU"):
        smooth_activations(build_model("mlp", (4,), 2, activation="tanh"), 0.1)
    with pytest.raises(ValueError, match="temperature=0"):
        smooth_activations(model, 0)


def test_fast_resnet_has_airbench_layout_and_fixed_norm_scales():
    model = build_model("resnet_fast", (3, 32, 32), 10, widths=(8, 16, 16), stem=6)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (3, 6, (2, 2)), (6, 8, (3, 3)), (8, 8, (3, 3)), (8, 16, (3, 3)), (16, 16, (3, 3)),
        (16, 16, (3, 3)), (16, 16, (3, 3))]
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 7 and not any(n.weight.requires_grad for n in norms)
    assert all(n.bias.requires_grad for n in norms)
    head = model.head[-1]
    assert head.bias is None and head.out_features == 10
    x = torch.rand(3, 3, 32, 32)
    model.eval()
    features = model.head[:-1](model.groups(model.stem(model.normalize(x))))
    assert torch.allclose(model(x), head(features) / 9)       # airbench's logit scale
    with pytest.raises(ValueError, match="three groups"):
        build_model("resnet_fast", (3, 32, 32), 10, widths=(8, 16))
