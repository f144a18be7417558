"""Optional TensorBoard writer: a no-op without tensorboard or without a directory; event files with it."""

from __future__ import annotations

import importlib.util
import logging
import sys

import pytest
import torch

import contrastlab.utils.tensorboard as tb
from contrastlab.utils.tensorboard import EventWriter, NullWriter, scalar_writer


def test_no_directory_is_a_silent_no_op(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger=tb.__name__):
        writer = scalar_writer(None)
        writer.add_scalar("loss", 1.0, 0)
        writer.close()
    assert isinstance(writer, NullWriter) and caplog.records == []


def test_missing_tensorboard_is_a_no_op_announced_once(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # makes the import raise ImportError
    monkeypatch.setattr(tb, "_announced", False)
    with caplog.at_level(logging.INFO, logger=tb.__name__):
        for _ in range(2):
            with scalar_writer(tmp_path / "tb") as writer:
                writer.add_scalar("loss", torch.tensor(0.5), 3)
                writer.flush()
            assert isinstance(writer, NullWriter)
    assert [r.levelno for r in caplog.records] == [logging.INFO]
    assert "tensorboard" in caplog.records[0].getMessage()
    assert not (tmp_path / "tb").exists()


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None,
                    reason="tensorboard is not installed (optional extra contrastlab[tensorboard])")
def test_writes_an_event_file_with_the_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with scalar_writer(tmp_path / "tb") as writer:
        assert isinstance(writer, EventWriter)
        for step, value in enumerate([1.0, 0.5, 0.25]):
            writer.add_scalar("train/loss", torch.tensor(value), step)
    events = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert len(events) == 1
    accumulator = EventAccumulator(str(tmp_path / "tb"))
    accumulator.Reload()
    scalars = accumulator.Scalars("train/loss")
    assert [(s.step, s.value) for s in scalars] == [(0, 1.0), (1, 0.5), (2, 0.25)]
