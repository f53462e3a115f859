"""Where the images come from: a torchvision-layout folder (or a download into one), the
project's checksummed offline copies, and the cache of decoded arrays; :func:`load_dataset`
tries them in the order the :mod:`stabnb.data` docstring gives, and :func:`data_availability`
reports instead of raising."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import tarfile
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io import load_torch, project_root, save_torch
from .images import CIFAR10_CLASSES, DATASETS, SPLITS, ImageDataset

__all__ = ["DataSourceError", "DataAvailability", "load_dataset", "data_availability",
           "default_cache_dir"]


class DataSourceError(FileNotFoundError):
    """No source for a data set could be found or used; the message lists every option."""


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
