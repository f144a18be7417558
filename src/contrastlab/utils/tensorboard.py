"""Optional TensorBoard scalars: event files when ``tensorboard`` is installed, nothing otherwise.

Training loops call ``writer.add_scalar(tag, value, step)`` unconditionally; whether that
writes an event file is decided once, by :func:`scalar_writer`. TensorBoard is an optional
extra (``pip install contrastlab[tensorboard]``); without it, or without a log directory, the
writer is a no-op and one info line says why (once per process).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..distributed import global_rank

log = logging.getLogger(__name__)

_announced = False  # the "not installed" line is logged once per process


class _Writer:
    """Context-manager plumbing shared by both writers."""

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class NullWriter(_Writer):
    """Accepts scalars and drops them."""

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        pass


class EventWriter(_Writer):
    """Writes scalars to TensorBoard event files in one directory (torch's SummaryWriter underneath)."""

    def __init__(self, summary_writer: Any, log_dir: Path):
        self._writer = summary_writer
        self.log_dir = log_dir

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self._writer.add_scalar(tag, float(value), int(step))  # float(): 0-d tensors and numpy scalars alike

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def scalar_writer(log_dir: str | Path | None) -> NullWriter | EventWriter:
    """A writer with ``add_scalar(tag, value, step)``, ``flush()`` and ``close()`` (also a context manager).

    log_dir: the directory for the event files (created if needed), or None for no logging.
    Returns an :class:`EventWriter` when TensorBoard is importable, else a :class:`NullWriter`.
    Under DDP only rank 0 writes (every rank has the same curves): the others get a NullWriter.
    """
    global _announced
    if log_dir is None or global_rank() != 0:
        return NullWriter()
    try:
        from torch.utils.tensorboard import SummaryWriter  # imports tensorboard; ImportError without it
    except ImportError:
        if not _announced:
            log.info("tensorboard is not installed: no event files (pip install 'contrastlab[tensorboard]')")
            _announced = True
        return NullWriter()
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    return EventWriter(SummaryWriter(log_dir=str(log_dir)), log_dir)
