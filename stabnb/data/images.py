"""The image data sets stabnb knows (names, statistics, classes) and :class:`ImageDataset`,
their uint8 container. Models take pixel inputs in [0, 1] (see :mod:`stabnb.models`); the
normalisation statistics of each data set are recorded on the :class:`ImageDataset`."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

__all__ = ["CIFAR10_CLASSES", "DATASETS", "SPLITS", "ImageDataset"]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")

# name -> (per-channel mean, per-channel std, image shape) of the training split.
DATASETS: dict[str, tuple[tuple[float, ...], tuple[float, ...], tuple[int, int, int]]] = {
    "mnist": ((0.1307,), (0.3081,), (1, 28, 28)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), (3, 32, 32)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), (3, 32, 32)),
}
SPLITS = ("train", "test")


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
