"""Small helpers for data-parallel pretraining (``torchrun``, DDP); no-ops in a single process.

The contrastive loss needs every embedding of the global batch as a contrast, so each rank
gathers the embeddings of all ranks with :func:`gather_with_grad` and computes the loss of the
whole global batch. Gradient bookkeeping, per step:

- Every rank computes the same global loss L. The backward of :func:`gather_with_grad` hands
  rank r the gradient of its own slice only: exactly ∂L/∂z_r, the single-process gradient of
  its local embeddings (the other ranks' slices are constants on rank r; their owners
  differentiate them).
- The parameter gradient on rank r is then the share of ∂L/∂θ that flows through rank r's
  samples; the full gradient is the **sum** of the shares over ranks. DDP **averages**
  gradients over ranks, so backpropagate ``world_size() * L`` to get ∂L/∂θ, the gradient of a
  single process on the whole batch. (An all-reduce sum in the gather's backward would be the
  equivalent alternative; this module keeps the backward local and the scaling explicit.)

Every rank must pass a tensor of the same shape. BatchNorm statistics stay per rank unless the
model uses SyncBatchNorm, so only models without BatchNorm match a single process exactly.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as torch_dist
from torch import Tensor

from .errors import ConfigError


def is_distributed() -> bool:
    """True inside an initialized process group (e.g. under ``torchrun``)."""
    return torch_dist.is_available() and torch_dist.is_initialized()


def rank() -> int:
    """This process's rank; 0 when not distributed."""
    return torch_dist.get_rank() if is_distributed() else 0


def barrier() -> None:
    """Wait for every rank (nothing to wait for when not distributed)."""
    if is_distributed():
        torch_dist.barrier()


def world_size() -> int:
    """The number of processes; 1 when not distributed."""
    return torch_dist.get_world_size() if is_distributed() else 1


def _all_gather(tensor: Tensor) -> Tensor:
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    torch_dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0 whose backward returns this rank's slice of the incoming gradient."""

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:  # type: ignore[override]
        ctx.start, ctx.stop = rank() * tensor.shape[0], (rank() + 1) * tensor.shape[0]
        return _all_gather(tensor)

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> Tensor:  # type: ignore[override]
        return grad_output[ctx.start : ctx.stop]


def gather(tensor: Tensor) -> Tensor:
    """Concatenate every rank's ``tensor`` (n, ...) in rank order -> (world·n, ...); no gradient.
    The identity when not distributed."""
    if not is_distributed():
        return tensor
    with torch.no_grad():
        return _all_gather(tensor)


def gather_with_grad(tensor: Tensor) -> Tensor:
    """Like :func:`gather`, differentiable: (n, ...) -> (world·n, ...) in rank order.

    The backward gives this rank the gradient of its own slice (see the module docstring for
    why the loss is then scaled by ``world_size()`` under DDP). The identity when not distributed.
    """
    if not is_distributed():
        return tensor
    return _GatherWithGrad.apply(tensor)


def global_rank() -> int:
    """This process's rank, also before the process group exists (``RANK`` of torchrun or the Slurm export); 0 alone."""
    return rank() if is_distributed() else int(os.environ.get("RANK", "0"))


def local_cuda_index() -> int:
    """The index of this process's GPU among the GPUs it sees.

    Under torchrun or Slurm a node's tasks either all see every GPU of the node (then the task
    with local rank r takes GPU r) or each sees only its own (Slurm binding one GPU per task,
    ``CUDA_VISIBLE_DEVICES`` with one entry: then it is GPU 0, whatever the local rank).
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    visible = torch.cuda.device_count()
    if visible <= 1:
        return 0
    if local_rank >= visible:
        raise ConfigError(f"LOCAL_RANK={local_rank} but this process sees {visible} GPUs; give each task one GPU "
                          "or every task all of the node's GPUs")
    return local_rank


def init_from_env(device: str = "auto") -> None:
    """Join the process group that ``torchrun`` describes in the environment (RANK, WORLD_SIZE, ...).

    Does nothing outside torchrun. Uses NCCL on CUDA (one GPU per local rank, see
    :func:`local_cuda_index`) and gloo on CPU.
    """
    if is_distributed() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    use_cuda = torch.cuda.is_available() and device != "cpu"
    if use_cuda:
        torch.cuda.set_device(local_cuda_index())
    torch_dist.init_process_group(backend="nccl" if use_cuda else "gloo")


def local_device(device: str = "auto") -> torch.device:
    """The device of this process: its local GPU (:func:`local_cuda_index`) when there is one, else ``device`` resolved."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_cuda_index())
        return torch.device("cpu")
    return torch.device(device)
