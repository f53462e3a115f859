"""Data: MNIST, CIFAR-10 and CIFAR-100 as uint8 tensors, plus synthetic data with chosen spectra.

Where the images come from, in order:

1. ``root`` (argument) or ``$STABNB_DATA_ROOT``: a folder in torchvision's own layout, what
   ``torchvision.datasets.MNIST(root, download=True)`` writes (``MNIST/raw/``,
   ``cifar-10-batches-py/``, ``cifar-100-python/``). Users who are online pass
   ``download=True``, or set ``STABNB_DOWNLOAD=1`` for every load (notebooks included), and
   torchvision fills it.
2. ``offline_root`` (argument) or ``$STABNB_OFFLINE_DATA``: the project's offline copies
   (``mnist/*.gz`` and ``cifar10/*.tar.gz`` with a ``SHA256SUMS`` file), verified against
   their checksums before use.
3. Decoding the offline CIFAR-10 JPEGs takes seconds, so the decoded uint8 arrays are cached
   in ``cache_dir`` (argument, ``$STABNB_CACHE``, else ``<project>/data/cache``, else
   ``~/.cache/stabnb``), keyed by the archive's checksum and written atomically.

Models take pixel inputs in [0, 1] (see :mod:`stabnb.models`); the normalisation statistics
of each data set are recorded on the :class:`ImageDataset` and passed to the model.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import tarfile
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .io import load_torch, project_root, save_torch
from .rng import resolve_generator

__all__ = ["DataAvailability", "data_availability", 
    "DATASETS", "ImageDataset", "DataSourceError", "load_dataset", "gaussian_mixture",
    "spectrum_profile", "matrix_with_spectrum", "with_weight_spectra",
]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")

# name -> (per-channel mean, per-channel std, image shape) of the training split.
DATASETS: dict[str, tuple[tuple[float, ...], tuple[float, ...], tuple[int, int, int]]] = {
    "mnist": ((0.1307,), (0.3081,), (1, 28, 28)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), (3, 32, 32)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), (3, 32, 32)),
}
SPLITS = ("train", "test")


class DataSourceError(FileNotFoundError):
    """No source for a data set could be found or used; the message lists every option."""


@dataclass(frozen=True)
class ImageDataset:
    """Images as uint8 ``(N, C, H, W)``, labels as int64 ``(N,)``, and their statistics.

    Attributes:
        name, split: e.g. ``"mnist"``, ``"train"``.
        images: uint8 tensor ``(N, C, H, W)``.
        labels: int64 tensor ``(N,)``.
        classes: class names in label order.
        mean, std: per-channel normalisation statistics (pixel units, [0, 1]).
        source: where the images were read from (for provenance).
    """

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def pixels(self, dtype: torch.dtype = torch.float32,
               device: str | torch.device | None = None) -> torch.Tensor:
        """Images as floats in [0, 1]: the view models and attribution noise use."""
        return self.images.to(device=device, dtype=dtype) / 255.0

    def normalized(self, dtype: torch.dtype = torch.float32,
                   device: str | torch.device | None = None) -> torch.Tensor:
        """Images as (x − mean) / std per channel, for code outside stabnb's models."""
        shape = (1, -1, 1, 1)
        mean = torch.tensor(self.mean, dtype=dtype, device=device).view(shape)
        std = torch.tensor(self.std, dtype=dtype, device=device).view(shape)
        return (self.pixels(dtype, device) - mean) / std

    def subset(self, n: int, seed: int = 0) -> ImageDataset:
        """A class-balanced random subset of ``n`` images (round-robin over classes), fixed by ``seed``."""
        if not 0 < n <= len(self):
            raise ValueError(f"subset size n={n} must be in 1..{len(self)} for {self.name}/{self.split}.")
        generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(self), generator=generator)
        labels = self.labels[order]
        rank = torch.zeros_like(labels)
        for c in range(self.num_classes):
            mask = labels == c
            rank[mask] = torch.arange(int(mask.sum()))
        chosen = order[torch.argsort(rank * self.num_classes + labels, stable=True)[:n]]
        chosen = chosen.sort().values
        return replace(self, images=self.images[chosen], labels=self.labels[chosen],
                       source=f"{self.source} [subset n={n}, seed={seed}]")


def _env_path(explicit: str | os.PathLike | None, variable: str) -> Path | None:
    value = explicit if explicit is not None else os.environ.get(variable) or None
    return Path(value).expanduser() if value is not None else None


def _download_switch() -> bool:
    """``$STABNB_DOWNLOAD``: ``1`` lets torchvision download, unset, empty or ``0`` does not."""
    value = os.environ.get("STABNB_DOWNLOAD", "").strip()
    if value not in ("", "0", "1"):
        raise ValueError(f"STABNB_DOWNLOAD={value!r} must be 1 (download) or 0 (do not); "
                         "unset it to keep the default, no download.")
    return value == "1"


def default_cache_dir() -> Path:
    """``$STABNB_CACHE``, else ``<project>/data/cache``, else ``~/.cache/stabnb``."""
    explicit = _env_path(None, "STABNB_CACHE")
    if explicit is not None:
        return explicit
    root = project_root()
    return root / "data" / "cache" if root is not None else Path.home() / ".cache" / "stabnb"


# --- torchvision layout --------------------------------------------------------------------

def _read_idx(raw: bytes) -> np.ndarray:
    """Parse an (uncompressed) idx file: magic, dims, then big-endian uint8 data."""
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4)
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _read_maybe_gz(path: Path) -> bytes:
    if path.exists():
        return path.read_bytes()
    gz = path.with_name(path.name + ".gz")
    return gzip.decompress(gz.read_bytes())


def _mnist_files(split: str) -> tuple[str, str]:
    prefix = "train" if split == "train" else "t10k"
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def _mnist_from(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images_name, labels_name = _mnist_files(split)
    images = _read_idx(_read_maybe_gz(folder / images_name))[:, None]
    labels = _read_idx(_read_maybe_gz(folder / labels_name))
    return images, labels


def _torchvision_checksums(name: str) -> dict[str, str]:
    """File name → md5 of torchvision's CIFAR-10/100 python batches, as torchvision records."""
    import torchvision

    cls = {"cifar10": torchvision.datasets.CIFAR10, "cifar100": torchvision.datasets.CIFAR100}[name]
    return {file_name: md5 for file_name, md5 in
            [*cls.train_list, *cls.test_list, (cls.meta["filename"], cls.meta["md5"])]}


def _unpickle(path: Path, checksums: dict[str, str]) -> dict:
    """Unpickle a CIFAR batch only once its md5 matches ``checksums`` (unpickling runs code)."""
    from torchvision.datasets.utils import check_integrity

    expected = checksums.get(path.name)
    if expected is None or not check_integrity(str(path), expected):
        raise DataSourceError(
            f"{path} does not match torchvision's recorded md5 for {path.name} "
            f"({expected or 'none recorded'}), so it is not the original CIFAR file and stabnb "
            "will not unpickle it (a pickle can run code). Delete that folder and download it "
            "again with load_dataset(..., download=True) or torchvision.")
    with path.open("rb") as handle:
        return pickle.load(handle, encoding="latin1")


def _torchvision_layout(name: str, split: str, root: Path):
    """Read ``name/split`` from a torchvision-layout ``root``; None if it is not there.

    CIFAR batches are pickles: each is unpickled only after its md5 matches torchvision's
    recorded one (:func:`_torchvision_checksums`), as torchvision itself requires.
    """
    if name == "mnist":
        folder = root / "MNIST" / "raw"
        images_name, _ = _mnist_files(split)
        if not ((folder / images_name).exists() or (folder / f"{images_name}.gz").exists()):
            return None
        images, labels = _mnist_from(folder, split)
        return images, labels, tuple(str(i) for i in range(10))
    if name == "cifar10":
        folder = root / "cifar-10-batches-py"
        files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        if not all((folder / f).exists() for f in files):
            return None
        checksums = _torchvision_checksums(name)
        batches = [_unpickle(folder / f, checksums) for f in files]
        images = np.concatenate([b["data"] for b in batches]).reshape(-1, 3, 32, 32)
        labels = np.concatenate([b["labels"] for b in batches])
        return images, labels, CIFAR10_CLASSES
    folder = root / "cifar-100-python"
    if not (folder / split).exists():
        return None
    checksums = _torchvision_checksums(name)
    batch = _unpickle(folder / split, checksums)
    classes = tuple(_unpickle(folder / "meta", checksums)["fine_label_names"]) \
        if (folder / "meta").exists() else tuple(str(i) for i in range(100))
    return batch["data"].reshape(-1, 3, 32, 32), np.asarray(batch["fine_labels"]), classes


def _download(name: str, root: Path) -> None:
    import torchvision

    cls = {"mnist": torchvision.datasets.MNIST, "cifar10": torchvision.datasets.CIFAR10,
           "cifar100": torchvision.datasets.CIFAR100}[name]
    for train in (True, False):
        cls(str(root), train=train, download=True)


# --- offline copies ------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verified(offline_root: Path, relative: str) -> tuple[Path, str]:
    """Return the file and its checksum, after checking it against ``SHA256SUMS``."""
    path = offline_root / relative
    sums_file = offline_root / "SHA256SUMS"
    if not sums_file.exists():
        raise DataSourceError(f"{sums_file} is missing; the offline data folder must hold its "
                              "SHA256SUMS file next to the data.")
    expected = {}
    for line in sums_file.read_text().splitlines():
        if line.strip():
            digest, file_name = line.split(maxsplit=1)
            expected[file_name.lstrip("*").removeprefix("./")] = digest
    if relative not in expected:
        raise DataSourceError(f"{relative} is not listed in {sums_file}.")
    if not path.is_file():
        raise DataSourceError(
            f"{path} is listed in {sums_file} but missing: the offline copy is incomplete; "
            "copy the file again from the original source, or use another source.\n"
            + _options(relative.split("/")[0]))
    actual = _sha256(path)
    if actual != expected[relative]:
        raise DataSourceError(
            f"{path} is corrupt or partial: sha256 {actual[:12]}… but SHA256SUMS expects "
            f"{expected[relative][:12]}…; copy the file again from the original source.")
    return path, actual


def _decode_cifar_jpegs(archive: Path) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    members: list[tuple[int, str, bytes]] = []
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            parts = Path(member.name).parts
            if member.isfile() and member.name.endswith(".jpg") and parts[-2] in CIFAR10_CLASSES:
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                members.append((CIFAR10_CLASSES.index(parts[-2]), parts[-1], data))
    members.sort(key=lambda m: (m[0], m[1]))
    images = np.stack([np.asarray(Image.open(io.BytesIO(m[2])).convert("RGB"))
                       for m in members]).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(images), np.array([m[0] for m in members])


def _offline(name: str, split: str, offline_root: Path, cache_dir: Path):
    """Read ``name/split`` from the offline copies; None if that data set has none there."""
    if name == "mnist":
        if not (offline_root / "mnist").is_dir():
            return None
        images_name, labels_name = _mnist_files(split)
        for file_name in (images_name, labels_name):
            _verified(offline_root, f"mnist/{file_name}.gz")
        images, labels = _mnist_from(offline_root / "mnist", split)
        return images, labels, tuple(str(i) for i in range(10))
    if name == "cifar10":
        relative = f"cifar10/cifar10-jpeg-{split}.tar.gz"
        if not (offline_root / relative).exists():
            return None
        archive, digest = _verified(offline_root, relative)
        cache = cache_dir / f"cifar10-{split}-{digest[:16]}.pt"
        if cache.exists():
            try:
                cached = load_torch(cache, what="data cache")
                return cached["images"].numpy(), cached["labels"].numpy(), CIFAR10_CLASSES
            except (ValueError, KeyError, TypeError, AttributeError) as err:
                reason = err.__cause__ or err
                warnings.warn(f"data cache {cache} is corrupt ({type(reason).__name__}: "
                              f"{str(reason)[:120]}); rebuilding it from {archive}.",
                              RuntimeWarning, stacklevel=3)
        images, labels = _decode_cifar_jpegs(archive)
        save_torch({"images": torch.from_numpy(images), "labels": torch.from_numpy(labels)}, cache)
        return images, labels, CIFAR10_CLASSES
    return None


def load_dataset(name: str, split: str = "train", *, root: str | os.PathLike | None = None,
                 offline_root: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None,
                 download: bool | None = None) -> ImageDataset:
    """Load MNIST, CIFAR-10 or CIFAR-100 as an :class:`ImageDataset` (uint8 images, int64 labels).

    Args:
        name: ``"mnist"``, ``"cifar10"`` or ``"cifar100"``.
        split: ``"train"`` or ``"test"``.
        root: torchvision-layout data root. Default: ``$STABNB_DATA_ROOT``.
        offline_root: the offline copies (with ``SHA256SUMS``). Default: ``$STABNB_OFFLINE_DATA``.
        cache_dir: where decoded arrays are cached. Default: :func:`default_cache_dir`.
        download: let torchvision download into ``root`` (or ``<cache_dir>/torchvision``)
            when no other source has the data. Default: ``$STABNB_DOWNLOAD`` (``1`` downloads,
            unset or ``0`` does not).

    Raises:
        ValueError: unknown name or split, or ``$STABNB_DOWNLOAD`` is neither 0 nor 1.
        DataSourceError: no source has the data (the message lists every option), or an
            offline file fails its checksum.
    """
    if name not in DATASETS:
        raise ValueError(f"dataset={name!r} is unknown; choose one of {sorted(DATASETS)}.")
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is unknown; choose 'train' or 'test'.")
    root_path = _env_path(root, "STABNB_DATA_ROOT")
    offline_path = _env_path(offline_root, "STABNB_OFFLINE_DATA")
    cache_path = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    download = _download_switch() if download is None else download

    found, source = None, ""
    if root_path is not None:
        found, source = _torchvision_layout(name, split, root_path), f"torchvision layout at {root_path}"
    if found is None and offline_path is not None:
        found, source = _offline(name, split, offline_path, cache_path), f"offline copy at {offline_path}"
    target = root_path or cache_path / "torchvision"      # where download=True writes
    if found is None and root_path is None and target.exists():
        found, source = _torchvision_layout(name, split, target), f"earlier download at {target}"
    if found is None and download:
        try:
            _download(name, target)
        except Exception as err:  # torchvision raises URLError, RuntimeError, OSError...
            raise DataSourceError(f"downloading {name} into {target} failed ({err}); "
                                  "see the options below.\n" + _options(name)) from err
        found, source = _torchvision_layout(name, split, target), f"torchvision download at {target}"
    if found is None:
        raise DataSourceError(f"no source has {name}/{split}.\n" + _options(name))
    images, labels, classes = found
    mean, std, _ = DATASETS[name]
    return ImageDataset(name, split, torch.from_numpy(np.array(images, dtype=np.uint8)),
                        torch.from_numpy(np.asarray(labels, dtype=np.int64)), tuple(classes),
                        mean, std, source)


def _options(name: str) -> str:
    offline = "" if name != "cifar100" else " (none exists for cifar100)"
    return (
        "Provide the data in one of these ways:\n"
        "  1. online: set STABNB_DOWNLOAD=1 (or pass load_dataset(..., download=True)), "
        "optionally with root=... or $STABNB_DATA_ROOT as the download folder;\n"
        "  2. a torchvision-layout folder you already have (MNIST/raw, cifar-10-batches-py, "
        "cifar-100-python): root=... or $STABNB_DATA_ROOT;\n"
        f"  3. the project's offline copies{offline}: offline_root=... or $STABNB_OFFLINE_DATA "
        "(a folder with mnist/, cifar10/ and SHA256SUMS; the Makefile sets it to ../shared/data "
        "when that folder exists)."
    )


# --- synthetic data ------------------------------------------------------------------------

def gaussian_mixture(n: int, dim: int, num_classes: int, *, separation: float = 3.0,
                     noise: float = 1.0, generator: torch.Generator | None = None, seed: int = 0,
                     dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points of a ``num_classes``-component isotropic Gaussian mixture in R^dim.

    Class means are random directions scaled to norm ``separation``; each point is its
    class mean plus ``N(0, noise² I)``. Labels are balanced (round-robin, then shuffled).

    Returns:
        ``(x, y)`` with ``x`` of shape ``(n, dim)`` and int64 labels ``y`` of shape ``(n,)``.
    """
    generator = resolve_generator(generator, seed)
    if n < 1 or dim < 1 or num_classes < 2:
        raise ValueError(f"need n ≥ 1, dim ≥ 1, num_classes ≥ 2; got n={n}, dim={dim}, "
                         f"num_classes={num_classes}.")
    means = torch.randn(num_classes, dim, generator=generator, dtype=dtype)
    means = separation * means / means.norm(dim=1, keepdim=True)
    labels = torch.arange(n) % num_classes
    labels = labels[torch.randperm(n, generator=generator)]
    x = means[labels] + noise * torch.randn(n, dim, generator=generator, dtype=dtype)
    return x, labels


def spectrum_profile(rank: int, decay: float, *, norm: float = 1.0,
                     kind: str = "geometric") -> torch.Tensor:
    """Singular values with ``s_1 = norm`` and a chosen concentration.

    ``"geometric"``: s_i = norm · decay^(i−1); ``"power"``: s_i = norm · i^(−decay).
    ``decay = 1`` (geometric) or ``0`` (power) gives a flat spectrum (maximal entropy);
    small geometric ``decay`` concentrates the energy in s_1 (entropy → 0).
    """
    if rank < 1:
        raise ValueError(f"rank={rank} must be at least 1.")
    index = torch.arange(rank, dtype=torch.float64)
    if kind == "geometric":
        if not 0 < decay <= 1:
            raise ValueError(f"geometric decay={decay} must be in (0, 1].")
        values = decay ** index
    elif kind == "power":
        if decay < 0:
            raise ValueError(f"power decay={decay} must be ≥ 0.")
        values = (index + 1) ** (-decay)
    else:
        raise ValueError(f"kind={kind!r} is unknown; choose 'geometric' or 'power'.")
    return norm * values


def _random_orthogonal(n: int, k: int, generator: torch.Generator | None,
                       dtype: torch.dtype) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(n, k, generator=generator, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).to(dtype)


def matrix_with_spectrum(singular_values: torch.Tensor, shape: tuple[int, int], *,
                         generator: torch.Generator | None = None, seed: int = 0,
                         dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A random ``shape`` matrix U diag(s) Vᵀ with the given singular values (Haar U, V)."""
    generator = resolve_generator(generator, seed)
    rows, cols = shape
    s = torch.as_tensor(singular_values, dtype=torch.float64)
    if s.dim() != 1 or s.numel() > min(rows, cols):
        raise ValueError(f"{s.numel()} singular values do not fit a {rows}×{cols} matrix "
                         f"(at most {min(rows, cols)}).")
    if bool((s < 0).any()):
        raise ValueError("singular values must be non-negative.")
    k = s.numel()
    u = _random_orthogonal(rows, k, generator, torch.float64)
    v = _random_orthogonal(cols, k, generator, torch.float64)
    return ((u * s) @ v.T).to(dtype)


def with_weight_spectra(model: torch.nn.Module, decay: float, *, norm: float = 1.0,
                        kind: str = "geometric",
                        generator: torch.Generator | None = None, seed: int = 0) -> torch.nn.Module:
    """Give every ``nn.Linear`` weight of ``model`` the spectrum ``spectrum_profile(r, decay, norm)``.

    A teacher network whose layers share one operator norm but differ in concentration.
    Modifies ``model`` in place and returns it.
    """
    generator = resolve_generator(generator, seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                rows, cols = module.weight.shape
                s = spectrum_profile(min(rows, cols), decay, norm=norm, kind=kind)
                module.weight.copy_(matrix_with_spectrum(s, (rows, cols), generator=generator,
                                                         dtype=module.weight.dtype))
    return model


@dataclass(frozen=True)
class DataAvailability:
    """Whether a data set can be had here, where from, and if not, why (for the report).

    Attributes:
        name: the data set (``"cifar100"``, ...).
        available: every split asked for was found.
        sources: split → where it was read from.
        reason: the loader's message when a split is missing (every option it tried), else "".
    """

    name: str
    available: bool
    sources: dict[str, str]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def data_availability(name: str, splits: Sequence[str] = ("train", "test"),
                      **load_kwargs: Any) -> DataAvailability:
    """Try :func:`stabnb.data.load_dataset` for each split; report instead of raising.

    A notebook guards its protocol cells with ``availability.available`` and prints
    ``availability.reason`` when the data is missing (or fails its checksum), so a machine
    without the data set skips that experiment cleanly and says why. A bad name or split
    still raises ``ValueError``.

    Args:
        name: data set name for :func:`~stabnb.data.load_dataset`.
        splits: the splits needed. Default: ``("train", "test")``.
        **load_kwargs: passed on (``root``, ``offline_root``, ``download``, ...).
    """
    sources: dict[str, str] = {}
    for split in splits:
        try:
            sources[split] = load_dataset(name, split, **load_kwargs).source
        except DataSourceError as err:                  # missing, or failing its checksum
            return DataAvailability(name, False, sources, str(err))
    return DataAvailability(name, True, sources, "")
