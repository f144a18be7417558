"""Learning-rate schedules as pure functions of the epoch."""

from __future__ import annotations

import math


def cosine_lr(epoch: int, epochs: int, lr_max: float, min_ratio: float, warmup_epochs: int = 0) -> float:
    """Learning rate for 0-based ``epoch`` of ``epochs``.

    Linear warm-up to ``lr_max`` over ``warmup_epochs``, then
    eta_e = eta_min + (eta_max - eta_min) * (1 + cos(pi * e / E)) / 2 with eta_min = min_ratio * eta_max,
    where e and E count the epochs after warm-up.
    """
    if epoch < warmup_epochs:
        return lr_max * (epoch + 1) / warmup_epochs
    e, total = epoch - warmup_epochs, max(epochs - warmup_epochs, 1)
    lr_min = lr_max * min_ratio
    return lr_min + (lr_max - lr_min) * (1 + math.cos(math.pi * e / total)) / 2
