"""Counting the operations that make a CUDA host wait for the device.

On a GPU, ``.item()``, ``bool(tensor)``, ``nonzero``, boolean-mask indexing and friends copy a
result to the host before Python can go on, which stalls the stream. On the CPU they cost
nothing, so they are invisible to timing: :class:`HostSyncCounter` counts them instead, on any
device, by watching the ATen calls (a ``TorchDispatchMode``). Tests use it to prove that a hot
loop (a pretraining step, a probe step, a landscape row, a Hessian-vector product, an attack
step) has no such read-back inside.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# Ops whose output (value or shape) depends on tensor data, so the host must wait for it.
_ALWAYS_SYNC = {
    "aten::_local_scalar_dense",  # .item(), float(t), int(t), bool(t)
    "aten::is_nonzero",
    "aten::equal",
    "aten::allclose",
    "aten::nonzero",
    "aten::nonzero_static",
    "aten::masked_select",
    "aten::_unique",
    "aten::_unique2",
    "aten::unique_dim",
    "aten::unique_consecutive",
    "aten::argwhere",
}


def _has_bool_index(indices: Any) -> bool:
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (indices or ()))


def is_host_sync(func: Any, args: tuple, kwargs: dict) -> bool:
    """True when the ATen call ``func(*args, **kwargs)`` makes the host wait for its result."""
    name = func._schema.name
    if name in _ALWAYS_SYNC:
        return True
    if name in ("aten::index", "aten::index_put", "aten::index_put_", "aten::_index_put_impl_"):
        return _has_bool_index(args[1] if len(args) > 1 else kwargs.get("indices"))
    if name == "aten::repeat_interleave":  # a tensor of repeats without output_size: its length is data
        return isinstance(args[0], torch.Tensor) and kwargs.get("output_size") is None and (
            len(args) < 2 or isinstance(args[1], torch.Tensor) or func._overloadname == "Tensor")
    return False


class HostSyncCounter(TorchDispatchMode):
    """Context manager counting host syncs by op name: ``with HostSyncCounter() as c: ...; c.total``."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: D105
        kwargs = kwargs or {}
        if is_host_sync(func, args, kwargs):
            self.counts[func._schema.name] += 1
        return func(*args, **kwargs)

    @property
    def total(self) -> int:
        return sum(self.counts.values())
