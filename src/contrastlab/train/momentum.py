"""Momentum (EMA) target networks and MoCo's key queue: tensor kernels, no paths.

- :func:`momentum_tau`: the EMA coefficient τ on a cosine schedule over steps (BYOL, MoCo).
- :func:`ema_update_`: target ← τ·target + (1 − τ)·online, in place, without autograd.
- :class:`KeyQueue`: a ring buffer of the last K keys whose write position lives on the device,
  so enqueuing never reads a value back to the host.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def momentum_tau(step: int, total_steps: int, base: float, final: float) -> float:
    """τ at ``step`` of ``total_steps``: cosine from ``base`` (step 0) to ``final`` (step total).

        τ(step) = final − (final − base) · (cos(π · step / total) + 1) / 2

    Steps past ``total_steps`` stay at ``final``; ``total_steps`` <= 0 gives ``final``.
    """
    if total_steps <= 0 or step >= total_steps:
        return float(final)
    progress = max(step, 0) / total_steps
    return final - (final - base) * (math.cos(math.pi * progress) + 1) / 2


@torch.no_grad()
def ema_update_(target: nn.Module, online: nn.Module, tau: float) -> None:
    """In place, for every parameter: target ← τ·target + (1 − τ)·online (``torch._foreach`` ops).

    Buffers (BatchNorm's running statistics, its batch counter) are **copied** from the online
    network rather than averaged: they are statistics of the data, not learned weights, an
    integer counter cannot be averaged, and the target's BatchNorm normalizes with batch
    statistics in train mode anyway, so the copy only matters for evaluation. The two modules
    must have the same architecture (parameters and buffers in the same order and shapes).
    """
    target_params, online_params = list(target.parameters()), list(online.parameters())
    if len(target_params) != len(online_params):
        raise ValueError(f"target has {len(target_params)} parameters but online has {len(online_params)}: not the same architecture")
    if target_params:
        torch._foreach_mul_(target_params, tau)
        torch._foreach_add_(target_params, online_params, alpha=1 - tau)
    target_buffers, online_buffers = list(target.buffers()), list(online.buffers())
    if len(target_buffers) != len(online_buffers):
        raise ValueError(f"target has {len(target_buffers)} buffers but online has {len(online_buffers)}: not the same architecture")
    if target_buffers:
        torch._foreach_copy_(target_buffers, online_buffers)


@dataclass
class KeyQueue:
    """MoCo's queue of negatives: a ring buffer of the last K keys.

    ``keys`` (K, D): stored L2-normalized keys, oldest overwritten first. ``pointer`` () int64 on
    the keys' device: the row the next key goes to. :meth:`enqueue` does the index arithmetic on
    the device, so it never syncs with the host.
    """

    keys: Tensor
    pointer: Tensor

    @classmethod
    def random(cls, size: int, dim: int, generator: torch.Generator, device: torch.device | str | None = None) -> KeyQueue:
        """A queue of ``size`` normalized Gaussian keys of ``dim`` drawn from ``generator``."""
        if size < 1 or dim < 1:
            raise ValueError(f"queue size and key dimension must be at least 1, got {size} and {dim}")
        device = torch.device(device) if device is not None else generator.device
        keys = F.normalize(torch.randn(size, dim, generator=generator, device=device), dim=1)
        return cls(keys, torch.zeros((), dtype=torch.long, device=device))

    @torch.no_grad()
    def enqueue(self, new_keys: Tensor) -> None:
        """Write ``new_keys`` (B, D) at rows (pointer + 0..B−1) mod K and advance the pointer by B.

        ``new_keys`` are stored detached, as they are (normalize them first). B may exceed K: then
        only the last K survive, as if they had been enqueued one at a time.
        """
        size, dim = self.keys.shape
        if new_keys.dim() != 2 or new_keys.shape[1] != dim:
            raise ValueError(f"keys to enqueue must be (B, {dim}), got shape {tuple(new_keys.shape)}")
        batch = new_keys.shape[0]
        if batch > size:  # the earlier ones would be overwritten within this call
            new_keys = new_keys[batch - size :]
            self.pointer.add_(batch - size)
            batch = size
        rows = (self.pointer + torch.arange(batch, device=self.keys.device)) % size
        self.keys.index_copy_(0, rows, new_keys.detach().to(self.keys.dtype))
        self.pointer.copy_((self.pointer + batch) % size)

    def state_dict(self) -> dict[str, Tensor]:
        """The tensors to checkpoint: ``keys`` and ``pointer``."""
        return {"keys": self.keys, "pointer": self.pointer}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore from :meth:`state_dict`, in place (same shape)."""
        if state["keys"].shape != self.keys.shape:
            raise ValueError(f"stored queue is {tuple(state['keys'].shape)} but this one is {tuple(self.keys.shape)}: queue size or dim changed")
        self.keys.copy_(state["keys"])
        self.pointer.copy_(state["pointer"])
