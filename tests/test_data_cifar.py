"""The CIFAR reader and downloader on small fabricated archives in the official format."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from contrastlab.data import cifar, download, load_dataset
from contrastlab.data.imageset import channel_stats
from contrastlab.errors import DatasetError

CIFAR10_COUNTS = {"data_batch_1": 7, "data_batch_2": 6, "data_batch_3": 6, "data_batch_4": 6, "data_batch_5": 5, "test_batch": 8}


def _batch(rng: np.random.Generator, n: int, first: int) -> tuple[dict, np.ndarray]:
    """A CIFAR-10 batch of n random images labelled first, first + 1, ... (mod 10)."""
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = (first + np.arange(n)) % 10
    return {b"batch_label": b"fabricated", b"data": data, b"labels": [int(v) for v in labels]}, labels


def _write_members(members: dict[str, dict], folder: Path | None, archive: Path | None, prefix: str) -> None:
    blobs = {name: pickle.dumps(obj, protocol=2) for name, obj in members.items()}
    if folder is not None:
        folder.mkdir(parents=True)
        for name, blob in blobs.items():
            (folder / name).write_bytes(blob)
    if archive is not None:
        with tarfile.open(archive, "w:gz") as tar:
            for name, blob in blobs.items():
                info = tarfile.TarInfo(f"{prefix}/{name}")
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))


def make_cifar10(root: Path, as_folder: bool = False, seed: int = 0) -> dict[str, np.ndarray]:
    """Fabricate cifar-10-python.tar.gz (or its folder) under root; return the raw rows per member."""
    rng = np.random.default_rng(seed)
    members, raw, first = {}, {}, 0
    for name, n in CIFAR10_COUNTS.items():
        members[name], labels = _batch(rng, n, first)
        first += n
        raw[name] = members[name][b"data"]
        raw[name + ":labels"] = labels
    members["batches.meta"] = {b"label_names": [f"class{i}".encode() for i in range(10)], b"num_vis": 3072}
    spec = cifar.ARCHIVES["cifar10"]
    _write_members(members, root / spec.folder if as_folder else None, None if as_folder else root / spec.filename, spec.folder)
    return raw


def make_cifar100(root: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    members, raw = {}, {}
    for name, n in (("train", 12), ("test", 7)):
        fine = (np.arange(n) * 7 + 3) % 100
        coarse = fine // 5
        members[name] = {b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
                         b"fine_labels": [int(v) for v in fine], b"coarse_labels": [int(v) for v in coarse]}
        raw[name + ":fine"] = fine
    members["meta"] = {b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
                       b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]}
    spec = cifar.ARCHIVES["cifar100"]
    _write_members(members, None, root / spec.filename, spec.folder)
    return raw


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def trust(monkeypatch):
    """Make the reader accept a fabricated archive: set the expected MD5 to the file's."""
    def accept(name: str, path: Path) -> None:
        monkeypatch.setitem(cifar.ARCHIVES, name, dataclasses.replace(cifar.ARCHIVES[name], md5=_md5(path)))
    return accept


def test_cifar10_archive_shapes_labels_and_pixel_layout(tmp_path, trust):
    raw = make_cifar10(tmp_path)
    trust("cifar10", tmp_path / "cifar-10-python.tar.gz")
    train = load_dataset("cifar10", "train", tmp_path)
    test = load_dataset("cifar10", "test", tmp_path)
    assert train.images.shape == (30, 32, 32, 3) and train.images.dtype == np.uint8
    assert test.images.shape == (8, 32, 32, 3)
    assert train.labels.dtype == np.int64
    expected_labels = np.concatenate([raw[f"data_batch_{i}:labels"] for i in range(1, 6)])
    np.testing.assert_array_equal(train.labels, expected_labels)
    np.testing.assert_array_equal(test.labels, raw["test_batch:labels"])
    assert train.classes == [f"class{i}" for i in range(10)] and train.num_classes == 10
    # Rows are 1024 red, 1024 green, 1024 blue values, each row-major 32x32.
    row = raw["data_batch_1"][2]
    image = train.images[2]
    assert image[0, 0, 0] == row[0] and image[0, 0, 1] == row[1024] and image[0, 0, 2] == row[2048]
    assert image[1, 5, 2] == row[2048 + 32 + 5]
    # Both splits carry the train split's statistics.
    assert train.mean == test.mean and train.std == test.std
    np.testing.assert_allclose(train.mean, channel_stats(train.images)[0])
    assert train.name == "cifar10"


def test_cifar100_uses_fine_labels_and_names(tmp_path, trust):
    raw = make_cifar100(tmp_path)
    trust("cifar100", tmp_path / "cifar-100-python.tar.gz")
    train = load_dataset("cifar100", "train", tmp_path)
    test = load_dataset("cifar100", "test", tmp_path)
    np.testing.assert_array_equal(train.labels, raw["train:fine"])
    np.testing.assert_array_equal(test.labels, raw["test:fine"])
    assert train.num_classes == 100 and train.classes[3] == "fine3"


def test_extracted_folder_is_read_without_archive(tmp_path):
    raw = make_cifar10(tmp_path, as_folder=True)
    test = load_dataset("cifar10", "test", tmp_path)
    np.testing.assert_array_equal(test.images.transpose(0, 3, 1, 2).reshape(len(test), -1), raw["test_batch"])


def test_per_class_resize_and_grayscale(tmp_path, trust):
    make_cifar10(tmp_path)
    trust("cifar10", tmp_path / "cifar-10-python.tar.gz")
    full = load_dataset("cifar10", "train", tmp_path)
    small = load_dataset("cifar10", "train", tmp_path, per_class=2, image_size=16, channels=1)
    assert small.images.shape == (20, 16, 16, 1)
    assert np.bincount(small.labels, minlength=10).tolist() == [2] * 10
    keep = np.concatenate([np.flatnonzero(full.labels == c)[:2] for c in range(10)])
    np.testing.assert_array_equal(small.labels, full.labels[np.sort(keep)])  # original order kept
    assert len(small.mean) == 1
    # Statistics are those of the whole train split under the same conversion.
    other = load_dataset("cifar10", "test", tmp_path, per_class=1, image_size=16, channels=1)
    assert other.mean == small.mean and other.std == small.std


def test_wrong_checksum_is_an_error(tmp_path):
    make_cifar10(tmp_path)
    with pytest.raises(DatasetError, match="MD5 .* expected c58f30108f718f92721af3b95e74349a"):
        load_dataset("cifar10", "train", tmp_path)


def test_truncated_archive_is_an_error(tmp_path, trust):
    make_cifar10(tmp_path)
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DatasetError, match="MD5"):  # the official checksum catches it first
        load_dataset("cifar10", "train", tmp_path)
    trust("cifar10", archive)  # and without a checksum the reader still refuses it
    with pytest.raises(DatasetError, match="corrupt or truncated"):
        load_dataset("cifar10", "train", tmp_path)


def test_corrupt_pickle_in_folder_is_an_error(tmp_path):
    make_cifar10(tmp_path, as_folder=True)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:100])
    with pytest.raises(DatasetError, match="corrupt or truncated"):
        load_dataset("cifar10", "train", tmp_path)


def test_pickle_that_runs_code_is_refused(tmp_path):
    make_cifar10(tmp_path, as_folder=True)

    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    (tmp_path / "cifar-10-batches-py" / "batches.meta").write_bytes(pickle.dumps({b"label_names": Exploit()}))
    with pytest.raises(DatasetError, match="refusing to load"):
        load_dataset("cifar10", "test", tmp_path)


def test_missing_files_say_where_and_how(tmp_path):
    with pytest.raises(DatasetError) as info:
        load_dataset("cifar100", "train", tmp_path)
    message = str(info.value)
    assert str(tmp_path / "cifar-100-python.tar.gz") in message
    assert str(tmp_path / "cifar-100-python") in message
    assert "contrastlab data download cifar100" in message
    assert "\n" not in message


def test_root_defaults_to_env_variable(tmp_path, monkeypatch):
    make_cifar10(tmp_path, as_folder=True)
    monkeypatch.setenv("CONTRASTLAB_DATA", str(tmp_path))
    assert len(load_dataset("cifar10", "test")) == 8


def _serve(monkeypatch, name: str, archive: Path, md5: str | None = None) -> None:
    """Point the official URL of ``name`` at a local file (urlopen reads file:// URLs)."""
    spec = dataclasses.replace(cifar.ARCHIVES[name], url=archive.as_uri(), md5=md5 or _md5(archive))
    monkeypatch.setitem(cifar.ARCHIVES, name, spec)


def test_download_writes_verified_archive_and_keeps_it(tmp_path, monkeypatch):
    source = tmp_path / "server"
    source.mkdir()
    make_cifar10(source)
    served = source / "cifar-10-python.tar.gz"
    _serve(monkeypatch, "cifar10", served)
    root = tmp_path / "data"
    path = download("cifar10", root, progress=True)
    assert path == root / "cifar-10-python.tar.gz"
    assert path.read_bytes() == served.read_bytes()
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-python.tar.gz"]  # no temporary left
    assert len(load_dataset("cifar10", "test", root)) == 8

    def no_network(*args, **kwargs):
        raise AssertionError("an archive that is present must not be downloaded again")

    monkeypatch.setattr(cifar, "urlopen", no_network)
    assert download("cifar10", root) == path


def test_download_with_wrong_checksum_writes_nothing(tmp_path, monkeypatch):
    source = tmp_path / "server"
    source.mkdir()
    make_cifar10(source)
    _serve(monkeypatch, "cifar10", source / "cifar-10-python.tar.gz", md5="0" * 32)
    root = tmp_path / "data"
    with pytest.raises(DatasetError, match="MD5"):
        download("cifar10", root)
    assert not root.exists() or list(root.iterdir()) == []


def test_download_never_overwrites_an_existing_file(tmp_path, monkeypatch):
    source = tmp_path / "server"
    source.mkdir()
    make_cifar10(source)
    _serve(monkeypatch, "cifar10", source / "cifar-10-python.tar.gz")
    root = tmp_path / "data"
    root.mkdir()
    (root / "cifar-10-python.tar.gz").write_bytes(b"something else")
    with pytest.raises(DatasetError, match="delete it"):
        download("cifar10", root)
    assert (root / "cifar-10-python.tar.gz").read_bytes() == b"something else"


def test_download_network_failure_is_a_dataset_error(tmp_path, monkeypatch):
    _serve(monkeypatch, "cifar100", tmp_path / "does-not-exist.tar.gz", md5="0" * 32)
    with pytest.raises(DatasetError, match="could not download"):
        download("cifar100", tmp_path / "data")


def test_download_knows_only_cifar():
    with pytest.raises(DatasetError, match="cifar10, cifar100"):
        download("synth10")


def test_official_sources():
    assert cifar.ARCHIVES["cifar10"].url == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert cifar.ARCHIVES["cifar10"].md5 == "c58f30108f718f92721af3b95e74349a"
    assert cifar.ARCHIVES["cifar100"].url == "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
    assert cifar.ARCHIVES["cifar100"].md5 == "eb9058c3a382ffc7106e4002c42a8d85"
