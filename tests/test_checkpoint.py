"""checkpoint: corrupt weights (flipped bytes -> NaN/inf, truncation) and malformed sidecars are
one-line CheckpointErrors at load; saving respects the umask and fails as one StorageError."""

import errno
import json
import os
import stat
import struct

import pytest
import torch

import contrastlab.utils.io as io_module
from contrastlab.checkpoint import encoder_from_checkpoint, first_non_finite, read_checkpoint, save_checkpoint
from contrastlab.errors import CheckpointError, StorageError
from contrastlab.models import architecture, build_encoder

ARCH = architecture("resnet18", 2, 3, 16)
TENSOR = "encoder.stages.0.0.conv1.weight"


def _save(path, **extra_meta):
    torch.manual_seed(0)
    encoder = build_encoder("resnet18", width=2, in_channels=3)
    return save_checkpoint(path, {"encoder": encoder.state_dict()}, {"architecture": ARCH, "seed": 0, **extra_meta})


def _overwrite_inside(path, tensor: str, value: bytes) -> None:
    """Overwrite bytes in the middle of ``tensor``'s data, leaving the header intact."""
    data = bytearray(path.read_bytes())
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + header_len])
    start, end = header[tensor]["data_offsets"]
    at = 8 + header_len + (start + (end - start) // 2) // 4 * 4
    data[at:at + len(value)] = value
    path.write_bytes(bytes(data))


def test_a_good_checkpoint_round_trips(tmp_path):
    path = _save(tmp_path / "enc")
    tensors, meta = read_checkpoint(path)
    assert TENSOR in tensors and meta["seed"] == 0 and "package_version" in meta
    encoder, _ = encoder_from_checkpoint(path, ARCH)
    assert torch.equal(encoder.state_dict()["stages.0.0.conv1.weight"], tensors[TENSOR])


@pytest.mark.parametrize("value", [b"\xff\xff\xff\xff", struct.pack("<f", float("inf"))], ids=["nan", "inf"])
def test_flipped_bytes_that_make_a_weight_non_finite_are_named(tmp_path, value):
    path = _save(tmp_path / "enc")
    _overwrite_inside(path, TENSOR, value)
    message = (f"checkpoint {path} holds NaN/inf in tensor {TENSOR}; the file is corrupt or the run diverged: "
               "delete it to recompute")
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert str(info.value) == message
    with pytest.raises(CheckpointError, match="holds NaN/inf"):
        encoder_from_checkpoint(path, ARCH)
    tensors, _ = read_checkpoint(path, check_finite=False)  # opt-out for inspection
    assert first_non_finite(tensors) == TENSOR


@pytest.mark.parametrize("keep", [0.5, 0.999, 10], ids=["half", "last-byte", "header"])
def test_a_truncated_checkpoint_is_one_line(tmp_path, keep):
    path = _save(tmp_path / "enc")
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep) if keep < 1 else keep])
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert "\n" not in str(info.value) and str(info.value).startswith(f"checkpoint {path} is corrupt (")


@pytest.mark.parametrize("content, found", [("[]", "a list"), ("3", "a number"), ("null", "null")])
def test_a_sidecar_that_is_not_an_object_is_one_line(tmp_path, content, found):
    path = _save(tmp_path / "enc")
    path.with_suffix(".json").write_text(content)
    with pytest.raises(CheckpointError, match=rf"^corrupt checkpoint sidecar .*enc\.json: holds {found}, not a JSON object"):
        encoder_from_checkpoint(path, ARCH)


def test_a_truncated_sidecar_is_one_line(tmp_path):
    path = _save(tmp_path / "enc")
    sidecar = path.with_suffix(".json")
    sidecar.write_text(sidecar.read_text()[:20])
    with pytest.raises(CheckpointError, match=rf"^corrupt JSON in {sidecar}: .*delete it to recompute$"):
        read_checkpoint(path)


def test_checkpoint_files_respect_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        path = _save(tmp_path / "enc")
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        assert stat.S_IMODE(path.with_suffix(".json").stat().st_mode) == 0o644
    finally:
        os.umask(previous)


def test_a_full_disk_while_saving_is_storage_error_leaving_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(io_module.os, "replace", lambda *a: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
    target = tmp_path / "checkpoints" / "epoch-1"
    with pytest.raises(StorageError, match=r"^cannot write .*epoch-1\.safetensors: no space left on device \(errno ENOSPC\)"):
        _save(target)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_a_failed_sidecar_leaves_no_weights_without_one(tmp_path, monkeypatch):
    real_replace = os.replace

    def refuse_json(src, dst):
        if str(dst).endswith(".json"):
            raise OSError(errno.EROFS, "Read-only file system")
        real_replace(src, dst)

    monkeypatch.setattr(io_module.os, "replace", refuse_json)
    with pytest.raises(StorageError, match=r"enc\.json: read-only file system \(errno EROFS\)"):
        _save(tmp_path / "enc")
    assert list(tmp_path.iterdir()) == []


def test_saving_below_a_regular_file_is_storage_error(tmp_path):
    (tmp_path / "checkpoints").write_text("a file")
    with pytest.raises(StorageError, match=r"^cannot write .*enc\.safetensors: not a directory \(errno ENOTDIR\)"):
        _save(tmp_path / "checkpoints" / "enc")
