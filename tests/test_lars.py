"""LARS against a slow reference step written from the update in contrastlab/train/lars.py's
docstring (plain Python floats), and zero host syncs per step."""

from __future__ import annotations

import math

import pytest
import torch

from contrastlab.train.lars import LARS
from contrastlab.utils.host_sync import HostSyncCounter


def reference_lars(params, grads_per_step, lr, momentum, weight_decay, eta, eps, clip_lr, exclude):
    """Run the update on lists of floats, one tensor at a time; returns the final values."""
    values = [p.flatten().tolist() for p in params]
    buffers = [None] * len(params)
    for grads in grads_per_step:
        for i, (param, grad) in enumerate(zip(params, grads)):
            w, g = values[i], grad.flatten().tolist()
            w_norm, g_norm = math.sqrt(sum(x * x for x in w)), math.sqrt(sum(x * x for x in g))
            adapted = not (exclude and param.dim() <= 1)
            if adapted and w_norm > 0 and g_norm > 0:
                ratio = eta * w_norm / (g_norm + weight_decay * w_norm + eps)
                if clip_lr:
                    ratio = min(ratio / lr, 1.0)
                d = [(gj + weight_decay * wj) * ratio for gj, wj in zip(g, w)]
            else:
                d = list(g)
            if momentum > 0:
                buffers[i] = d if buffers[i] is None else [momentum * b + dj for b, dj in zip(buffers[i], d)]
                d = buffers[i]
            values[i] = [wj - lr * dj for wj, dj in zip(w, d)]
    return [torch.tensor(v, dtype=torch.float64).view_as(p) for v, p in zip(values, params)]


def _problem(seed):
    generator = torch.Generator().manual_seed(seed)
    params = [torch.randn(4, 3, generator=generator, dtype=torch.float64),  # a weight matrix
              torch.randn(3, generator=generator, dtype=torch.float64),  # a bias
              torch.zeros(2, 2, dtype=torch.float64),  # zero norm: no adaptation
              torch.randn(2, 1, 2, generator=generator, dtype=torch.float64)]  # gets zero gradients below
    grads = [[torch.randn(p.shape, generator=generator, dtype=torch.float64) for p in params] for _ in range(3)]
    for step in grads:
        step[3] = torch.zeros_like(step[3])
    return params, grads


@pytest.mark.parametrize("clip_lr", [False, True])
@pytest.mark.parametrize("exclude", [False, True])
@pytest.mark.parametrize("momentum, weight_decay, lr", [(0.9, 1e-4, 0.3), (0.0, 5e-2, 0.1), (0.5, 0.0, 2.0)])
def test_matches_reference_over_three_steps(clip_lr, exclude, momentum, weight_decay, lr):
    params, grads = _problem(int(clip_lr) + 2 * int(exclude))
    settings = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "eta": 0.02, "eps": 1e-8,
                "clip_lr": clip_lr, "exclude_bias_and_norm": exclude}
    expected = reference_lars(params, grads, settings["lr"], momentum, weight_decay, 0.02, 1e-8, clip_lr, exclude)
    tensors = [p.clone().requires_grad_(True) for p in params]
    optimizer = LARS(tensors, **settings)
    for step in grads:
        for tensor, grad in zip(tensors, step):
            tensor.grad = grad.clone()
        optimizer.step()
    for tensor, want in zip(tensors, expected):
        torch.testing.assert_close(tensor.detach(), want, rtol=1e-12, atol=1e-14)


def test_trust_ratio_closed_form():
    # One step without momentum or decay: w ← w − lr·η·‖w‖/‖g‖·g (eps 0), so the step's norm is lr·η·‖w‖.
    weight = torch.tensor([[3.0, 4.0]], dtype=torch.float64, requires_grad=True)
    weight.grad = torch.tensor([[0.0, 10.0]], dtype=torch.float64)
    LARS([weight], lr=0.5, momentum=0.0, eta=0.1, eps=0.0).step()
    torch.testing.assert_close(weight.detach(), torch.tensor([[3.0, 4.0 - 0.5 * 0.1 * 5.0]], dtype=torch.float64))


def test_step_has_no_host_sync_and_works_with_a_model():
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    optimizer = LARS(model.parameters(), lr=0.1, weight_decay=1e-4, clip_lr=True, exclude_bias_and_norm=True)
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.randn(8, 5)).pow(2).mean().backward()
    with HostSyncCounter() as counter:
        optimizer.step()
        optimizer.step()  # the second step takes the momentum-buffer branch
    assert counter.total == 0, dict(counter.counts)
    assert all(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters()))


@pytest.mark.parametrize("kwargs, message", [
    ({"lr": 0.0}, "lr must be positive"),
    ({"lr": 0.1, "momentum": 1.0}, "momentum"),
    ({"lr": 0.1, "eta": 0.0}, "eta > 0"),
])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LARS([torch.zeros(2, requires_grad=True)], **kwargs)
