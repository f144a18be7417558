"""No host syncs in a pretraining epoch, for every method: the steps read nothing back, and the
epoch's losses and projection spreads come back in one copy (``.cpu()``) after the last step,
which the counter does not count (it is the one transfer, not a sync inside the loop).

The on-device augmentation (augment.py's colour jitter selects rows with ``nonzero``) is counted
apart: it is the augmentation's own, the same for every method, and not the loop's or a method's."""

import dataclasses
from collections import Counter

import pytest

import contrastlab.train.pretrain as pretrain_module
from contrastlab.config import ModelConfig, PretrainConfig
from contrastlab.train.methods import METHODS
from contrastlab.train.pretrain import Pretrainer, RunSpec
from contrastlab.utils.host_sync import HostSyncCounter
from helpers import TINY_METHOD_SETTINGS, blob_imageset

# contrastive_loss (objectives.py) checks that some anchor has a positive with bool() and keeps those
# anchors by boolean indexing: SimCLR's and SupCon's loss syncs, once per step.
SYNCING_LOSS = {"simclr", "supcon"}


def _trainer(method):
    settings = PretrainConfig(epochs=2, batch_size=20)
    for name, value in TINY_METHOD_SETTINGS[method].items():
        setattr(settings, name, dataclasses.replace(getattr(settings, name), **value))
    trainer = Pretrainer(settings, ModelConfig(encoder="tiny_cnn", width=4, projection_dim=8))
    trainer.setup(blob_imageset(), RunSpec(method, 0))
    return trainer


@pytest.mark.parametrize("method", [
    pytest.param(m, marks=pytest.mark.xfail(strict=True, reason="contrastive_loss syncs (objectives.py)")) if m in SYNCING_LOSS else m
    for m in sorted(METHODS)])
def test_pretraining_epochs_have_no_host_sync_outside_the_augmentation(method, monkeypatch):
    trainer = _trainer(method)
    augmentation, real_views = Counter(), pretrain_module.make_views

    with HostSyncCounter() as counter:
        def counted_apart(*args, **kwargs):
            before = counter.counts.copy()
            views = real_views(*args, **kwargs)
            augmentation.update(counter.counts - before)
            return views

        monkeypatch.setattr(pretrain_module, "make_views", counted_apart)
        steps = []
        trainer.train_epoch(1, advance=steps.append)
        row = trainer.train_epoch(2, advance=steps.append)
    assert len(steps) == 2 * trainer.steps_per_epoch == 8 and row["epoch"] == 2
    assert dict(counter.counts - augmentation) == {}
