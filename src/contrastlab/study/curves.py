"""Training curves where users look: optional TensorBoard scalars of the pretrain and finetune stages.

With ``log.tensorboard: true`` a stage's training loop gets an ``on_epoch(row)`` callback that
writes every number of the epoch's row (metrics.csv / history.csv) as ``<prefix>/<column>`` at
step ``row["epoch"]`` into ``<unit folder>/tensorboard/``. Without the setting, or without the
optional ``tensorboard`` package, there is no callback or no event file (utils/tensorboard.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from ..utils.tensorboard import scalar_writer
from .context import StageContext

LOG_DIR = "tensorboard"


@contextlib.contextmanager
def epoch_scalars(ctx: StageContext, prefix: str) -> Iterator[Callable[[dict], None] | None]:
    """The ``on_epoch`` callback of a training loop (None when TensorBoard logging is off); closes the writer on exit."""
    if not ctx.config.log.tensorboard:
        yield None
        return
    with scalar_writer(ctx.folder / LOG_DIR) as writer:
        def on_epoch(row: dict) -> None:
            step = int(row["epoch"])
            for name, value in row.items():
                if name != "epoch" and isinstance(value, (int, float)):
                    writer.add_scalar(f"{prefix}/{name}", value, step)
            writer.flush()  # a cut run keeps the curves up to its last epoch

        yield on_epoch
