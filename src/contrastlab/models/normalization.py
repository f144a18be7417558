"""The input normalization an encoder carries in its ``normalize`` buffers, read and replaced.

Every encoder normalizes its pixels inside the model (``encoder.normalize.mean`` / ``.std``,
shape (1, C, 1, 1)), so the statistics travel with the weights. The original study normalized
pretraining with CIFAR-10's mean and a hard-coded std, and its probes and analyses with the
downstream data's statistics; these functions let the stages reproduce that.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

# SupContrast's main_supcon.py (CIFAR-10): transforms.Normalize(mean=(0.4914, 0.4822, 0.4465),
# std=(0.2023, 0.1994, 0.2010)). The std is not CIFAR-10's per-pixel std (≈ 0.247, 0.243, 0.261).
ORIGINAL_STD = (0.2023, 0.1994, 0.2010)


def has_normalization(encoder: nn.Module) -> bool:
    """Whether ``encoder`` holds its input normalization as ``normalize.mean``/``normalize.std`` buffers."""
    normalize = getattr(encoder, "normalize", None)
    return isinstance(getattr(normalize, "mean", None), torch.Tensor) and isinstance(getattr(normalize, "std", None), torch.Tensor)


def input_normalization(encoder: nn.Module) -> dict[str, list[float]] | None:
    """{"mean": [...], "std": [...]} of the encoder's buffers; None when it normalizes otherwise."""
    if not has_normalization(encoder):
        return None
    n = encoder.normalize
    return {"mean": n.mean.flatten().tolist(), "std": n.std.flatten().tolist()}


def set_input_normalization(encoder: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
    """Overwrite the encoder's normalization buffers in place (same device and dtype)."""
    if not has_normalization(encoder):
        raise ValueError("this encoder has no normalize.mean/std buffers to replace")
    n = encoder.normalize
    channels = n.mean.numel()
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"the encoder normalizes {channels} channel(s), got {len(mean)} means and {len(std)} stds")
    if min(float(s) for s in std) <= 0:
        raise ValueError(f"std must be > 0, got {list(std)}")
    with torch.no_grad():
        n.mean.copy_(torch.tensor([float(m) for m in mean], dtype=n.mean.dtype).view_as(n.mean))
        n.std.copy_(torch.tensor([float(s) for s in std], dtype=n.std.dtype).view_as(n.std))
