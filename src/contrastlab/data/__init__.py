"""Datasets behind one registry, and downstream tasks.

    load_dataset(name, split, root=None, *, image_size=None, channels=None, per_class=None, seed=0) -> ImageSet
    make_task(imageset, classes) -> ImageSet
    download(name, root=None, progress=False) -> Path     # cifar10 / cifar100 only

Datasets: ``synth10`` / ``synth100`` (embedded, generated), ``cifar10`` / ``cifar100``
(official python archives under the data root), ``fashion-mnist`` (IDX files) and ``digits``
(scikit-learn's bundled 8x8 digits). The data root is ``root`` if given, else the env
variable ``CONTRASTLAB_DATA``, else ``~/.cache/contrastlab``. See docs/datasets.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ..errors import DatasetError
from ..registry import UnknownNameError, lookup
from .cifar import download, load_cifar
from .digits import load_digits
from .fmnist import load_fashion_mnist
from .imageset import SPLITS, ImageSet, check_split, resolve_root
from .synth import load_synth
from .tasks import make_task

# name -> loader(split, root, *, image_size, channels, per_class, seed) -> ImageSet
Loader = Callable[..., ImageSet]


def _synth_loader(name: str) -> Loader:
    def load(split: str, root: Path, *, image_size, channels, per_class, seed) -> ImageSet:
        return load_synth(name, split, image_size=image_size, channels=channels, per_class=per_class, seed=seed)

    load.__doc__ = f"{name}: generated in-process; ``root`` is unused."
    return load


def _cifar_loader(name: str) -> Loader:
    def load(split: str, root: Path, *, image_size, channels, per_class, seed) -> ImageSet:
        return load_cifar(name, split, root, image_size=image_size, channels=channels, per_class=per_class)

    load.__doc__ = f"{name}: the official python archive (or its extracted folder) under ``root``; ``seed`` is unused."
    return load


def _fmnist(split: str, root: Path, *, image_size, channels, per_class, seed) -> ImageSet:
    return load_fashion_mnist(split, root, image_size=image_size, channels=channels, per_class=per_class)


def _digits(split: str, root: Path, *, image_size, channels, per_class, seed) -> ImageSet:
    return load_digits(split, image_size=image_size, channels=channels, per_class=per_class)


DATASETS: dict[str, Loader] = {
    "synth10": _synth_loader("synth10"),
    "synth100": _synth_loader("synth100"),
    "cifar10": _cifar_loader("cifar10"),
    "cifar100": _cifar_loader("cifar100"),
    "fashion-mnist": _fmnist,
    "digits": _digits,
}


# Classes of each registered dataset, known without loading it (config validation, task specs).
DATASET_CLASSES = {"synth10": 10, "synth100": 100, "cifar10": 10, "cifar100": 100, "fashion-mnist": 10, "digits": 10}


def dataset_classes(name: str) -> int:
    """How many classes dataset ``name`` has; DatasetError listing the valid names for an unknown one."""
    try:
        return lookup(DATASET_CLASSES, name, "dataset")
    except UnknownNameError as error:
        raise DatasetError(str(error)) from None


def load_dataset(
    name: str,
    split: str,
    root: str | os.PathLike | None = None,
    *,
    image_size: int | None = None,
    channels: int | None = None,
    per_class: int | None = None,
    seed: int = 0,
) -> ImageSet:
    """Load one split of a registered dataset as an :class:`ImageSet` (images (N, H, W, C) uint8).

    ``split``: "train" or "test". ``image_size`` / ``channels``: resize (antialiased bilinear)
    and convert (1 <-> 3 channels) the images; None keeps the dataset's own. ``per_class``:
    synthetic data generates that many images per class (defaults: the CIFAR split sizes);
    real data keeps the first ``per_class`` images of each class. ``seed``: the generation
    seed of synthetic data (train and test never share an image), unused for real data.
    mean/std are those of the train split under the same ``image_size`` and ``channels``.
    Raises :class:`DatasetError` (one line) for an unknown name, missing, corrupt or
    truncated files, or a wrong checksum.
    """
    try:
        loader = lookup(DATASETS, name, "dataset")
    except UnknownNameError as error:  # a DatasetError, as the CLI expects of any dataset problem
        raise DatasetError(str(error)) from None
    check_split(split)
    for key, value in (("image_size", image_size), ("channels", channels), ("per_class", per_class)):
        if value is not None and int(value) < 1:
            raise DatasetError(f"{key} must be positive, got {value}")
    return loader(split, resolve_root(root), image_size=image_size, channels=channels, per_class=per_class, seed=int(seed))


__all__ = [
    "DATASETS", "DATASET_CLASSES", "SPLITS", "dataset_classes", "ImageSet", "DatasetError", "download", "load_dataset", "make_task", "resolve_root",
]
