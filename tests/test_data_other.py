"""Fashion-MNIST (fabricated IDX files), digits, the ImageSet type and the shared transforms."""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from contrastlab.data import DATASETS, ImageSet, load_dataset
from contrastlab.data import fmnist
from contrastlab.data.imageset import channel_stats, convert_channels, first_per_class, resize_images, resolve_root
from contrastlab.errors import DatasetError


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def make_fmnist(folder: Path, gz: bool = True, n_train: int = 30, n_test: int = 10) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) * 3) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(n_test) % 10,
    }
    for stem, array in arrays.items():
        blob = _idx(array)
        if gz:
            (folder / (stem + ".gz")).write_bytes(gzip.compress(blob))
        else:
            (folder / stem).write_bytes(blob)
    return arrays


@pytest.fixture(autouse=True)
def no_system_fmnist(monkeypatch, tmp_path):
    """Tests see only the files they fabricate, whatever the machine has installed."""
    monkeypatch.setattr(fmnist, "SYSTEM_DIRS", (tmp_path / "system-fashion-mnist",))


def test_fashion_mnist_gzipped_idx(tmp_path):
    arrays = make_fmnist(tmp_path / "fashion-mnist")
    train = load_dataset("fashion-mnist", "train", tmp_path)
    test = load_dataset("fashion-mnist", "test", tmp_path)
    assert train.images.shape == (30, 28, 28, 1) and train.images.dtype == np.uint8
    np.testing.assert_array_equal(train.images[..., 0], arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(train.labels, arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(test.labels, arrays["t10k-labels-idx1-ubyte"])
    assert train.classes[0] == "T-shirt/top" and train.classes[9] == "Ankle boot"
    assert train.mean == test.mean and len(train.mean) == 1
    assert train.images.flags.writeable and train.labels.flags.writeable  # torch warns on read-only arrays


def test_fashion_mnist_raw_idx_in_torchvision_layout_resized_to_rgb(tmp_path):
    make_fmnist(tmp_path / "FashionMNIST" / "raw", gz=False)
    data = load_dataset("fashion-mnist", "train", tmp_path, image_size=16, channels=3, per_class=2)
    assert data.images.shape == (20, 16, 16, 3)
    assert np.array_equal(data.images[..., 0], data.images[..., 2])  # gray replicated
    assert np.bincount(data.labels).tolist() == [2] * 10


def test_fashion_mnist_found_where_debian_installs_it(tmp_path, monkeypatch):
    system = tmp_path / "usr-share"
    make_fmnist(system)
    monkeypatch.setattr(fmnist, "SYSTEM_DIRS", (system,))
    assert len(load_dataset("fashion-mnist", "test", tmp_path / "empty-root")) == 10
    assert fmnist.DEBIAN_DIR == Path("/usr/share/datasets/fashion-mnist")
    assert fmnist.candidate_dirs(tmp_path)[-1] == system


def test_fashion_mnist_missing_says_where_and_how(tmp_path):
    with pytest.raises(DatasetError) as info:
        load_dataset("fashion-mnist", "train", tmp_path)
    message = str(info.value)
    assert str(tmp_path / "fashion-mnist") in message and "system-fashion-mnist" in message
    assert "dataset-fashion-mnist" in message and "\n" not in message


def test_fashion_mnist_truncated_file(tmp_path):
    make_fmnist(tmp_path / "fashion-mnist", gz=False)
    images = tmp_path / "fashion-mnist" / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])
    with pytest.raises(DatasetError, match="truncated"):
        load_dataset("fashion-mnist", "test", tmp_path)


def test_fashion_mnist_corrupt_gzip(tmp_path):
    make_fmnist(tmp_path / "fashion-mnist")
    labels = tmp_path / "fashion-mnist" / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:20])
    with pytest.raises(DatasetError, match="corrupt or truncated"):
        load_dataset("fashion-mnist", "train", tmp_path)


def test_digits_splits_are_disjoint_and_stratified():
    train = load_dataset("digits", "train")
    test = load_dataset("digits", "test")
    assert train.images.shape[1:] == (8, 8, 1) and len(train) + len(test) == 1797
    assert len(test) == 355
    counts = np.bincount(test.labels)
    assert counts.min() >= 34 and counts.max() <= 36
    assert train.images.max() == 255 and train.mean == test.mean
    train_rows = {image.tobytes() for image in train.images}
    assert sum(image.tobytes() in train_rows for image in test.images) < 5  # only accidental duplicates
    assert train.classes == [str(d) for d in range(10)]


def test_digits_resized_and_subsampled():
    data = load_dataset("digits", "train", image_size=16, channels=3, per_class=5)
    assert data.images.shape == (50, 16, 16, 3)
    assert len(data.mean) == 3


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(DatasetError) as info:
        load_dataset("imagenet", "train")
    for name in DATASETS:
        assert name in str(info.value)


def test_imageset_checks_its_arrays():
    images = np.zeros((4, 8, 8, 3), dtype=np.uint8)
    data = ImageSet(images, np.array([0, 1, 0, 1], dtype=np.int32), ["a", "b"], (0.5,) * 3, (0.2,) * 3, "toy")
    assert data.labels.dtype == np.int64 and len(data) == 4 and data.num_classes == 2
    with pytest.raises(ValueError, match="uint8"):
        ImageSet(images.astype(np.float32), data.labels, ["a", "b"], (0.5,) * 3, (0.2,) * 3)
    with pytest.raises(ValueError, match="labels must lie"):
        ImageSet(images, np.array([0, 1, 2, 0]), ["a", "b"], (0.5,) * 3, (0.2,) * 3)
    with pytest.raises(ValueError, match="mean/std"):
        ImageSet(images, data.labels, ["a", "b"], (0.5,), (0.2,))


def test_resize_convert_and_statistics_helpers():
    images = np.full((2, 8, 8, 3), 200, dtype=np.uint8)
    images[:, :, :, 1] = 100
    assert resize_images(images, 4).shape == (2, 4, 4, 3)
    np.testing.assert_array_equal(resize_images(images, 4)[..., 1], 100)  # flat images stay flat
    gray = convert_channels(images, 1)
    assert gray.shape == (2, 8, 8, 1) and gray[0, 0, 0, 0] == round(0.299 * 200 + 0.587 * 100 + 0.114 * 200)
    with pytest.raises(DatasetError, match="channels"):
        convert_channels(images, 2)
    mean, std = channel_stats(images)
    np.testing.assert_allclose(mean, (200 / 255, 100 / 255, 200 / 255))
    np.testing.assert_allclose(std, (0, 0, 0), atol=1e-6)
    np.testing.assert_array_equal(first_per_class(np.array([1, 0, 1, 1, 0, 2]), 2), [0, 1, 2, 4, 5])


def test_resize_takes_the_caches_read_only_arrays_without_a_warning():
    """The dataset caches' arrays are read-only, and a resized dataset's statistics come from the
    resized cache; torch warns (once per process, always here) when it wraps a read-only array."""
    was = torch.is_warn_always_enabled()
    torch.set_warn_always(True)
    frozen = np.arange(2 * 8 * 8 * 3, dtype=np.uint8).reshape(2, 8, 8, 3)
    frozen.flags.writeable = False
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message="The given NumPy array is not writable")
            with pytest.raises(UserWarning):  # what resize_images avoids
                torch.from_numpy(frozen)
            resized = resize_images(frozen, 4)
    finally:
        torch.set_warn_always(was)
    np.testing.assert_array_equal(resized, resize_images(frozen.copy(), 4))


def test_root_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("CONTRASTLAB_DATA", raising=False)
    assert resolve_root(None) == Path("~/.cache/contrastlab").expanduser()
    monkeypatch.setenv("CONTRASTLAB_DATA", str(tmp_path))
    assert resolve_root(None) == tmp_path
    assert resolve_root(tmp_path / "x") == tmp_path / "x"
