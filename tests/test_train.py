from dataclasses import replace
from pathlib import Path

import pytest
import torch

from stabnb import train as train_module
from stabnb.data import gaussian_mixture, load_dataset
from stabnb.models import MLP, build_model
from stabnb.presets import regularisation_config
from stabnb.train import (
    TRANSLATE_PIXELS,
    TrainConfig,
    augment_batch,
    evaluate_accuracy,
    lr_factor,
    train,
)


def _toy(seed=0):
    x, y = gaussian_mixture(256, 8, 3, generator=torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)
    return MLP(8, (16,), 3), x, y


def test_short_mnist_run_beats_chance_clearly(offline_root):
    train_data = load_dataset("mnist", "train", offline_root=offline_root).subset(6000)
    test_data = load_dataset("mnist", "test", offline_root=offline_root).subset(1000)
    torch.manual_seed(0)
    model = build_model("mlp", train_data.input_shape, 10, mean=train_data.mean, std=train_data.std,
                        widths=(128,))
    result = train(model, train_data.pixels(), train_data.labels,
                   TrainConfig(epochs=1, batch_size=64, lr=0.05, device="cpu", progress=False),
                   eval_x=test_data.pixels(), eval_y=test_data.labels)
    assert result.eval_accuracy > 0.85
    assert not model.training


def test_same_seed_gives_same_weights():
    cfg = TrainConfig(epochs=2, batch_size=32, device="cpu", progress=False)
    weights = []
    for _ in range(2):
        model, x, y = _toy()
        train(model, x, y, cfg)
        weights.append(torch.cat([p.flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1])
    model, x, y = _toy()
    train(model, x, y, TrainConfig(epochs=2, batch_size=32, device="cpu", progress=False, seed=1))
    assert not torch.equal(weights[0], torch.cat([p.flatten() for p in model.parameters()]))


class _Penalty:
    """λ‖θ‖² with a call counter as carried state; fails on a chosen call to simulate a crash."""

    def __init__(self, strength, fail_at=None):
        self.strength, self.fail_at, self.calls = strength, fail_at, 0

    def __call__(self, model, inputs, targets):
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt
        return self.strength * sum((p ** 2).sum() for p in model.parameters())

    def state_dict(self):
        return {"calls": self.calls}

    def load_state_dict(self, state):
        self.calls = state["calls"]

    def __repr__(self):
        return f"_Penalty({self.strength})"


def test_regulariser_enters_the_loss():
    model, x, y = _toy()
    result = train(model, x, y, TrainConfig(epochs=1, batch_size=64, device="cpu", progress=False),
                   regularizer=_Penalty(1e-3))
    assert result.history[0]["penalty"] > 0


def test_interrupted_run_resumes_to_the_same_weights(tmp_path):
    cfg = TrainConfig(epochs=3, batch_size=64, device="cpu", progress=False, checkpoint_dir=str(tmp_path))
    model, x, y = _toy()
    reference = train(model, x, y, TrainConfig(epochs=3, batch_size=64, device="cpu", progress=False),
                      regularizer=_Penalty(1e-3))
    expected = torch.cat([p.flatten() for p in model.parameters()])

    model, x, y = _toy()
    with pytest.raises(KeyboardInterrupt):  # 4 steps an epoch: dies in epoch 2
        train(model, x, y, cfg, regularizer=_Penalty(1e-3, fail_at=6))
    assert len(list(tmp_path.glob("*.pt"))) == 1 and not list(tmp_path.glob(".*tmp"))
    model, x, y = _toy()
    penalty = _Penalty(1e-3)
    resumed = train(model, x, y, cfg, regularizer=penalty)
    assert resumed.resumed_from_epoch == 1 and penalty.calls == 12
    assert torch.allclose(torch.cat([p.flatten() for p in model.parameters()]), expected)
    assert [h["loss"] for h in resumed.history] == pytest.approx([h["loss"] for h in reference.history])

    model, x, y = _toy()
    finished = train(model, x, y, cfg, regularizer=_Penalty(1e-3))
    assert finished.resumed_from_epoch == 3 and finished.key == resumed.key


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="optimizer='lbfgs' is unknown"):
        TrainConfig(optimizer="lbfgs")
    with pytest.raises(ValueError, match="epochs=0"):
        TrainConfig(epochs=0)
    model, x, y = _toy()
    with pytest.raises(ValueError, match="device='gpu0' is not a device name"):
        train(model, x, y, TrainConfig(device="gpu0"))
    x[3, 2] = float("nan")
    with pytest.raises(ValueError, match="train_x contains 1 non-finite"):
        train(model, x, y, TrainConfig(device="cpu"))


def test_diverging_loss_is_reported():
    model, x, y = _toy()
    with pytest.raises(ValueError, match="non-finite loss at epoch 1"):
        train(model, x * 1e30, y, TrainConfig(epochs=1, lr=1e6, device="cpu", progress=False))


def test_evaluate_accuracy_counts_correct_predictions():
    model, x, y = _toy()
    logits_argmax = model.eval()(x).argmax(1)
    assert evaluate_accuracy(model, x, logits_argmax) == 1.0


def test_batchnorm_model_trains_and_checkpoints(tmp_path):
    """ResNet-20 holds 0-dim BatchNorm counters; the checkpoint key must hash them too."""
    torch.manual_seed(0)
    model = build_model("resnet", (3, 8, 8), 3, width=4)
    x, y = torch.rand(16, 3, 8, 8), torch.randint(0, 3, (16,))
    cfg = TrainConfig(epochs=1, batch_size=8, device="cpu", progress=False,
                      checkpoint_dir=str(tmp_path))
    first = train(model, x, y, cfg)
    assert first.checkpoint is not None and Path(first.checkpoint).exists()
    torch.manual_seed(0)
    again = train(build_model("resnet", (3, 8, 8), 3, width=4), x, y, cfg)
    assert again.key == first.key and again.resumed_from_epoch == 1


def test_shared_forward_regularizer_trains_like_the_plain_call():
    from stabnb.regularizers import JacobianSpectralPenalty

    cfg = TrainConfig(epochs=2, batch_size=32, device="cpu", progress=False)
    weights, penalties = [], []
    for wrap in (False, True):
        model, x, y = _toy()
        reg = JacobianSpectralPenalty(1e-2)
        hook = (lambda m, xb, yb: reg(m, xb, yb)) if wrap else reg   # a plain callable: own pass
        result = train(model, x, y, cfg, regularizer=hook)
        weights.append(torch.cat([p.flatten() for p in model.parameters()]))
        penalties.append(result.history[-1]["penalty"])
    torch.testing.assert_close(weights[0], weights[1], rtol=1e-5, atol=1e-6)
    assert penalties[0] > 0 and abs(penalties[0] - penalties[1]) < 1e-5 * penalties[1]


def _images(n=64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 2, 7, 6, generator=generator), torch.randint(0, 3, (n,), generator=generator)


def _candidates(image, flip):
    """Every shift (and, with ``flip``, its mirror) of ``image`` the augmentation may return."""
    r = TRANSLATE_PIXELS
    padded = torch.nn.functional.pad(image[None], (r,) * 4, mode="reflect")[0]
    height, width = image.shape[1:]
    shifted = [padded[:, dy:dy + height, dx:dx + width]
               for dy in range(2 * r + 1) for dx in range(2 * r + 1)]
    return shifted + [s.flip(-1) for s in shifted] if flip else shifted


@pytest.mark.parametrize("kind", ["translate", "flip_translate"])
def test_augmentation_shifts_and_flips_each_image_reproducibly(kind):
    x, _ = _images(200)
    first = augment_batch(x, kind, torch.Generator().manual_seed(1))
    assert first.shape == x.shape and first.dtype == x.dtype
    assert torch.equal(first, augment_batch(x, kind, torch.Generator().manual_seed(1)))
    assert not torch.equal(first, augment_batch(x, kind, torch.Generator().manual_seed(2)))
    chosen = []
    for image, out in zip(x, first):
        matches = [i for i, c in enumerate(_candidates(image, kind == "flip_translate"))
                   if torch.equal(c, out)]
        assert matches, "an augmented image is no shift (or mirrored shift) of its input"
        chosen.append(matches[0])
    assert len(set(chosen)) >= (40 if kind == "flip_translate" else 20)   # of 50 / 25
    assert augment_batch(x, "none", torch.Generator()) is x


def test_flip_reverses_columns_exactly():
    x = torch.arange(2 * 5 * 4, dtype=torch.float32).reshape(2, 1, 5, 4)
    generator = torch.Generator().manual_seed(0)
    out = augment_batch(x, "flip_translate", generator)
    assert out.shape == x.shape
    for image, result in zip(x, out):   # rows and columns stay whole: a shift then maybe a flip
        assert any(torch.equal(c, result) for c in _candidates(image, True))


def test_augmentation_refuses_flat_inputs_and_unknown_kinds():
    with pytest.raises(ValueError, match="use augment='none' for flat inputs"):
        augment_batch(torch.rand(4, 10), "translate", torch.Generator())
    with pytest.raises(ValueError, match="augment='mixup' is unknown"):
        TrainConfig(augment="mixup")


def test_schedules_take_their_documented_values():
    assert [lr_factor("triangle", s, 100) for s in (0, 10, 20, 60, 100)] == pytest.approx(
        [0.2, 0.6, 1.0, 0.5, 0.0])
    assert [lr_factor("cosine", s, 4) for s in (0, 2, 4)] == pytest.approx([1.0, 0.5, 0.0])
    assert lr_factor("constant", 7, 10) == 1.0
    with pytest.raises(ValueError, match="schedule='step'"):
        lr_factor("step", 0, 10)


def test_label_smoothing_enters_the_loss():
    """With lr → 0 the weights stay put, so the epoch's mean loss is the smoothed
    cross-entropy of the initial model on all samples."""
    model, x, y = _toy()
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(model(x), y, label_smoothing=0.3)
    result = train(model, x, y, TrainConfig(epochs=1, batch_size=64, lr=1e-30, weight_decay=0,
                                            label_smoothing=0.3, device="cpu", progress=False))
    assert result.history[0]["loss"] == pytest.approx(float(expected), rel=1e-5)
    with pytest.raises(ValueError, match="label_smoothing=1"):
        TrainConfig(label_smoothing=1)


def test_augmented_run_is_reproducible_and_resumes(tmp_path):
    x, y = _images(48)

    def run(cfg, fail_at=None):
        torch.manual_seed(0)
        model = build_model("cnn", (2, 7, 6), 3, channels=(4,), hidden=8)
        result = train(model, x, y, cfg, regularizer=_Penalty(1e-4, fail_at=fail_at))
        return torch.cat([p.flatten() for p in model.parameters()]), result

    cfg = TrainConfig(epochs=2, batch_size=16, device="cpu", progress=False, augment="flip_translate",
                      schedule="triangle", label_smoothing=0.1)
    reference, _ = run(cfg)
    assert torch.equal(reference, run(cfg)[0])
    assert not torch.equal(reference, run(TrainConfig(**{**cfg.to_dict(), "augment": "none"}))[0])
    saving = TrainConfig(**{**cfg.to_dict(), "checkpoint_dir": str(tmp_path)})
    with pytest.raises(KeyboardInterrupt):      # 3 steps an epoch: dies in epoch 2
        run(saving, fail_at=5)
    resumed, result = run(saving)
    assert result.resumed_from_epoch == 1 and torch.allclose(resumed, reference)


def test_non_finite_loss_names_its_step_without_checking_every_step(monkeypatch):
    class NaNAfter(_Penalty):
        def __call__(self, model, inputs, targets):
            self.calls += 1
            return torch.tensor(float("nan") if self.calls >= 3 else 0.0)

    monkeypatch.setattr(train_module, "FINITE_CHECK_STEPS", 5)
    model, x, y = _toy()                        # 256 samples, batch 16: 16 steps an epoch
    with pytest.raises(ValueError, match=r"non-finite loss at epoch 1, step 3 \(loss=.*"
                                         r"penalty=nan; found at the check after step 5\)"):
        train(model, x, y, TrainConfig(epochs=1, batch_size=16, device="cpu", progress=False),
              regularizer=NaNAfter(0.0))


def test_later_fields_appear_in_the_config_only_when_set():
    plain = TrainConfig().to_dict()
    assert "label_smoothing" not in plain and "augment" not in plain and plain["momentum"] == 0.9
    assert TrainConfig(label_smoothing=0.2, augment="translate").to_dict()["augment"] == "translate"
    assert TrainConfig(**TrainConfig(label_smoothing=0.2).to_dict()) == TrainConfig(label_smoothing=0.2)


def test_paper_recipe_trains_a_small_fast_resnet_on_cifar(offline_root):
    """The paper profile's CIFAR ResNet recipe (label smoothing, flip + translate, triangle,
    airbench's momentum; lr / 4 and weight decay × 4 for batch 64) on 512 images and a narrow
    net: the loss falls and it beats chance (10 %)."""
    images = load_dataset("cifar10", "train", offline_root=offline_root).subset(512)
    paper = regularisation_config("cifar10", "paper")
    recipe = paper.train_config(0, "resnet", device="cpu", progress=False)
    cfg = replace(recipe, epochs=5, batch_size=64, precision="float32", lr=recipe.lr / 4,
                  weight_decay=recipe.weight_decay * 4)
    torch.manual_seed(0)
    model = build_model("resnet_fast", images.input_shape, 10, mean=images.mean, std=images.std,
                        widths=(8, 16, 16), stem=4)
    result = train(model, images.pixels(), images.labels, cfg)
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0] - 0.1 and result.history[-1]["train_accuracy"] > 0.2


def test_data_fingerprint_is_the_sha256_of_shapes_dtypes_and_bytes():
    """Pinned: checkpoint keys written before stay valid (the digest reads the bytes in place)."""
    from stabnb.train import _fingerprint

    x = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    y, b = torch.tensor([1, 0, 2]), torch.ones(2, dtype=torch.bfloat16)
    assert _fingerprint(x, y, b) == "47f5d4dec725c43093ebdc37f9259de4ebe5ab96a960684c8623028f0fc3e695"
    assert _fingerprint(x.t()) == _fingerprint(x.t().contiguous())
