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

Modules: :mod:`~stabnb.data.images` (the data sets and their container),
:mod:`~stabnb.data.sources` (where they come from, :func:`load_dataset`),
:mod:`~stabnb.data.synthetic` (data with chosen spectra); every name is re-exported here.
"""

from .images import CIFAR10_CLASSES, DATASETS, SPLITS, ImageDataset
from .sources import (
    DataAvailability,
    DataSourceError,
    data_availability,
    default_cache_dir,
    load_dataset,
)
from .synthetic import gaussian_mixture, matrix_with_spectrum, spectrum_profile, with_weight_spectra

__all__ = [
    "CIFAR10_CLASSES", "DATASETS", "SPLITS", "ImageDataset",
    "DataAvailability", "DataSourceError", "data_availability", "default_cache_dir", "load_dataset",
    "gaussian_mixture", "spectrum_profile", "matrix_with_spectrum", "with_weight_spectra",
]
