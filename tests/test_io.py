"""utils.io: atomic writes with the umask's permissions, one-line storage errors that leave
nothing behind, corrupt JSON / arrays as CorruptFileError, and the manifest helpers."""

import errno
import hashlib
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

import contrastlab.utils.io as io_module
from contrastlab.errors import ContrastlabError, CorruptFileError, StorageError
from contrastlab.utils.io import (
    TEMPORARY_SUFFIX, atomic_path, cached_file_digest, check_finite, file_digest, file_record, is_complete, load_array, read_json,
    read_json_object, remove_orphaned_temporaries, save_array, write_csv, write_json, write_text,
)


def _write_each_way(folder: Path) -> list[Path]:
    """One file through every writer of utils.io."""
    paths = [
        write_json(folder / "a.json", {"x": 1}),
        write_text(folder / "b.txt", "hello\n"),
        write_csv(folder / "c.csv", [{"k": 1, "v": 2}]),
        save_array(folder / "d.npy", np.arange(3.0), {"what": "d"}),
    ]
    with atomic_path(folder / "e.png") as tmp:
        tmp.write_bytes(b"png")
    return paths + [folder / "d.json", folder / "e.png"]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def umask():
    """Set the process umask inside a test; the previous one comes back afterwards."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield os.umask
    os.umask(previous)


# ---- 1. permissions -----------------------------------------------------------------------

@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_get_the_permissions_the_umask_allows(tmp_path, umask, mask, mode):
    umask(mask)
    for path in _write_each_way(tmp_path / "out"):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path.name


def test_an_overwrite_keeps_the_umask_permissions(tmp_path, umask):
    umask(0o022)
    write_json(tmp_path / "a.json", {"x": 1})
    write_json(tmp_path / "a.json", {"x": 2})
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert read_json(tmp_path / "a.json") == {"x": 2}


# ---- 2. storage errors ----------------------------------------------------------------------

def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text
    return text


def test_writing_below_a_regular_file_is_one_line_naming_the_path(tmp_path):
    """A real failure that root cannot bypass: the parent 'folder' is a file."""
    (tmp_path / "runs").write_text("not a folder")
    target = tmp_path / "runs" / "q" / "study.json"
    with pytest.raises(StorageError) as info:
        write_json(target, {"x": 1})
    message = _one_line(info.value)
    assert message.startswith(f"cannot write {target}: ")
    assert "errno" in message and "choose another --out" in message
    assert isinstance(info.value, OSError) and isinstance(info.value, ContrastlabError)
    assert _leftovers(tmp_path) == ["runs"]


@pytest.mark.parametrize("code, cause", [
    (errno.ENOSPC, "no space left on device (errno ENOSPC); free space or choose another --out"),
    (errno.EDQUOT, "disk quota exceeded (errno EDQUOT); free space"),
    (errno.EROFS, "read-only file system (errno EROFS)"),
    (errno.EACCES, "permission denied (errno EACCES)"),
    (errno.EPERM, "permission denied (errno EPERM)"),
    (errno.EIO, "input/output error (errno EIO)"),
])
def test_a_refused_rename_is_storage_error_and_leaves_nothing(tmp_path, monkeypatch, code, cause):
    monkeypatch.setattr(io_module.os, "replace", lambda *a: (_ for _ in ()).throw(OSError(code, os.strerror(code))))
    target = tmp_path / "runs" / "q" / "study.json"
    with pytest.raises(StorageError) as info:
        write_json(target, {"x": 1})
    assert _one_line(info.value).startswith(f"cannot write {target}: {cause}")
    assert info.value.errno == code
    assert _leftovers(tmp_path) == []


def test_a_full_disk_while_writing_leaves_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "result.txt"
    write_text(target, "old\n")
    real_open = open

    class FullFile:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

    def full_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        return FullFile(f) if "w" in mode and str(file).endswith(TEMPORARY_SUFFIX) else f

    monkeypatch.setattr("builtins.open", full_open)
    with pytest.raises(StorageError, match=r"^cannot write .*result\.txt: no space left on device \(errno ENOSPC\)"):
        write_text(target, "new and longer\n")
    monkeypatch.undo()
    assert target.read_text() == "old\n"
    assert _leftovers(tmp_path) == ["result.txt"]


@pytest.mark.parametrize("error, cause", [
    (PermissionError(errno.EACCES, "Permission denied"), "permission denied (errno EACCES)"),
    (OSError(errno.EROFS, "Read-only file system"), "read-only file system (errno EROFS)"),
])
def test_a_folder_that_refuses_new_files_is_storage_error(tmp_path, monkeypatch, error, cause):
    real_open = os.open

    def refusing_open(path, flags, *args, **kwargs):
        if str(path).endswith(TEMPORARY_SUFFIX):
            raise error
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(io_module.os, "open", refusing_open)
    for write in (lambda p: write_json(p, {}), lambda p: write_text(p, "x"), lambda p: write_csv(p, [{"a": 1}]),
                  lambda p: save_array(p, np.zeros(2), {})):
        target = tmp_path / "out" / "file.x"
        with pytest.raises(StorageError) as info:
            write(target)
        assert str(info.value).startswith(f"cannot write {target}: {cause}")
    monkeypatch.undo()
    assert _leftovers(tmp_path) == []


def test_a_folder_that_cannot_be_created_is_storage_error(tmp_path, monkeypatch):
    def refuse(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(StorageError, match=r"^cannot write .*x\.json: permission denied \(errno EACCES\) at .*deep"):
        write_json(tmp_path / "deep" / "x.json", {})


def test_a_failed_sidecar_removes_the_array_so_it_is_never_complete(tmp_path, monkeypatch):
    target = tmp_path / "snap.npy"
    save_array(target, np.zeros(2), {"v": 1})
    real_replace = os.replace

    def refuse_json(src, dst):
        if str(dst).endswith(".json"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(io_module.os, "replace", refuse_json)
    with pytest.raises(StorageError, match="snap.json: no space left"):
        save_array(target, np.ones(2), {"v": 2})
    assert not is_complete(target)
    assert _leftovers(tmp_path) == []


def test_errors_that_are_not_storage_pass_through_and_leave_nothing(tmp_path):
    with pytest.raises(TypeError, match="not JSON serializable"):
        write_json(tmp_path / "a.json", {"x": object()})
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(tmp_path / "b.bin"):
            raise RuntimeError("boom")
    with pytest.raises(ConnectionError):  # a network error while downloading is not the disk's fault
        with atomic_path(tmp_path / "c.bin"):
            raise ConnectionError("reset")
    assert _leftovers(tmp_path) == []


def test_atomic_writes_keep_their_temporary_naming(tmp_path):
    seen = []
    with atomic_path(tmp_path / "x.npy") as tmp:
        seen.append(tmp)
        assert tmp.parent == tmp_path and tmp.name.startswith(".x.npy.") and tmp.name.endswith(TEMPORARY_SUFFIX)
        tmp.write_bytes(b"1")
    assert (tmp_path / "x.npy").read_bytes() == b"1" and not seen[0].exists()
    seen[0].write_bytes(b"orphan")  # what a kill mid-write leaves
    assert remove_orphaned_temporaries(tmp_path) == 1
    assert _leftovers(tmp_path) == ["x.npy"]


# ---- 3. corrupt JSON --------------------------------------------------------------------------

@pytest.mark.parametrize("content", ['{"config_hash": "ab', "not json", "", b"\xff\xfe{}"])
def test_corrupt_json_is_one_line_naming_the_file(tmp_path, content):
    path = tmp_path / "study.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(CorruptFileError) as info:
        read_json(path)
    assert _one_line(info.value).startswith(f"corrupt JSON in {path}: ")
    assert str(info.value).endswith("; delete it to recompute")
    assert isinstance(info.value, ValueError)  # `except ValueError` callers keep working


def test_a_missing_json_file_is_still_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_json(tmp_path / "absent.json")


def test_read_json_object_requires_an_object(tmp_path):
    path = write_json(tmp_path / "x.json", [])
    assert read_json(path) == []
    with pytest.raises(CorruptFileError, match=r"^corrupt sidecar .*x\.json: holds a list, not a JSON object; delete it"):
        read_json_object(path, "sidecar")
    assert read_json_object(write_json(path, {"a": 1}), "sidecar") == {"a": 1}


# ---- 5. arrays ----------------------------------------------------------------------------------

def test_load_array_checks_finiteness_on_request(tmp_path):
    probs = np.full((2, 3, 4), 0.25, dtype=np.float32)
    probs[1, 2, 3] = np.nan
    path = save_array(tmp_path / "snapshots.npy", probs, {"stage": "finetune"})
    array, meta = load_array(path)  # default: unchanged behaviour
    assert meta == {"stage": "finetune"} and np.isnan(array).sum() == 1
    with pytest.raises(CorruptFileError, match=rf"^array file {path} holds NaN/inf \(1 of 24 values\).*delete it"):
        load_array(path, check_finite=True)
    save_array(path, np.arange(4), {})  # integers are always finite
    assert load_array(path, check_finite=True)[0].tolist() == [0, 1, 2, 3]
    with pytest.raises(CorruptFileError, match="^surface holds NaN/inf"):
        check_finite(np.array([1.0, np.inf]), "surface")


def test_a_truncated_array_or_a_list_sidecar_is_corrupt(tmp_path):
    path = save_array(tmp_path / "a.npy", np.arange(100.0), {})
    path.write_bytes(path.read_bytes()[:150])
    with pytest.raises(CorruptFileError, match=rf"^corrupt array file {path}: .*delete it to recompute$"):
        load_array(path)
    save_array(path, np.arange(3.0), {})
    (tmp_path / "a.json").write_text("[]")
    with pytest.raises(CorruptFileError, match="corrupt sidecar .*a.json: holds a list"):
        load_array(path)


# ---- 6. manifest helpers -------------------------------------------------------------------------

def test_file_digest_and_record(tmp_path):
    data = os.urandom(3 * (1 << 20) + 17)  # spans several 1 MiB chunks
    path = tmp_path / "w.bin"
    path.write_bytes(data)
    assert file_digest(path) == hashlib.sha256(data).hexdigest()
    record = file_record(path)
    assert record == {"bytes": len(data), "mtime_ns": path.stat().st_mtime_ns, "sha256": hashlib.sha256(data).hexdigest()}
    assert json.loads(json.dumps(record)) == record
    with pytest.raises(StorageError, match="^cannot read .*absent"):
        file_record(tmp_path / "absent")


def test_cached_file_digest_reads_once_until_the_file_changes(tmp_path, monkeypatch):
    path = tmp_path / "archive.bin"
    path.write_bytes(b"first version")
    assert cached_file_digest(path, "md5") == hashlib.md5(b"first version").hexdigest()
    assert cached_file_digest(path) == hashlib.sha256(b"first version").hexdigest()
    reads = []
    monkeypatch.setattr(io_module, "file_digest", lambda p, algorithm: reads.append(p) or "recomputed")
    assert cached_file_digest(path) == hashlib.sha256(b"first version").hexdigest() and not reads  # same size and mtime
    path.write_bytes(b"second, longer version")
    assert cached_file_digest(path) == "recomputed" and len(reads) == 1
    with pytest.raises(StorageError, match="^cannot read .*absent"):
        cached_file_digest(tmp_path / "absent")
