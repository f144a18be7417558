"""Barlow Twins, VICReg and MoCo v2 under DDP on two CPU processes (gloo) against one process on the
same global batch, through the methods' own interface (train/methods.py): the loss of the gathered
batch, DDP's averaged gradients of world·loss (as train/pretrain.py scales it) and the queue after
enqueueing the gathered keys. Beside it, at the loss level: each rank gets the single-process
gradient rows of its own projections, and a queue fed gathered keys wraps around as one process's."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from contrastlab import distributed
from contrastlab.config import PretrainConfig
from contrastlab.objectives import barlow_twins_loss, vicreg_loss
from contrastlab.train.methods import MethodState, StepBatch, get_method
from contrastlab.train.momentum import KeyQueue
from helpers import rank_share, run_on_ranks

WORLD = 2
SAMPLES, VIEWS, IN_DIM, OUT_DIM, QUEUE = 8, 2, 6, 5, 12  # SAMPLES is the global batch; each rank holds half
METHODS = ("barlow_twins", "vicreg", "mocov2")
LOSSES = {"barlow": barlow_twins_loss, "vicreg": vicreg_loss}


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


def pair_loss(name: str, z: torch.Tensor) -> torch.Tensor:
    """The loss of projections ``z`` (n, 2, OUT_DIM) of two views."""
    return LOSSES[name](z[:, 0], z[:, 1])


def single_process_projection_grads(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, its gradient w.r.t. the projections (SAMPLES, 2, OUT_DIM)) on the whole batch."""
    model, views, _, _ = make_problem()
    projections = model(views).detach().requires_grad_(True)
    loss = pair_loss(name, projections)
    loss.backward()
    return loss.detach(), projections.grad


def keys_of_step(step: int) -> torch.Tensor:
    """The global batch of normalized keys enqueued at ``step``: (SAMPLES, OUT_DIM)."""
    return F.normalize(torch.randn(SAMPLES, OUT_DIM, generator=torch.Generator().manual_seed(100 + step)), dim=1)


def fed_queue(share: slice | None = None) -> torch.Tensor:
    """A queue of QUEUE after 3 × SAMPLES keys (it wraps around); with ``share``, each step's keys
    are this rank's rows, gathered."""
    queue = KeyQueue.random(QUEUE, OUT_DIM, torch.Generator().manual_seed(7))  # same seed on every rank
    for k in range(3):
        queue.enqueue(keys_of_step(k) if share is None else distributed.gather(keys_of_step(k)[share]))
    return queue.keys


def worker(rank: int) -> dict[str, torch.Tensor]:
    share = rank_share(rank, SAMPLES, WORLD)
    results = {}
    for method in METHODS:
        model, views, labels, queue = make_problem()
        ddp = nn.parallel.DistributedDataParallel(model)
        results[f"{method}.loss"], results[f"{method}.queue"] = step(method, model, views[share], labels[share], queue, ddp)
        for name, parameter in model.named_parameters():
            results[f"{method}.{name}"] = parameter.grad
    for name in LOSSES:
        model, views, _, _ = make_problem()
        local = model(views[share]).detach().requires_grad_(True)
        loss = pair_loss(name, distributed.gather_with_grad(local))
        loss.backward()
        results[f"{name}.loss"], results[f"{name}.projection_grad"] = loss.detach(), local.grad
    results["fed_queue"] = fed_queue(share)
    return results


def test_two_processes_match_one_on_the_global_batch(tmp_path):
    per_rank = run_on_ranks(worker, tmp_path, WORLD)
    for method in METHODS:
        model, views, labels, queue = make_problem()
        loss, keys = step(method, model, views, labels, queue)
        for results in per_rank:
            torch.testing.assert_close(results[f"{method}.loss"], loss, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(results[f"{method}.queue"], keys, rtol=1e-5, atol=1e-6)
            for name, parameter in model.named_parameters():
                torch.testing.assert_close(results[f"{method}.{name}"], parameter.grad, rtol=1e-4, atol=1e-6, msg=f"{method} {name}")
    for name in LOSSES:
        loss, projection_grad = single_process_projection_grads(name)
        for r, results in enumerate(per_rank):
            torch.testing.assert_close(results[f"{name}.loss"], loss, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(results[f"{name}.projection_grad"], projection_grad[rank_share(r, SAMPLES, WORLD)],
                                       rtol=1e-5, atol=1e-6)
    for results in per_rank:
        assert torch.equal(results["fed_queue"], fed_queue())


def test_per_rank_statistics_would_differ():
    # Guard for the test above: the loss of one rank's half alone is not the global loss, so
    # matching it proves the statistics came from the gathered batch.
    model, views, _, _ = make_problem()
    with torch.no_grad():
        projections = model(views)
        for name in LOSSES:
            half = pair_loss(name, projections[: SAMPLES // WORLD])
            assert not torch.allclose(half, pair_loss(name, projections), rtol=1e-3)
