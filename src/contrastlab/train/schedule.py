"""Learning-rate schedules as pure functions of the epoch."""

from __future__ import annotations

import math


def cosine_lr(epoch: int, epochs: int, lr_max: float, min_ratio: float, warmup_epochs: int = 0,
              reach_min_at_last: bool = False) -> float:
    """Learning rate for 0-based ``epoch`` of ``epochs``.

    Linear warm-up to ``lr_max`` over ``warmup_epochs``, then, with e and E counting the epochs
    after warm-up and eta_min = min_ratio * eta_max:

    - ``reach_min_at_last=False``: eta_e = eta_min + (eta_max - eta_min) * (1 + cos(pi * e / E)) / 2,
      e = 0..E-1; the last epoch trains one step short of eta_min (eta_min is the value at e = E).
    - ``reach_min_at_last=True`` (the original study's schedule): the same with e / (E - 1), so
      the first epoch trains at eta_max and the last one at eta_min exactly (E = 1: eta_max).
    """
    if epoch < warmup_epochs:
        return lr_max * (epoch + 1) / warmup_epochs
    e, total = epoch - warmup_epochs, max(epochs - warmup_epochs, 1)
    if reach_min_at_last:
        total = max(total - 1, 1)
    lr_min = lr_max * min_ratio
    if reach_min_at_last and e >= total:
        return lr_min  # exact, not round-off away from it
    return lr_min + (lr_max - lr_min) * (1 + math.cos(math.pi * e / total)) / 2
