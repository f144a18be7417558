"""The method registry and the Pretrainer recipe: every method through the one loop."""

import hashlib

import pytest
import torch

from contrastlab.checkpoint import read_checkpoint
from contrastlab.config import load_config
from contrastlab.registry import UnknownNameError
from contrastlab.study.plan import plan_units
from contrastlab.train.methods import METHODS, get_method, projection_std
from helpers import blob_imageset, tiny_pretrain

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
