"""CIFAR-10 and CIFAR-100 from the official python-version archives.

Under the data root, the archive (``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``,
MD5-verified) is read directly; without it, its extracted folder (``cifar-10-batches-py`` /
``cifar-100-python``) is read, with structural checks instead of a checksum. CIFAR-100 uses
the fine labels. :func:`download` is the only function in contrastlab that touches the network.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import os
import pickle
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError
from urllib.request import urlopen

import numpy as np

from ..errors import DatasetError
from ..registry import UnknownNameError, lookup
from ..utils.io import atomic_path, cached_file_digest
from ..utils.progress import progress_bar
from .imageset import ImageSet, real_imageset, resolve_root

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CifarArchive:
    """Where one CIFAR dataset comes from and how its python pickles are laid out."""

    url: str
    md5: str
    filename: str  # the archive under the data root
    folder: str  # the folder it extracts to
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: bytes
    names_key: bytes
    num_classes: int


ARCHIVES: dict[str, CifarArchive] = {
    "cifar10": CifarArchive(
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        filename="cifar-10-python.tar.gz",
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        meta_file="batches.meta",
        label_key=b"labels",
        names_key=b"label_names",
        num_classes=10,
    ),
    "cifar100": CifarArchive(
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        filename="cifar-100-python.tar.gz",
        folder="cifar-100-python",
        train_files=("train",),
        test_files=("test",),
        meta_file="meta",
        label_key=b"fine_labels",
        names_key=b"fine_label_names",
        num_classes=100,
    ),
}


def _spec(name: str) -> CifarArchive:
    try:
        return lookup(ARCHIVES, name, "CIFAR dataset")
    except UnknownNameError as error:
        raise DatasetError(str(error)) from None


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only what the CIFAR files hold (dicts, lists, bytes, numpy arrays): a
    tampered archive cannot run code on load."""

    _allowed = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 protocol-2 pickles spell bytes
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._allowed:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _unpickle(raw: bytes) -> dict:
    obj = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
    if not isinstance(obj, dict):
        raise pickle.UnpicklingError(f"expected a dict, found {type(obj).__name__}")
    return obj


def _stamp(path: Path) -> tuple:
    """(path, size, mtime) of a file, or of every file of a folder."""
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    return (str(path),) + tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file())


def find_source(name: str, root: Path) -> Path:
    """The archive ``root/<filename>`` if present, else the folder ``root/<folder>``."""
    spec = _spec(name)
    archive, folder = root / spec.filename, root / spec.folder
    if archive.is_file():
        return archive
    if folder.is_dir():
        return folder
    raise DatasetError(
        f"{name} not found: looked for {archive} and {folder}/; run `contrastlab data download {name}` "
        f"or copy {spec.filename} from {spec.url} there (data root: --set data.root=DIR or env CONTRASTLAB_DATA)"
    )


def _read_members(name: str, source: Path, wanted: list[str]) -> dict[str, bytes]:
    """Raw bytes of the pickles named ``wanted`` from the archive or the extracted folder."""
    spec = ARCHIVES[name]
    hint = f"delete it and run `contrastlab data download {name}`"
    if source.is_dir():
        missing = [m for m in wanted if not (source / m).is_file()]
        if missing:
            raise DatasetError(f"{name}: {source}/ lacks {', '.join(missing)}; {hint}")
        return {m: (source / m).read_bytes() for m in wanted}
    actual = cached_file_digest(source, "md5")
    if actual != spec.md5:
        raise DatasetError(f"{name}: {source} has MD5 {actual}, expected {spec.md5} (corrupt or incomplete); {hint}")
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(source, "r:gz") as tar:
            for member in tar:
                short = member.name.split("/", 1)[-1] if member.name.startswith(spec.folder + "/") else None
                if short in wanted and member.isfile():
                    found[short] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        raise DatasetError(f"{name}: {source} is corrupt or truncated ({error}); {hint}") from None
    missing = [m for m in wanted if m not in found]
    if missing:
        raise DatasetError(f"{name}: {source} lacks {spec.folder}/{', '.join(missing)}; {hint}")
    return found


@functools.lru_cache(maxsize=2)
def _read_all(name: str, source_key: tuple) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    """Both splits of ``name`` from the source in ``source_key[0]``: {split: (images (N,32,32,3), labels (N,))}."""
    spec = ARCHIVES[name]
    source = Path(source_key[0])
    members = _read_members(name, source, [*spec.train_files, *spec.test_files, spec.meta_file])
    hint = f"delete it and run `contrastlab data download {name}`"
    try:
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in _unpickle(members[spec.meta_file])[spec.names_key]]
        splits = {}
        for split, files in (("train", spec.train_files), ("test", spec.test_files)):
            images, labels = [], []
            for member in files:
                batch = _unpickle(members[member])
                data = np.asarray(batch[b"data"], dtype=np.uint8)
                batch_labels = np.asarray(batch[spec.label_key], dtype=np.int64)
                if data.ndim != 2 or data.shape[1] != 3072 or len(batch_labels) != len(data):
                    raise ValueError(f"{member} holds data {data.shape} and {len(batch_labels)} labels")
                images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
                labels.append(batch_labels)
            splits[split] = (np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels))
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError, AttributeError, IndexError) as error:
        raise DatasetError(f"{name}: {source} holds a corrupt or truncated file ({error}); {hint}") from None
    if len(names) != spec.num_classes:
        raise DatasetError(f"{name}: {source} names {len(names)} classes, expected {spec.num_classes}; {hint}")
    for split, (_, labels) in splits.items():
        if len(labels) and (labels.min() < 0 or labels.max() >= spec.num_classes):
            raise DatasetError(f"{name}: {source} has {split} labels outside 0..{spec.num_classes - 1}; {hint}")
    for images, labels in splits.values():
        images.setflags(write=False)
        labels.setflags(write=False)
    return splits, names


def load_cifar(name: str, split: str, root: str | os.PathLike | None = None, *, image_size: int | None = None,
               channels: int | None = None, per_class: int | None = None) -> ImageSet:
    """One split of CIFAR-10 / CIFAR-100 (fine labels): images (N, 32, 32, 3) uint8 at native size."""
    source = find_source(name, resolve_root(root))
    key = _stamp(source)
    splits, names = _read_all(name, key)
    return real_imageset(name, split, splits, names, image_size=image_size, channels=channels,
                         per_class=per_class, source_key=key)


def download(name: str, root: str | os.PathLike | None = None, progress: bool = False) -> Path:
    """Download the official archive of ``name`` ("cifar10" / "cifar100") into the data root.

    Streams to a temporary file, checks the MD5, then renames it into place; an existing
    archive with the right MD5 is kept as is, one with a wrong MD5 is an error (never
    overwritten). Returns the archive's path.
    """
    spec = _spec(name)
    target = resolve_root(root) / spec.filename
    if target.exists():
        actual = cached_file_digest(target, "md5")
        if actual == spec.md5:
            log.info("%s already present at %s", name, target)
            return target
        raise DatasetError(f"{target} exists but has MD5 {actual}, expected {spec.md5}; delete it to download again")
    log.info("downloading %s from %s", name, spec.url)
    try:
        response = urlopen(spec.url, timeout=60)
    except (URLError, OSError, ValueError) as error:
        raise DatasetError(f"could not download {spec.url}: {getattr(error, 'reason', error)}") from None
    with response:
        length = response.headers.get("Content-Length") if getattr(response, "headers", None) else None
        total = int(length) if length and length.isdigit() else 0
        digest, received = hashlib.md5(), 0
        with atomic_path(target) as tmp, open(tmp, "wb") as out:
            with progress_bar(total or None, f"download {spec.filename}", enabled=progress) as advance:
                try:
                    for chunk in iter(lambda: response.read(1 << 20), b""):
                        out.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
                        advance(len(chunk))
                except (URLError, OSError) as error:
                    raise DatasetError(f"download of {spec.url} broke off after {received} bytes: {error}") from None
            if total and received != total:
                raise DatasetError(f"download of {spec.url} is incomplete: {received} of {total} bytes")
            if digest.hexdigest() != spec.md5:
                raise DatasetError(f"downloaded {spec.url} has MD5 {digest.hexdigest()}, expected {spec.md5}; nothing was written")
    log.info("saved %s (%d bytes)", target, received)
    return target
