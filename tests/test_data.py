import hashlib
import pickle
import shutil

import numpy as np
import pytest
import torch

from stabnb.data import (
    DataSourceError,
    gaussian_mixture,
    load_dataset,
    matrix_with_spectrum,
    spectrum_profile,
    with_weight_spectra,
)
from stabnb.data import sources as data_sources
from stabnb.models import MLP


def test_mnist_is_the_standard_set(offline_root, tmp_path):
    train = load_dataset("mnist", "train", offline_root=offline_root, cache_dir=tmp_path)
    test = load_dataset("mnist", "test", offline_root=offline_root, cache_dir=tmp_path)
    assert (len(train), len(test)) == (60000, 10000)
    assert train.images.dtype == torch.uint8 and train.input_shape == (1, 28, 28)
    assert train.labels.bincount().tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert test.labels.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert abs(train.pixels().mean().item() - 0.1307) < 1e-3
    assert train.mean == (0.1307,) and train.std == (0.3081,)
    normalized = test.normalized()
    assert torch.allclose(normalized, (test.pixels() - 0.1307) / 0.3081)


def test_cifar10_has_balanced_splits_and_is_cached(offline_root, tmp_path):
    test = load_dataset("cifar10", "test", offline_root=offline_root, cache_dir=tmp_path)
    assert len(test) == 10000 and test.input_shape == (3, 32, 32)
    assert test.labels.bincount().tolist() == [1000] * 10
    assert test.classes[0] == "airplane" and test.classes[-1] == "truck"
    cached = list(tmp_path.glob("cifar10-test-*.pt"))
    assert len(cached) == 1 and not list(tmp_path.glob(".*.tmp"))
    again = load_dataset("cifar10", "test", offline_root=offline_root, cache_dir=tmp_path)
    assert torch.equal(again.images, test.images)


def test_cifar10_train_split(offline_root):
    train = load_dataset("cifar10", "train", offline_root=offline_root)
    assert len(train) == 50000 and train.labels.bincount().tolist() == [5000] * 10
    means = train.images.sum(dim=(0, 2, 3), dtype=torch.int64) / (50000 * 32 * 32 * 255)
    assert torch.allclose(means.float(), torch.tensor([0.4913, 0.4821, 0.4465]), atol=2e-4)


def test_corrupt_offline_file_is_named(offline_root, tmp_path):
    copy = tmp_path / "offline"
    shutil.copytree(offline_root / "mnist", copy / "mnist")
    shutil.copy(offline_root / "SHA256SUMS", copy / "SHA256SUMS")
    target = copy / "mnist" / "t10k-labels-idx1-ubyte.gz"
    target.write_bytes(target.read_bytes()[:-10])
    with pytest.raises(DataSourceError, match="t10k-labels-idx1-ubyte.gz is corrupt or partial"):
        load_dataset("mnist", "test", offline_root=copy, cache_dir=tmp_path)


def test_no_source_lists_every_option(tmp_path, monkeypatch):
    monkeypatch.delenv("STABNB_OFFLINE_DATA", raising=False)
    monkeypatch.delenv("STABNB_DATA_ROOT", raising=False)
    with pytest.raises(DataSourceError) as info:
        load_dataset("cifar100", "test", cache_dir=tmp_path)
    message = str(info.value)
    for option in ("download=True", "STABNB_DATA_ROOT", "STABNB_OFFLINE_DATA", "none exists for cifar100"):
        assert option in message


def test_bad_names_are_refused():
    with pytest.raises(ValueError, match="dataset='svhn' is unknown"):
        load_dataset("svhn")
    with pytest.raises(ValueError, match="split='val' is unknown"):
        load_dataset("mnist", "val")


def _write_fake_cifar100(root, monkeypatch, n=20):
    """A small CIFAR-100 in torchvision's on-disk format; its md5s stand in for torchvision's
    recorded ones (a test-only patch of the private checksum table, not a user option)."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 "fine_labels": list(rng.integers(0, 100, n)), "coarse_labels": [0] * n}
        (folder / split).write_bytes(pickle.dumps(batch))
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": [f"c{i}" for i in range(100)]}))
    sums = {f: hashlib.md5((folder / f).read_bytes()).hexdigest() for f in ("train", "test", "meta")}
    monkeypatch.setattr(data_sources, "_torchvision_checksums", lambda name: sums)
    return batch


def test_cifar100_reads_torchvision_layout(tmp_path, monkeypatch):
    batch = _write_fake_cifar100(tmp_path, monkeypatch)
    data = load_dataset("cifar100", "test", root=tmp_path)
    assert len(data) == 20 and data.num_classes == 100 and data.classes[3] == "c3"
    assert torch.equal(data.images[0], torch.from_numpy(batch["data"][0].reshape(3, 32, 32)))
    assert data.labels.tolist() == [int(v) for v in batch["fine_labels"]]


def test_mnist_reads_torchvision_layout(offline_root, tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(offline_root / "mnist" / name, raw / name)
    from_layout = load_dataset("mnist", "test", root=tmp_path)
    from_offline = load_dataset("mnist", "test", offline_root=offline_root)
    assert torch.equal(from_layout.images, from_offline.images)
    assert "torchvision layout" in from_layout.source


def test_subset_is_balanced_and_seeded(offline_root):
    test = load_dataset("mnist", "test", offline_root=offline_root)
    a, b = test.subset(100, seed=1), test.subset(100, seed=1)
    assert torch.equal(a.labels, b.labels) and a.labels.bincount().tolist() == [10] * 10
    assert not torch.equal(a.images, test.subset(100, seed=2).images)
    with pytest.raises(ValueError, match="subset size n=0"):
        test.subset(0)


def test_gaussian_mixture_is_balanced_and_seeded():
    x, y = gaussian_mixture(90, 5, 3, generator=torch.Generator().manual_seed(0))
    x2, _ = gaussian_mixture(90, 5, 3, generator=torch.Generator().manual_seed(0))
    assert x.shape == (90, 5) and y.bincount().tolist() == [30, 30, 30]
    assert torch.equal(x, x2)


def test_matrix_with_spectrum_has_that_spectrum():
    s = spectrum_profile(4, 0.5, norm=2.0)
    assert torch.allclose(s, torch.tensor([2.0, 1.0, 0.5, 0.25], dtype=torch.float64))
    a = matrix_with_spectrum(s, (6, 5), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(torch.linalg.svdvals(a)[:4], s, atol=1e-12)
    assert torch.linalg.matrix_rank(a) == 4
    with pytest.raises(ValueError, match="do not fit"):
        matrix_with_spectrum(torch.ones(7), (6, 5))


def test_concentration_varies_at_fixed_norm():
    from stabnb.summaries import spectral_entropy

    flat, peaked = spectrum_profile(8, 1.0), spectrum_profile(8, 0.2)
    assert flat[0] == peaked[0] == 1.0
    assert spectral_entropy(flat) > spectral_entropy(peaked)


def test_teacher_layers_get_the_chosen_spectrum():
    model = with_weight_spectra(MLP(6, (5,), 3), 0.5, norm=1.5, generator=torch.Generator().manual_seed(0))
    first = model.net[1].weight.detach().double()
    assert torch.allclose(torch.linalg.svdvals(first), spectrum_profile(5, 0.5, norm=1.5), atol=1e-5)


def test_an_earlier_download_is_found_without_download(tmp_path, monkeypatch):
    """download=True without a root writes to <cache>/torchvision; later loads look there."""
    monkeypatch.delenv("STABNB_OFFLINE_DATA", raising=False)
    monkeypatch.delenv("STABNB_DATA_ROOT", raising=False)
    _write_fake_cifar100(tmp_path / "torchvision", monkeypatch)
    data = load_dataset("cifar100", "train", cache_dir=tmp_path)
    assert len(data) == 20 and "earlier download" in data.source


@pytest.mark.parametrize(("env", "argument", "downloads"), [
    ("1", None, True), ("0", None, False), (None, None, False),
    ("1", False, False), ("0", True, True), (None, True, True)])
def test_stabnb_download_switch_and_the_argument_first(tmp_path, monkeypatch, env, argument, downloads):
    """download= wins over $STABNB_DOWNLOAD; either lets torchvision fill the data root."""
    for name in ("STABNB_OFFLINE_DATA", "STABNB_DATA_ROOT", "STABNB_DOWNLOAD"):
        monkeypatch.delenv(name, raising=False)
    if env is not None:
        monkeypatch.setenv("STABNB_DOWNLOAD", env)
    fetched = []
    monkeypatch.setattr(data_sources, "_download",
                        lambda name, root: fetched.append(root) or _write_fake_cifar100(root, monkeypatch))
    if downloads:
        data = load_dataset("cifar100", "test", root=tmp_path / "data", download=argument)
        assert fetched == [tmp_path / "data"] and "torchvision download" in data.source
    else:
        with pytest.raises(DataSourceError, match="set STABNB_DOWNLOAD=1"):
            load_dataset("cifar100", "test", root=tmp_path / "data", download=argument)
        assert fetched == []


def test_a_bad_stabnb_download_value_is_refused(monkeypatch):
    monkeypatch.setenv("STABNB_DOWNLOAD", "yes")
    with pytest.raises(ValueError, match="STABNB_DOWNLOAD='yes' must be 1 .download. or 0"):
        load_dataset("mnist")
