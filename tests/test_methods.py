"""The method registry and the Pretrainer recipe: every method through the one loop."""

import csv
import dataclasses
import hashlib
import math

import pytest
import torch

import contrastlab.train.pretrain as pretrain_module
from contrastlab.checkpoint import read_checkpoint
from contrastlab.config import ModelConfig, PretrainConfig
from contrastlab.config_checks import load_config
from contrastlab.errors import ConfigError
from contrastlab.registry import UnknownNameError
from contrastlab.study.plan import plan_units
from contrastlab.train.methods import METHODS, get_method, projection_std
from contrastlab.train.pretrain import Pretrainer, RunSpec
from helpers import TINY_METHOD_SETTINGS, blob_imageset, tiny_pretrain

# Produced by commit 095cfa2's pretrain() (the 29-keyword function this recipe replaced), on the CPU,
# OMP_NUM_THREADS=1: sha256 (first 16 hex digits) of the epoch-2 checkpoint's tensors, per part.
BEFORE_RECIPE = {
    "simclr": {"encoder.": "e8c50a5adcfcb427", "head.": "efd13ad76ac4ee1c", "optimizer.": "9e6bab3d3d83e978", "rng.": "f433163ba0593e50"},
    "supcon": {"encoder.": "78e4fbc145193ce3", "head.": "b420c4b1c981959b", "optimizer.": "a99d769226e50b37", "rng.": "f433163ba0593e50"},
    "supce": {"encoder.": "baaa80caf5fa3f4b", "head.": "55e7bc6866d86546", "optimizer.": "472731750ee6fc66", "rng.": "2b810ec758ee43f1"},
}
# The same commit's plan_units(load_config("quick")): sha256 of every unit's id and key, in order.
QUICK_PLAN_BEFORE = "d0be0d1587e22c73"


def _digest(tensors, prefix):
    h = hashlib.sha256()
    for key in sorted(k for k in tensors if k.startswith(prefix)):
        h.update(key.encode())
        h.update(tensors[key].contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@pytest.mark.parametrize("method", ["simclr", "supcon", "supce"])
def test_recipe_reproduces_the_former_pretrain_bit_for_bit(tmp_path, method):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tiny_pretrain(blob_imageset(n_per_class=11), tmp_path, method=method, seed=1, encoder="tiny_cnn", width=4, projection_dim=8,
                      epochs=2, batch_size=20, lr=0.1, temperature=0.2, checkpoint_every=1)
    finally:
        torch.set_num_threads(threads)
    tensors, _ = read_checkpoint(tmp_path / "checkpoints" / "epoch_0002.safetensors")
    assert {part: _digest(tensors, part) for part in BEFORE_RECIPE[method]} == BEFORE_RECIPE[method]


def test_quick_preset_unit_keys_are_unchanged_by_the_new_methods():
    units = plan_units(load_config("quick"))
    assert hashlib.sha256("".join(u.id + u.key for u in units).encode()).hexdigest()[:16] == QUICK_PLAN_BEFORE


def test_registry_rejects_unknown_names_with_the_valid_list():
    with pytest.raises(UnknownNameError, match=r"unknown pretraining method 'dino'; valid: .*simclr.*supce.*supcon"):
        get_method("dino")
    assert all(m.name == name for name, m in METHODS.items())


def test_projection_std_is_one_when_spread_and_zero_when_collapsed():
    torch.manual_seed(0)
    spread = projection_std(torch.randn(4096, 64))
    assert abs(float(spread) - 1.0) < 0.02
    assert float(projection_std(torch.ones(100, 64) + 1e-9 * torch.randn(100, 64))) < 1e-6
    # the slow reference: per-dimension std of the normalized rows, averaged, times sqrt(D)
    z = torch.randn(50, 3, 8)
    rows = [r / r.norm() for r in z.reshape(-1, 8)]
    stds = [torch.stack([r[d] for r in rows]).std() for d in range(8)]
    torch.testing.assert_close(projection_std(z), torch.stack(stds).mean() * 8 ** 0.5)


SMALL = dict(encoder="tiny_cnn", width=4, projection_dim=8, epochs=2, batch_size=20, checkpoint_every=1)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_trains_with_a_finite_loss_and_records_collapse(tmp_path, method):
    final = tiny_pretrain(blob_imageset(n_per_class=11), tmp_path, method=method, seed=0, **SMALL, **TINY_METHOD_SETTINGS[method])
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(math.isfinite(float(r["loss"])) and 0 <= float(r["projection_std"]) < 10 for r in rows)
    tensors, meta = read_checkpoint(tmp_path / "checkpoints" / "epoch_0002.safetensors")
    assert meta["method"] == method and meta["family"] == get_method(method).family
    has_target = method in ("byol", "mocov2")
    assert any(k.startswith("target.") for k in tensors) == has_target
    assert any(k.startswith("queue.") for k in tensors) == (method == "mocov2")
    assert read_checkpoint(final)[1]["kind"] == "encoder"


@pytest.mark.parametrize("method", ["byol", "mocov2"])
def test_killed_run_resumes_target_and_queue_to_the_same_weights(tmp_path, monkeypatch, method):
    data, settings = blob_imageset(), {**SMALL, "epochs": 3, **TINY_METHOD_SETTINGS[method]}
    tiny_pretrain(data, tmp_path / "straight", method=method, seed=3, **settings)
    real_views, calls = pretrain_module.make_views, {"n": 0}

    def dying_views(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:  # the second step of epoch 2 (4 steps per epoch), after the epoch-1 checkpoint
            raise KeyboardInterrupt
        return real_views(*args, **kwargs)

    monkeypatch.setattr(pretrain_module, "make_views", dying_views)
    with pytest.raises(KeyboardInterrupt):
        tiny_pretrain(data, tmp_path / "cut", method=method, seed=3, **settings)
    monkeypatch.setattr(pretrain_module, "make_views", real_views)
    tiny_pretrain(data, tmp_path / "cut", method=method, seed=3, **settings)
    a, _ = read_checkpoint(tmp_path / "straight" / "checkpoints" / "epoch_0003.safetensors")
    b, _ = read_checkpoint(tmp_path / "cut" / "checkpoints" / "epoch_0003.safetensors")
    assert a.keys() == b.keys() and any(k.startswith("target.") for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _trainer(method, **settings):
    model = ModelConfig(encoder="tiny_cnn", width=4, projection_dim=8)
    pretrain = PretrainConfig(epochs=2, batch_size=20)
    for name, value in TINY_METHOD_SETTINGS[method].items():
        setattr(pretrain, name, dataclasses.replace(getattr(pretrain, name), **value))
    for name, value in settings.items():
        setattr(pretrain, name, value)
    trainer = Pretrainer(pretrain, model)
    trainer.setup(blob_imageset(), RunSpec(method, 0))
    return trainer


@pytest.mark.parametrize("method", ["byol", "mocov2"])
def test_target_gets_no_gradient_and_follows_the_online_network_by_ema(method):
    trainer = _trainer(method)
    target = trainer.state.target
    before = [p.detach().clone() for p in target.parameters()]
    online_before = [p.detach().clone() for p in trainer.state.online_part.parameters()]
    trainer.train_epoch(1)
    assert all(not p.requires_grad and p.grad is None for p in target.parameters())
    moved = [not torch.equal(b, p) for b, p in zip(before, target.parameters())]
    assert any(moved)
    # After one EMA step from equal weights, the target lies between where it started and the online network.
    first = next(i for i, m in enumerate(moved) if m)
    online_now = list(trainer.state.online_part.parameters())[first].detach()
    assert torch.equal(before[first], online_before[first])
    gap_before = (online_now - before[first]).norm()
    assert (online_now - list(target.parameters())[first]).norm() < gap_before


def test_queue_receives_both_views_keys_in_order():
    trainer = _trainer("mocov2")
    queue = trainer.state.queue
    assert int(queue.pointer) == 0
    trainer.train_epoch(1)  # 4 steps of 20, 20, 20, 4 images, two views each: 128 keys into 48 rows
    assert int(queue.pointer) == 128 % 48
    torch.testing.assert_close(queue.keys.norm(dim=1), torch.ones(48))


def test_momentum_buffers_resume_in_the_parameters_memory_format(tmp_path):
    tiny_pretrain(blob_imageset(), tmp_path, method="simclr", seed=0, **{**SMALL, "epochs": 1})
    trainer = _trainer("simclr")
    assert trainer.resume(tmp_path) == 1
    convs = [p for p in trainer.model.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    for p in convs:
        buffer = trainer.optimizer.state[p]["momentum_buffer"]
        assert buffer.is_contiguous(memory_format=torch.channels_last) and buffer.stride() == p.stride()


def test_config_accepts_the_new_methods_and_checks_their_ranges():
    config = load_config("quick", ["methods=[simclr,byol,simsiam,barlow_twins,vicreg,mocov2]", "pretrain.mocov2.queue_size=512"])
    assert config.pretrain.mocov2.queue_size == 512 and config.pretrain.byol.projector_hidden == 4096
    for override, message in [("pretrain.byol.tau_base=1.5", "pretrain.byol.tau_base"),
                              ("pretrain.mocov2.optimizer=adam", "pretrain.mocov2.optimizer must be one of sgd, lars"),
                              ("pretrain.vicreg.projector_out=0", "pretrain.vicreg.projector_out must be at least 1"),
                              ("pretrain.mocov2.queue_size=0", "pretrain.mocov2.queue_size must be at least 1")]:
        with pytest.raises(ConfigError, match=message):
            load_config("quick", ["methods=[byol,mocov2,vicreg]", override])
    with pytest.raises(ConfigError, match="unknown method 'dino' in methods; valid: barlow_twins, byol, mocov2"):
        load_config("quick", ["methods=[dino]"])


def test_a_methods_own_settings_enter_its_key_and_no_other():
    base = load_config("quick", ["methods=[simclr,byol,mocov2]"])
    changed = load_config("quick", ["methods=[simclr,byol,mocov2]", "pretrain.byol.projector_hidden=64",
                                    "pretrain.temperature.mocov2=0.3"])
    keys = {u.id: u.key for u in plan_units(base) if u.kind == "pretrain"}
    new = {u.id: u.key for u in plan_units(changed) if u.kind == "pretrain"}
    differs = {uid.split("/")[1] for uid in keys if keys[uid] != new[uid]}
    assert differs == {"byol", "mocov2"}


def test_families_preset_runs_every_method_at_quick_sizes():
    config, quick = load_config("families"), load_config("quick")
    assert sorted(config.methods) == sorted(METHODS) and config.random_init_baseline
    assert (config.data, config.model, config.seeds) == (quick.data, quick.model, quick.seeds)
    assert config.pretrain.mocov2.queue_size < 32768 and config.pretrain.byol.projector_hidden < 4096
