import pytest
import torch

import contrastlab.train.pretrain as pretrain_module
from contrastlab.checkpoint import encoder_from_checkpoint, read_checkpoint
from contrastlab.errors import CheckpointError
from contrastlab.models import architecture
from contrastlab.train.pretrain import batches, latest_checkpoint, pretrain
from helpers import blob_imageset

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
    assert rows[0] == "epoch,lr,loss,images_per_s,seconds" and len(rows) == 4
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
