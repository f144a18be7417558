"""Atomic, self-describing artifacts.

Every artifact ``X.ext`` has a JSON sidecar ``X.json`` written *after* the data, so a
sidecar's presence means its data file is complete. Every write goes to a temporary
file in the same folder and is renamed into place, so a killed process never leaves a
half-written file under the final name.

Files are created with the permissions the umask allows (0644 under the usual 022), like any
other program's output. A write that the storage refuses (permission, read-only file system,
full disk) is a one-line :class:`StorageError` that names the path, and leaves no temporary
behind; a stored file that cannot be parsed is a :class:`CorruptFileError`.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import functools
import hashlib
import io
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ContrastlabError, CorruptFileError, StorageError


TEMPORARY_SUFFIX = ".tmp"  # atomic_path's temporaries: ".<name>.<random>.tmp" beside the target
_CHUNK = 1 << 20

# errno -> (what it means, what to do about it)
_CAUSES = {
    errno.EACCES: ("permission denied", "choose a writable --out or fix the folder's permissions"),
    errno.EPERM: ("permission denied", "choose a writable --out or fix the folder's permissions"),
    errno.EROFS: ("read-only file system", "choose another --out on a writable file system"),
    errno.ENOSPC: ("no space left on device", "free space or choose another --out"),
    errno.EDQUOT: ("disk quota exceeded", "free space or choose another --out"),
}


def _describe(exc: OSError, path: Path, *also: Path | None) -> str:
    """``"no space left on device (errno ENOSPC)"``, plus where, when the failing path is not ``path``."""
    code = exc.errno
    cause = _CAUSES.get(code, (exc.strerror or str(exc) or type(exc).__name__, ""))[0]
    text = cause[:1].lower() + cause[1:]
    if code is not None:
        text += f" (errno {errno.errorcode.get(code, code)})"
    where = getattr(exc, "filename", None)
    if where is not None and str(where) not in {str(path), *(str(p) for p in also if p is not None)}:
        text += f" at {where}"
    return text


def storage_error(path: str | os.PathLike, exc: OSError, action: str = "write", *also: Path | None) -> StorageError:
    """A one-line :class:`StorageError` for ``exc``, raised while trying to ``action`` ``path``."""
    path = Path(path)
    advice = _CAUSES.get(exc.errno, ("", ""))[1]
    if not advice:
        advice = "check the path, or choose another --out" if action == "write" else "check the path and its permissions"
    error = StorageError(f"cannot {action} {path}: {_describe(exc, path, *also)}; {advice}")
    error.errno = exc.errno  # so `except OSError as e: e.errno` still tells the cause
    return error


def _is_storage_failure(exc: BaseException) -> bool:
    """An OSError of the file system (not a network error, not one of ours already)."""
    return isinstance(exc, OSError) and not isinstance(exc, ContrastlabError) and exc.errno is not None


@contextlib.contextmanager
def storage_errors(path: str | os.PathLike, action: str = "write", *also: Path | None,
                   missing: bool = False) -> Iterator[None]:
    """Turn a file-system error raised inside into :func:`storage_error` (one line naming ``path``).
    ``missing=True`` lets FileNotFoundError through, for callers that test for a missing file."""
    try:
        yield
    except OSError as exc:
        if not _is_storage_failure(exc) or (missing and isinstance(exc, FileNotFoundError)):
            raise
        raise storage_error(path, exc, action, *also) from None


def _create_temporary(path: Path) -> Path:
    """Create an empty ``.<name>.<random>.tmp`` beside ``path``. Mode 0666 before the umask (unlike
    ``tempfile.mkstemp``'s 0600), so the renamed file has the permissions of any other output."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{TEMPORARY_SUFFIX}"
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(errno.EEXIST, "no unused temporary name", str(path.parent))


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    The caller writes the temporary (by name: it exists, empty). Any file-system error on the
    way, creating the folder, writing, or renaming, is a :class:`StorageError` naming ``path``;
    the temporary is removed and a previous ``path`` is left as it was.
    """
    path = Path(path)
    with storage_errors(path):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError as exc:  # a file stands where a folder must be
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), exc.filename) from None
        tmp_path = _create_temporary(path)
    try:
        with storage_errors(path, "write", tmp_path):
            yield tmp_path
            os.replace(tmp_path, path)
    finally:
        if os.path.lexists(tmp_path):
            _unlink_quietly(tmp_path)


def remove_orphaned_temporaries(folder: str | os.PathLike) -> int:
    """Delete the temporary files that :func:`atomic_path` left under ``folder`` when its process
    was killed mid-write; return how many. Only for a folder no other process is writing to."""
    orphans = [p for p in Path(folder).rglob(f".*{TEMPORARY_SUFFIX}") if p.is_file()]
    for orphan in orphans:
        orphan.unlink()
    return len(orphans)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path``, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return Path(path)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n"  # before any file exists
    return write_text(path, text)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _read_bytes(path: Path) -> bytes:
    """The bytes of ``path``. A missing file stays FileNotFoundError (callers test for it); any other
    failure to read is a :class:`StorageError`."""
    with storage_errors(path, "read", missing=True):
        return path.read_bytes()


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file. Invalid, truncated or non-UTF-8 content is a :class:`CorruptFileError`
    (a ValueError) naming the file; a missing file is FileNotFoundError."""
    path = Path(path)
    data = _read_bytes(path)
    try:
        return json.loads(data.decode("utf-8"))
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise CorruptFileError(f"corrupt JSON in {path}: {first_line(exc)}; delete it to recompute") from None


def read_json_object(path: str | os.PathLike, what: str = "JSON file") -> dict:
    """:func:`read_json` for a file that must hold a JSON object (a sidecar, a manifest): anything
    else is a :class:`CorruptFileError` that says what ``what`` holds instead."""
    obj = read_json(path)
    if not isinstance(obj, dict):
        found = {list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number", type(None): "null"}
        raise CorruptFileError(
            f"corrupt {what} {path}: holds {found.get(type(obj), type(obj).__name__)}, not a JSON object; delete it to recompute")
    return obj


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def csv_text(rows: list[dict], fieldnames: list[str] | None = None) -> str:
    """Rows of dicts as CSV text with a header (the first row's keys unless ``fieldnames``)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fieldnames or (list(rows[0]) if rows else []))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_csv(path: str | os.PathLike, rows: list[dict], fieldnames: list[str] | None = None) -> Path:
    """Write rows of dicts as a CSV file, atomically."""
    return write_text(path, csv_text(rows, fieldnames))


def sidecar_path(path: str | os.PathLike) -> Path:
    """``run/x.npy`` -> ``run/x.json``."""
    return Path(path).with_suffix(".json")


def write_with_sidecar(path: str | os.PathLike, write_data, meta: dict) -> Path:
    """Write an artifact and then its sidecar ``meta`` (the completion marker): ``write_data(tmp)``
    fills the data's temporary. An old sidecar is removed first, so the pair is never new data
    under an old description; when the sidecar cannot be written the new data is removed too."""
    path = Path(path)
    sidecar = sidecar_path(path)
    text = json.dumps(meta, indent=2, sort_keys=True, default=_json_default) + "\n"
    with storage_errors(sidecar):
        if os.path.lexists(sidecar):
            sidecar.unlink()
    with atomic_path(path) as tmp:
        write_data(tmp)
    try:
        write_text(sidecar, text)
    except BaseException:
        _unlink_quietly(path)
        raise
    return path


def save_array(path: str | os.PathLike, array: np.ndarray, meta: dict) -> Path:
    """Write ``array`` as .npy, then its sidecar ``meta`` (the completion marker)."""
    array = np.asarray(array)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array)

    return write_with_sidecar(path, write, meta)


def check_finite(array: np.ndarray, what: str) -> np.ndarray:
    """``array`` unchanged when every value is finite; else a :class:`CorruptFileError` naming ``what``."""
    array = np.asarray(array)
    if np.issubdtype(array.dtype, np.inexact) and not np.isfinite(array).all():
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise CorruptFileError(
            f"{what} holds NaN/inf ({bad} of {array.size} values); the file is corrupt or the run diverged: "
            "delete it to recompute")
    return array


def load_array(path: str | os.PathLike, check_finite: bool = False) -> tuple[np.ndarray, dict]:
    """Read an array saved by :func:`save_array` with its sidecar. An unreadable .npy or a sidecar
    that is not a JSON object is a :class:`CorruptFileError`; so, with ``check_finite``, is an array
    holding NaN or inf (for arrays that can never hold them, e.g. prediction snapshots)."""
    path = Path(path)
    meta = read_json_object(sidecar_path(path), "sidecar")
    try:
        with storage_errors(path, "read", missing=True), open(path, "rb") as f:
            array = np.load(f, allow_pickle=False)
    except (ValueError, EOFError) as exc:
        raise CorruptFileError(f"corrupt array file {path}: {first_line(exc)}; delete it to recompute") from None
    if check_finite:
        _check_finite(array, f"array file {path}")
    return array, meta


_check_finite = check_finite  # load_array's parameter shadows the function's name


def is_complete(path: str | os.PathLike) -> bool:
    """True when the artifact and its sidecar both exist."""
    return Path(path).exists() and sidecar_path(path).exists()


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """The digest (hex) of a file's bytes with hashlib's ``algorithm`` (SHA-256 by default), read in 1 MiB chunks."""
    path = Path(path)
    digest = hashlib.new(algorithm)
    with storage_errors(path, "read"), open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


@functools.lru_cache(maxsize=64)
def _file_digest_cached(path: str, size: int, mtime_ns: int, algorithm: str) -> str:
    return file_digest(path, algorithm)


def cached_file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """:func:`file_digest`, memoized while the file's path, size and modification time stay the same
    (a dataset archive or an external checkpoint is hashed once per process, not once per use)."""
    with storage_errors(Path(path), "read"):
        stat = os.stat(path)
    return _file_digest_cached(str(path), stat.st_size, stat.st_mtime_ns, algorithm)


def file_record(path: str | os.PathLike) -> dict[str, Any]:
    """``{"bytes", "mtime_ns", "sha256"}`` of a file: what a manifest records to notice a change."""
    path = Path(path)
    with storage_errors(path, "read"):
        stat = path.stat()
    return {"bytes": int(stat.st_size), "mtime_ns": int(stat.st_mtime_ns), "sha256": file_digest(path)}
