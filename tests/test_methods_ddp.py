"""Barlow Twins, VICReg and MoCo v2 under DDP on two CPU processes (gloo): the loss of the gathered
global batch, DDP's averaged gradients of world·loss, and the queue after enqueueing the gathered
keys equal one process on the same global batch."""

from __future__ import annotations

import copy

import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp
from torch import nn

from contrastlab import distributed
from contrastlab.config import PretrainConfig
from contrastlab.train.methods import MethodState, StepBatch, get_method
from contrastlab.train.momentum import KeyQueue

WORLD = 2
SAMPLES, VIEWS, IN_DIM, OUT_DIM, QUEUE = 8, 2, 6, 5, 12
METHODS = ("barlow_twins", "vicreg", "mocov2")


def make_problem():
    """A small model without BatchNorm, views (SAMPLES, VIEWS, IN_DIM), labels, and a queue, the same everywhere."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(IN_DIM, 7), nn.Tanh(), nn.Linear(7, OUT_DIM))
    views = torch.randn(SAMPLES, VIEWS, IN_DIM)
    queue = KeyQueue.random(QUEUE, OUT_DIM, torch.Generator().manual_seed(1))
    return model, views, torch.arange(SAMPLES), queue


def step(method: str, model: nn.Module, views: torch.Tensor, labels: torch.Tensor, queue: KeyQueue, ddp: nn.Module | None = None):
    """One loss and backward of ``method`` on this process's views; returns (loss, the queue after enqueueing)."""
    state = MethodState(target=copy.deepcopy(model).requires_grad_(False), online_part=model, queue=queue)
    outputs = (ddp or model)(views.flatten(0, 1))
    loss, _ = get_method(method).loss(outputs, StepBatch(views, labels, VIEWS), state, PretrainConfig())
    (loss * distributed.world_size()).backward()
    if state.pending is not None:
        queue.enqueue(state.pending)
    return loss.detach(), queue.keys.clone()


def worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    torch_dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        share = slice(rank * SAMPLES // WORLD, (rank + 1) * SAMPLES // WORLD)
        results = {}
        for method in METHODS:
            model, views, labels, queue = make_problem()
            ddp = nn.parallel.DistributedDataParallel(model)
            results[f"{method}.loss"], results[f"{method}.queue"] = step(method, model, views[share], labels[share], queue, ddp)
            for name, parameter in model.named_parameters():
                results[f"{method}.{name}"] = parameter.grad
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        torch_dist.destroy_process_group()


def test_two_processes_match_one_on_the_global_batch(tmp_path):
    mp.spawn(worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    per_rank = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    for method in METHODS:
        model, views, labels, queue = make_problem()
        loss, keys = step(method, model, views, labels, queue)
        for results in per_rank:
            torch.testing.assert_close(results[f"{method}.loss"], loss, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(results[f"{method}.queue"], keys, rtol=1e-5, atol=1e-6)
            for name, parameter in model.named_parameters():
                torch.testing.assert_close(results[f"{method}.{name}"], parameter.grad, rtol=1e-4, atol=1e-6, msg=f"{method} {name}")
