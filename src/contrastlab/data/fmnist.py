"""Fashion-MNIST from its four IDX files (gzipped or not).

Looked for, in order, in ``<root>/fashion-mnist``, ``<root>/FashionMNIST/raw`` (torchvision's
layout), ``<root>`` itself and ``/usr/share/datasets/fashion-mnist`` (where Debian's
``dataset-fashion-mnist`` package installs them). Images are 28x28, one channel.
"""

from __future__ import annotations

import functools
import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from .imageset import ImageSet, real_imageset, resolve_root

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian package dataset-fashion-mnist
SYSTEM_DIRS = (DEBIAN_DIR,)
_HOW_TO_GET = (
    "install Debian's dataset-fashion-mnist package (apt-get install dataset-fashion-mnist) or put "
    "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
    "t10k-labels-idx1-ubyte.gz from the Fashion-MNIST release into {root}/fashion-mnist"
)


def candidate_dirs(root: Path) -> list[Path]:
    """Folders searched for the IDX files, in order."""
    return [root / "fashion-mnist", root / "FashionMNIST" / "raw", root, *SYSTEM_DIRS]


def _find_file(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def find_files(root: Path) -> dict[str, Path]:
    """The four IDX files from the first folder that holds all of them: {stem: path}."""
    stems = [stem for pair in FILES.values() for stem in pair]
    for folder in candidate_dirs(root):
        found = {stem: _find_file(folder, stem) for stem in stems}
        if all(found.values()):
            return found  # type: ignore[return-value]
    looked = ", ".join(str(d) for d in candidate_dirs(root))
    raise DatasetError(f"fashion-mnist not found: looked in {looked}; " + _HOW_TO_GET.format(root=root))


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file of unsigned bytes (magic 0x0000 08 NDIM) into an array of its shape."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:
        raise DatasetError(f"fashion-mnist: {path} is corrupt or truncated ({error})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or not 1 <= raw[3] <= 4:
        raise DatasetError(f"fashion-mnist: {path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"fashion-mnist: {path} is truncated (header)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise DatasetError(f"fashion-mnist: {path} holds {len(raw) - header} data bytes, its header says {expected} (truncated?)")
    # A writable copy: a read-only view of the bytes makes torch warn (and forbids in-place use) downstream.
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


@functools.lru_cache(maxsize=2)
def _read_all(source_key: tuple) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    paths = dict(source_key[1])
    splits = {}
    for split, (image_stem, label_stem) in FILES.items():
        images, labels = read_idx(paths[image_stem]), read_idx(paths[label_stem])
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DatasetError(f"fashion-mnist: {split} images {images.shape} do not match labels {labels.shape}")
        if len(labels) and labels.max() >= len(CLASSES):
            raise DatasetError(f"fashion-mnist: {paths[label_stem]} has labels outside 0..{len(CLASSES) - 1}")
        splits[split] = (images[..., None], labels.astype(np.int64))
    return splits


def load_fashion_mnist(split: str, root: str | os.PathLike | None = None, *, image_size: int | None = None,
                       channels: int | None = None, per_class: int | None = None) -> ImageSet:
    """One split of Fashion-MNIST: images (N, 28, 28, 1) uint8 at native size."""
    files = find_files(resolve_root(root))
    key = ("fashion-mnist", tuple(sorted((stem, path) for stem, path in files.items())),
           tuple(os.stat(p).st_mtime_ns for p in files.values()))
    return real_imageset("fashion-mnist", split, _read_all(key), list(CLASSES), image_size=image_size,
                         channels=channels, per_class=per_class, source_key=key)
