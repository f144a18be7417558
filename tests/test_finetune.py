import numpy as np
import pytest
import torch

from contrastlab.checkpoint import encoder_from_checkpoint
from contrastlab.data import make_task
from contrastlab.errors import CheckpointError, DatasetError, NonFiniteError
from contrastlab.models import linear_classifier, tiny_cnn
from contrastlab.study.inputs import pretrain_set, task_sets
from contrastlab.config import FinetuneConfig
from contrastlab.train.finetune import ProbeData, ProbeTrainer, extract_features, knn_accuracy
from contrastlab.train.pretrain import random_encoder
from contrastlab.utils.io import load_array, read_json
from helpers import blob_imageset, micro_config, run_single_stage

PROBE = dict(epochs=4, batch_size=16, lr=0.1, seed=5)


def train_probe(encoder, train, val, analysis, *, n_classes, seed=0, mode=None, **settings):
    """The probe recipe on a FinetuneConfig of the given fields."""
    return ProbeTrainer(FinetuneConfig(**settings), seed=seed, mode=mode).run(encoder, ProbeData(train, val, analysis, n_classes))


def trained_encoder():
    torch.manual_seed(0)
    encoder = tiny_cnn(width=4)
    encoder.train()
    with torch.no_grad():  # move the BN running statistics away from their defaults
        encoder(torch.rand(8, 3, 8, 8))
    return encoder.eval()


def test_probe_leaves_encoder_parameters_and_bn_buffers_bit_identical():
    data = blob_imageset()
    encoder = trained_encoder()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    run = train_probe(encoder, (data.images, data.labels), (data.images, data.labels), data.images, n_classes=4, **PROBE)
    after = encoder.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not encoder.training
    assert run.snapshots.shape == (5, len(data), 4) and run.snapshots.dtype == np.float32
    assert np.allclose(run.snapshots.sum(-1), 1, atol=1e-5)
    assert [h["epoch"] for h in run.history] == list(range(5))


def test_epoch_zero_snapshot_is_the_untrained_probe_and_seed_reproduces():
    data = blob_imageset()
    encoder = trained_encoder()
    run = train_probe(encoder, (data.images, data.labels), (data.images, data.labels), data.images, n_classes=4, **PROBE)
    torch.manual_seed(PROBE["seed"])
    untrained = linear_classifier(encoder.feature_dim, 4)
    with torch.no_grad():
        expected = untrained(extract_features(encoder, data.images)).softmax(1).numpy()
    assert np.allclose(run.snapshots[0], expected, atol=1e-6)
    assert not np.allclose(run.snapshots[-1], run.snapshots[0])
    again = train_probe(encoder, (data.images, data.labels), (data.images, data.labels), data.images, n_classes=4, **PROBE)
    assert np.array_equal(run.snapshots, again.snapshots)
    assert again.history[-1]["train_loss"] < again.history[0]["train_loss"]


def test_full_mode_trains_a_copy():
    data = blob_imageset()
    encoder = trained_encoder()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    run = train_probe(encoder, (data.images, data.labels), (data.images, data.labels), data.images, n_classes=4, mode="full", **PROBE)
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())
    assert run.encoder_state is not None and not torch.equal(run.encoder_state["body.0.weight"], before["body.0.weight"])


def test_knn_matches_a_loop_reference():
    rng = np.random.default_rng(0)
    train, test = torch.tensor(rng.normal(size=(30, 5))), torch.tensor(rng.normal(size=(12, 5)))
    y_train, y_test = torch.tensor(rng.integers(0, 3, 30)), torch.tensor(rng.integers(0, 3, 12))
    correct = 0
    for x, y in zip(test, y_test):
        sims = [float(x @ t / (x.norm() * t.norm())) for t in train]
        nearest = torch.from_numpy(np.argsort(sims)[::-1][:5].copy())
        votes = np.bincount(y_train[nearest].numpy(), minlength=3)
        correct += int(np.argmax(votes) == y)
    assert knn_accuracy(train, y_train, test, y_test, k=5) == correct / 12


def test_finetune_stage_writes_snapshots_with_sidecar(tmp_path):
    config = micro_config("data.tasks=[[4,1,2]]", "finetune.epochs=4")
    data = pretrain_set(config.data)
    ckpt = random_encoder(data, tmp_path / "enc", seed=0, encoder="tiny_cnn", width=4)
    out = run_single_stage(config, "finetune", tmp_path / "probe", seed=5, inputs={"encoder": ckpt})
    train, val = task_sets(config.data, [4, 1, 2])
    snapshots, meta = load_array(out / "snapshots.npy")
    result = read_json(out / "result.json")
    assert snapshots.shape == (5, len(train), 3)
    assert meta["task_classes"] == [4, 1, 2] and meta["split"] == "train" and meta["method"] == "random"
    assert meta["labels"] == train.labels.tolist() and "class-ordered" in meta["sample_order"]
    assert 0 <= result["knn_accuracy"] <= 1
    assert set(result["seconds"]) == {"features", "training"} and min(result["seconds"].values()) >= 0
    assert (out / "history.csv").read_text().count("\n") == 6
    manifest = read_json(out / "done.json")
    assert manifest["kind"] == "finetune" and manifest["device"] == "cpu" and manifest["precision"] == "fp32" and manifest["threads"] >= 1
    assert set(manifest["files"]) >= {"probe.safetensors", "snapshots.npy", "result.json", "history.csv"}
    # k-NN reuses the probe's cached features; it must equal k-NN on freshly extracted ones.
    encoder = encoder_from_checkpoint(ckpt)[0]
    fresh = [extract_features(encoder, s.images) for s in (train, val)]
    expected = knn_accuracy(fresh[0], torch.from_numpy(train.labels), fresh[1], torch.from_numpy(val.labels), 20)
    assert result["knn_accuracy"] == expected


def test_foreign_checkpoint_and_missing_class_are_clear_errors(tmp_path):
    data = blob_imageset()
    ckpt = random_encoder(data, tmp_path / "enc", seed=0, encoder="resnet18", width=8)
    config = micro_config("data.tasks=[[0,1]]")
    with pytest.raises(CheckpointError, match="resnet18.*tiny_cnn"):
        run_single_stage(config, "finetune", tmp_path / "p", seed=0, inputs={"encoder": ckpt})
    with pytest.raises(DatasetError, match="task class 7"):
        make_task(data, [0, 7])


def test_non_finite_probe_loss_stops_with_one_line():
    data = blob_imageset()
    with pytest.raises(NonFiniteError, match="epoch 1"):
        train_probe(trained_encoder(), (data.images, data.labels), (data.images, data.labels), data.images, n_classes=4,
                    **{**PROBE, "lr": float("inf")})
