"""Precision and placement, shared by the training and the analysis kernels.

A kernel computes where its model lives and in the precision it is given: "fp32" (no autocast)
or "bf16" (bfloat16 autocast). Studies resolve the configured "auto" per unit
(:func:`contrastlab.study.context.resolve_precision`); kernels never see it.
"""

from __future__ import annotations

import torch
from torch import nn

PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str, *, error: type[Exception] = ValueError) -> str:
    """``precision`` when it is one of :data:`PRECISIONS`; else ``error`` naming the valid ones."""
    if precision not in PRECISIONS:
        raise error(f"unknown precision '{precision}'; valid: {', '.join(PRECISIONS)}")
    return precision


def autocast(precision: str, device: torch.device | str) -> torch.autocast:
    """The autocast context of ``precision`` on ``device``'s type: bfloat16 for "bf16", off for "fp32"."""
    check_precision(precision)
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16")


def model_device(module: nn.Module) -> torch.device | None:
    """Where ``module`` lives: its first parameter's device (else its first buffer's); None for neither."""
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return None
