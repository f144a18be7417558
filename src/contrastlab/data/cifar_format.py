"""Generated images in the layout of the official CIFAR python-version archives.

For trying the paper preset offline and for tests and benchmarks: ``write_cifar_folders`` writes
the extracted folders, which contrastlab reads with structural checks instead of the archive's MD5.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR100_FOLDER = "cifar-100-python"


def _class_balanced(rng: np.random.Generator, classes: int, per_class: int) -> tuple[np.ndarray, list[int]]:
    labels = np.repeat(np.arange(classes), per_class)
    rng.shuffle(labels)
    data = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
    return data, [int(v) for v in labels]


def _dump(path: Path, obj: dict) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=2))


def write_cifar_folders(root: str | Path, *, cifar10_train_per_class: int = 100, cifar10_test_per_class: int = 10,
                        cifar100_train_per_class: int = 20, cifar100_test_per_class: int = 5, seed: int = 0) -> Path:
    """Random images in the extracted layout of the official python-version archives, under ``root``:
    ``cifar-10-batches-py/`` (data_batch_1..5, test_batch, batches.meta) and ``cifar-100-python/``
    (train, test, meta): pickled dicts with b"data" uint8 (N, 3072) and b"labels" / b"fine_labels".

    contrastlab reads an extracted folder with structural checks instead of the archive's MD5, so
    these folders load like the real data. Returns ``root``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    folder = root / CIFAR10_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    data, labels = _class_balanced(rng, 10, cifar10_train_per_class)
    for i, (part, part_labels) in enumerate(zip(np.array_split(data, 5), np.array_split(np.asarray(labels), 5)), start=1):
        _dump(folder / f"data_batch_{i}", {b"batch_label": f"training batch {i} of 5".encode(), b"data": part,
                                            b"labels": [int(v) for v in part_labels]})
    data, labels = _class_balanced(rng, 10, cifar10_test_per_class)
    _dump(folder / "test_batch", {b"batch_label": b"testing batch 1 of 1", b"data": data, b"labels": labels})
    _dump(folder / "batches.meta", {b"label_names": [f"class{i}".encode() for i in range(10)], b"num_vis": 3072})

    folder = root / CIFAR100_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for split, per_class in (("train", cifar100_train_per_class), ("test", cifar100_test_per_class)):
        data, fine = _class_balanced(rng, 100, per_class)
        _dump(folder / split, {b"data": data, b"fine_labels": fine, b"coarse_labels": [v // 5 for v in fine]})
    _dump(folder / "meta", {b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
                            b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]})
    return root


def cifar_present(root: str | Path) -> bool:
    """Whether ``root`` holds CIFAR-10 and CIFAR-100 as official archives or extracted folders."""
    root = Path(root)
    return all((root / archive).is_file() or (root / folder).is_dir() for archive, folder in
               (("cifar-10-python.tar.gz", CIFAR10_FOLDER), ("cifar-100-python.tar.gz", CIFAR100_FOLDER)))
