"""No host syncs in a pretraining epoch, for every method: the on-device augmentation, the loss and
the steps read nothing back, and the epoch's losses and projection spreads come back in one copy
(``.cpu()``) after the last step, which the counter does not count (it is the one transfer, not a
sync inside the loop)."""

import dataclasses

import pytest

from contrastlab.config import ModelConfig, PretrainConfig
from contrastlab.train.methods import METHODS
from contrastlab.train.pretrain import Pretrainer, RunSpec
from contrastlab.utils.host_sync import HostSyncCounter
from helpers import TINY_METHOD_SETTINGS, blob_imageset


def _trainer(method):
    settings = PretrainConfig(epochs=2, batch_size=20)
    for name, value in TINY_METHOD_SETTINGS[method].items():
        setattr(settings, name, dataclasses.replace(getattr(settings, name), **value))
    trainer = Pretrainer(settings, ModelConfig(encoder="tiny_cnn", width=4, projection_dim=8))
    trainer.setup(blob_imageset(), RunSpec(method, 0))
    return trainer


@pytest.mark.parametrize("method", sorted(METHODS))
def test_pretraining_epochs_have_no_host_sync(method):
    trainer = _trainer(method)
    with HostSyncCounter() as counter:
        steps = []
        trainer.train_epoch(1, advance=steps.append)
        row = trainer.train_epoch(2, advance=steps.append)
    assert len(steps) == 2 * trainer.steps_per_epoch == 8 and row["epoch"] == 2
    assert dict(counter.counts) == {}
