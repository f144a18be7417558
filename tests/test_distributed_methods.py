"""Barlow Twins, VICReg and MoCo's queue on two CPU processes (gloo) against one process on the
same global batch: the batch statistics of the gathered projections are the global batch's, each
rank gets the single-process gradient rows of its own projections, DDP's parameter gradients
(loss scaled by the world size, as train/pretrain.py does) equal one process's, and every rank's
queue, fed the gathered keys, equals the single-process queue."""

from __future__ import annotations

import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from contrastlab import distributed
from contrastlab.objectives import barlow_twins_loss, vicreg_loss
from contrastlab.train.momentum import KeyQueue

WORLD = 2
SAMPLES, IN_DIM, OUT_DIM, QUEUE = 8, 5, 4, 6  # SAMPLES is the global batch; each rank holds half
LOSSES = {"barlow": barlow_twins_loss, "vicreg": vicreg_loss}


def make_problem() -> tuple[nn.Module, torch.Tensor]:
    """The same small model (no BatchNorm) and two views' inputs (SAMPLES, 2, IN_DIM) everywhere."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(IN_DIM, 6), nn.Tanh(), nn.Linear(6, OUT_DIM))
    return model, torch.randn(SAMPLES, 2, IN_DIM)


def pair_loss(name: str, z: torch.Tensor) -> torch.Tensor:
    """The loss of projections ``z`` (n, 2, OUT_DIM) of two views."""
    return LOSSES[name](z[:, 0], z[:, 1])


def keys_of_step(step: int) -> torch.Tensor:
    """The global batch of normalized keys enqueued at ``step``: (SAMPLES, OUT_DIM)."""
    return F.normalize(torch.randn(SAMPLES, OUT_DIM, generator=torch.Generator().manual_seed(100 + step)), dim=1)


def single_process(name: str) -> dict[str, torch.Tensor]:
    model, inputs = make_problem()
    projections = model(inputs).detach().requires_grad_(True)
    loss = pair_loss(name, projections)
    loss.backward()
    pair_loss(name, model(inputs)).backward()
    return {"loss": loss.detach(), "projection_grad": projections.grad, **{n: p.grad for n, p in model.named_parameters()}}


def single_process_queue() -> torch.Tensor:
    queue = KeyQueue.random(QUEUE, OUT_DIM, torch.Generator().manual_seed(7))
    for step in range(3):  # 3 × 8 keys through a queue of 6: wraps around
        queue.enqueue(keys_of_step(step))
    return queue.keys


def worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    torch_dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        share = slice(rank * SAMPLES // WORLD, (rank + 1) * SAMPLES // WORLD)
        results: dict[str, torch.Tensor] = {}
        for name in LOSSES:
            model, inputs = make_problem()
            local = model(inputs[share]).detach().requires_grad_(True)
            loss = pair_loss(name, distributed.gather_with_grad(local))
            loss.backward()
            results[f"{name}.loss"], results[f"{name}.projection_grad"] = loss.detach(), local.grad

            ddp = nn.parallel.DistributedDataParallel(model)
            ddp_loss = pair_loss(name, distributed.gather_with_grad(ddp(inputs[share])))
            (ddp_loss * distributed.world_size()).backward()  # DDP averages over ranks
            for parameter_name, parameter in model.named_parameters():
                results[f"{name}.{parameter_name}"] = parameter.grad

        queue = KeyQueue.random(QUEUE, OUT_DIM, torch.Generator().manual_seed(7))  # same seed on every rank
        for step in range(3):
            queue.enqueue(distributed.gather(keys_of_step(step)[share]))
        results["queue"] = queue.keys
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        torch_dist.destroy_process_group()


def test_two_processes_match_one(tmp_path):
    mp.spawn(worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    per_rank = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    for name in LOSSES:
        expected = single_process(name)
        for r, results in enumerate(per_rank):
            share = slice(r * SAMPLES // WORLD, (r + 1) * SAMPLES // WORLD)
            torch.testing.assert_close(results[f"{name}.loss"], expected["loss"], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(results[f"{name}.projection_grad"], expected["projection_grad"][share], rtol=1e-5, atol=1e-6)
            for parameter_name in ("0.weight", "0.bias", "2.weight", "2.bias"):
                torch.testing.assert_close(results[f"{name}.{parameter_name}"], expected[parameter_name], rtol=1e-5, atol=1e-6)
    expected_queue = single_process_queue()
    for results in per_rank:
        assert torch.equal(results["queue"], expected_queue)


def test_per_rank_statistics_would_differ():
    # Guard for the test above: the loss of one rank's half alone is not the global loss, so
    # matching it proves the statistics came from the gathered batch.
    model, inputs = make_problem()
    with torch.no_grad():
        projections = model(inputs)
        for name in LOSSES:
            half = pair_loss(name, projections[: SAMPLES // WORLD])
            assert not torch.allclose(half, pair_loss(name, projections), rtol=1e-3)
