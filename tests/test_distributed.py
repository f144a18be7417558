"""gather_with_grad on two CPU processes (gloo): the contrastive loss of the gathered global batch
gives each rank the single-process gradients of its embeddings, and, with the loss scaled by the
world size, DDP's averaged parameter gradients equal those of one process on the whole batch."""

from __future__ import annotations

import torch
from torch import nn

from contrastlab import distributed
from contrastlab.objectives import contrastive_loss
from helpers import rank_share, run_on_ranks

WORLD = 2
SAMPLES, VIEWS, IN_DIM, OUT_DIM = 8, 2, 6, 5  # SAMPLES is the global batch; each rank holds half
METHODS = ("simclr", "supcon")


def make_problem() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The same small model (no BatchNorm), inputs (SAMPLES, VIEWS, IN_DIM) and labels everywhere."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(IN_DIM, 7), nn.Tanh(), nn.Linear(7, OUT_DIM))
    inputs = torch.randn(SAMPLES, VIEWS, IN_DIM)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 3])  # positives cross the ranks' halves
    return model, inputs, labels


def loss_of(method: str, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """SimCLR's loss ignores the labels; SupCon's positives are the rows of the same label."""
    return contrastive_loss(embeddings, labels if method == "supcon" else None)


def embed(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """(n, V, IN_DIM) -> (n, V, OUT_DIM) through one batched forward, as the training loop does."""
    return model(inputs.flatten(0, 1)).view(len(inputs), VIEWS, OUT_DIM)


def single_process(method: str) -> dict[str, torch.Tensor]:
    model, inputs, labels = make_problem()
    embeddings = embed(model, inputs).detach().requires_grad_(True)
    loss = loss_of(method, embeddings, labels)
    loss.backward()
    model.zero_grad()
    model_loss = loss_of(method, embed(model, inputs), labels)
    model_loss.backward()
    return {"loss": loss.detach(), "embedding_grad": embeddings.grad, **{name: p.grad for name, p in model.named_parameters()}}


def worker(rank: int) -> dict[str, torch.Tensor]:
    share = rank_share(rank, SAMPLES, WORLD)
    results: dict[str, torch.Tensor] = {
        "rank": torch.tensor(distributed.rank()),
        "world": torch.tensor(distributed.world_size()),
        "is_distributed": torch.tensor(distributed.is_distributed()),
    }
    for method in METHODS:
        model, inputs, labels = make_problem()
        local_inputs, local_labels = inputs[share], labels[share]
        global_labels = distributed.gather(local_labels)

        # Gradient of the global loss w.r.t. this rank's own embeddings.
        local = embed(model, local_inputs).detach().requires_grad_(True)
        loss = loss_of(method, distributed.gather_with_grad(local), global_labels)
        loss.backward()
        results[f"{method}.loss"] = loss.detach()
        results[f"{method}.embedding_grad"] = local.grad
        results[f"{method}.labels"] = global_labels

        # One DDP step's gradients: loss scaled by the world size, DDP averages over ranks.
        ddp = nn.parallel.DistributedDataParallel(model)
        outputs = ddp(local_inputs.flatten(0, 1)).view(len(local_inputs), VIEWS, OUT_DIM)
        ddp_loss = loss_of(method, distributed.gather_with_grad(outputs), global_labels)
        (ddp_loss * distributed.world_size()).backward()
        for name, parameter in model.named_parameters():
            results[f"{method}.{name}"] = parameter.grad
    return results


def test_two_processes_match_one(tmp_path):
    per_rank = run_on_ranks(worker, tmp_path, WORLD)
    for r, results in enumerate(per_rank):
        assert (results["rank"].item(), results["world"].item(), results["is_distributed"].item()) == (r, WORLD, True)
    for method in METHODS:
        expected = single_process(method)
        _, _, labels = make_problem()
        for r, results in enumerate(per_rank):
            share = rank_share(r, SAMPLES, WORLD)
            assert torch.equal(results[f"{method}.labels"], labels)
            torch.testing.assert_close(results[f"{method}.loss"], expected["loss"], rtol=0, atol=1e-5)
            torch.testing.assert_close(results[f"{method}.embedding_grad"], expected["embedding_grad"][share], rtol=0, atol=1e-5)
            for name in ("0.weight", "0.bias", "2.weight", "2.bias"):
                torch.testing.assert_close(results[f"{method}.{name}"], expected[name], rtol=0, atol=1e-5)


def test_single_process_is_the_identity():
    assert not distributed.is_distributed()
    assert (distributed.rank(), distributed.world_size()) == (0, 1)
    tensor = torch.randn(3, 2, 4, requires_grad=True)
    assert distributed.gather_with_grad(tensor) is tensor
    assert distributed.gather(tensor) is tensor
