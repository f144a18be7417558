import json

import pytest
import torch

import contrastlab.train.pretrain as pretrain_module
from contrastlab.checkpoint import encoder_from_checkpoint, read_checkpoint
from contrastlab.errors import CheckpointError, NonFiniteError
from contrastlab.models import architecture
from contrastlab.rundir import latest_checkpoint
from contrastlab.train.pretrain import batches
from helpers import blob_imageset
from helpers import tiny_pretrain as pretrain

SETTINGS = dict(encoder="tiny_cnn", width=4, projection_dim=8, epochs=3, batch_size=20, lr=0.1, temperature=0.2, checkpoint_every=1)


def test_batches_never_leave_a_single_sample():
    sizes = [len(b) for b in batches(torch.arange(41), 20)]
    assert sizes == [20, 21]
    assert [len(b) for b in batches(torch.arange(45), 20)] == [20, 20, 5]
    assert torch.equal(torch.cat(batches(torch.arange(41), 20)), torch.arange(41))


@pytest.mark.parametrize("method", ["simclr", "supcon", "supce"])
def test_pretrain_writes_checkpoints_metrics_and_sidecars(tmp_path, method):
    data = blob_imageset(n_per_class=11)  # 44 images: a short last batch
    final = pretrain(data, tmp_path, method=method, seed=1, **SETTINGS)
    assert [p.stem for p in sorted((tmp_path / "checkpoints").glob("*.safetensors"))] == [f"epoch_000{i}" for i in range(4)]
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[0] == "epoch,lr,loss,images_per_s,seconds,projection_std" and len(rows) == 4
    assert all(float(r.split(",")[2]) == float(r.split(",")[2]) for r in rows[1:])  # finite (not NaN)
    tensors, meta = read_checkpoint(final)
    assert meta["method"] == method and meta["seed"] == 1 and meta["epoch"] == 3 and meta["stage"] == "pretrain"
    assert meta["architecture"] == architecture("tiny_cnn", 4, 3, 8)
    assert meta["normalization"]["mean"] == list(data.mean) and "package_version" in meta
    encoder, _ = encoder_from_checkpoint(final)
    assert encoder(torch.rand(2, 3, 8, 8)).shape == (2, 8)


def test_killed_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    data = blob_imageset()
    straight = pretrain(data, tmp_path / "straight", method="simclr", seed=3, **SETTINGS)

    real_views, calls = pretrain_module.make_views, {"n": 0}

    def dying_views(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 8:  # in epoch 3 (4 batches per epoch): after the epoch-2 checkpoint
            raise KeyboardInterrupt
        return real_views(*args, **kwargs)

    monkeypatch.setattr(pretrain_module, "make_views", dying_views)
    with pytest.raises(KeyboardInterrupt):
        pretrain(data, tmp_path / "cut", method="simclr", seed=3, **SETTINGS)
    assert latest_checkpoint(tmp_path / "cut").stem == "epoch_0001"
    monkeypatch.setattr(pretrain_module, "make_views", real_views)
    resumed = pretrain(data, tmp_path / "cut", method="simclr", seed=3, **SETTINGS)

    a, _ = read_checkpoint(straight)
    b, _ = read_checkpoint(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert (tmp_path / "cut" / "metrics.csv").read_text().count("\n") == 4


def test_checkpoint_from_another_architecture_is_an_error_naming_both(tmp_path):
    final = pretrain(blob_imageset(), tmp_path, method="supce", seed=0, **{**SETTINGS, "epochs": 1})
    with pytest.raises(CheckpointError, match=r"holds a tiny_cnn \(width 4.*but the model is a resnet18 \(width 8"):
        encoder_from_checkpoint(final, architecture("resnet18", 8, 3, 64))


def test_incomplete_checkpoint_is_reported(tmp_path):
    final = pretrain(blob_imageset(), tmp_path, method="supce", seed=0, **{**SETTINGS, "epochs": 1})
    final.with_suffix(".json").unlink()
    with pytest.raises(CheckpointError, match="incomplete"):
        encoder_from_checkpoint(final)
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    (tmp_path / "junk.json").write_text("{}")
    with pytest.raises(CheckpointError, match="corrupt"):
        read_checkpoint(tmp_path / "junk.safetensors")


def test_precision_is_explicit_and_recorded(tmp_path):
    data = blob_imageset()
    with pytest.raises(ValueError, match="unknown precision 'fp16'; valid: fp32, bf16"):
        pretrain(data, tmp_path / "bad", method="supce", seed=0, precision="fp16", **SETTINGS)
    assert not (tmp_path / "bad").exists()
    for precision in ("fp32", "bf16"):
        final = pretrain(data, tmp_path / precision, method="supce", seed=0, precision=precision, **{**SETTINGS, "epochs": 1})
        _, meta = read_checkpoint(tmp_path / precision / "checkpoints" / "epoch_0001.safetensors")
        assert meta["settings"]["precision"] == precision and meta["generator_device"] == "cpu"
        assert read_checkpoint(final)[1]["settings"]["precision"] == precision


def test_resume_on_another_device_type_is_one_line_naming_both(tmp_path):
    data = blob_imageset()
    settings = {**SETTINGS, "epochs": 2}
    pretrain(data, tmp_path / "straight", method="simclr", seed=3, **settings)
    # A run cut after epoch 1 on CPU resumes bit-identically on CPU ...
    pretrain(data, tmp_path / "cut", method="simclr", seed=3, **{**settings, "epochs": 1})
    (tmp_path / "cut" / "encoder.safetensors").unlink()
    resumed = pretrain(data, tmp_path / "cut", method="simclr", seed=3, **settings)
    a, _ = read_checkpoint(tmp_path / "straight" / "encoder.safetensors")
    b, _ = read_checkpoint(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # ... but not when its sidecar says the generator was a CUDA one (Philox state).
    fake = tmp_path / "from_cuda"
    pretrain(data, fake, method="simclr", seed=3, **{**settings, "epochs": 1})
    sidecar = fake / "checkpoints" / "epoch_0001.json"
    meta = json.loads(sidecar.read_text())
    meta["generator_device"] = "cuda"
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"written by a run on cuda .* cannot be restored on cpu: resume on cuda, or start a new --out") as info:
        pretrain(data, fake, method="simclr", seed=3, **settings)
    assert "\n" not in str(info.value)


def test_resume_recognizes_the_generator_of_a_checkpoint_without_a_device(tmp_path):
    data = blob_imageset()
    pretrain(data, tmp_path, method="supce", seed=0, **{**SETTINGS, "epochs": 1})
    sidecar = tmp_path / "checkpoints" / "epoch_0001.json"
    meta = json.loads(sidecar.read_text())
    del meta["generator_device"]  # written before the sidecar recorded it
    sidecar.write_text(json.dumps(meta))
    pretrain(data, tmp_path, method="supce", seed=0, **{**SETTINGS, "epochs": 2})  # CPU state: resumes
    assert latest_checkpoint(tmp_path).stem == "epoch_0002"


@pytest.mark.parametrize("bad_lr", [float("inf"), float("nan")])
def test_non_finite_loss_stops_the_run_before_the_epoch_checkpoint(tmp_path, bad_lr):
    data = blob_imageset()
    with pytest.raises(NonFiniteError, match=r"pretraining simclr seed 2: loss is nan at epoch 1 \(step [1-4]\); lower pretrain.lr.simclr"):
        pretrain(data, tmp_path, method="simclr", seed=2, **{**SETTINGS, "lr": bad_lr})
    assert latest_checkpoint(tmp_path).stem == "epoch_0000"
    assert not (tmp_path / "metrics.csv").exists() and not (tmp_path / "encoder.safetensors").exists()


@pytest.mark.parametrize("where", ["at compile", "at the first call"])
def test_a_failing_compiler_falls_back_to_the_eager_result(tmp_path, monkeypatch, caplog, where):
    data = blob_imageset()
    settings = {**SETTINGS, "epochs": 1}
    eager = pretrain(data, tmp_path / "eager", method="simclr", seed=0, **settings)

    def broken_compile(model, *args, **kwargs):
        if where == "at compile":
            raise RuntimeError("no C++ compiler found")

        def fails(*a, **k):
            raise RuntimeError("InductorError: compilation failed")
        return fails

    monkeypatch.setattr(torch, "compile", broken_compile)
    fallback = pretrain(data, tmp_path / "fallback", method="simclr", seed=0, compile=True, **settings)
    assert "training eagerly" in caplog.text
    a, _ = read_checkpoint(eager)
    b, meta = read_checkpoint(fallback)
    assert all(torch.equal(a[k], b[k]) for k in a) and meta["settings"]["compile"] is True
