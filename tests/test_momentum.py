"""momentum_tau, ema_update_ and KeyQueue against slow references written from their definitions."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from contrastlab.train.momentum import KeyQueue, ema_update_, momentum_tau
from contrastlab.utils.host_sync import HostSyncCounter


def test_tau_schedule_endpoints_midpoint_and_monotone():
    assert momentum_tau(0, 100, 0.99, 1.0) == pytest.approx(0.99, abs=1e-15)
    assert momentum_tau(100, 100, 0.99, 1.0) == 1.0
    assert momentum_tau(250, 100, 0.99, 1.0) == 1.0  # past the end it stays at the final value
    assert momentum_tau(50, 100, 0.99, 0.999) == pytest.approx((0.99 + 0.999) / 2, abs=1e-15)
    assert momentum_tau(25, 100, 0.9, 1.0) == pytest.approx(1.0 - 0.1 * (math.cos(math.pi / 4) + 1) / 2, abs=1e-15)
    values = [momentum_tau(step, 37, 0.99, 0.999) for step in range(38)]
    assert all(later > earlier for earlier, later in zip(values, values[1:]))
    assert momentum_tau(0, 0, 0.99, 1.0) == 1.0


def _network(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2, bias=False))


def test_ema_update_matches_slow_reference_and_copies_buffers():
    target, online = _network(0), _network(1)
    online.train()(torch.randn(5, 3))  # move online's BatchNorm statistics away from target's
    before = copy.deepcopy(target)
    ema_update_(target, online, 0.9)
    for (name, new), old, source in zip(target.named_parameters(), before.parameters(), online.parameters()):
        expected = torch.tensor([0.9 * float(t) + 0.1 * float(o) for t, o in zip(old.detach().flatten().tolist(), source.detach().flatten().tolist())], dtype=torch.float32)
        torch.testing.assert_close(new.flatten(), expected, rtol=1e-6, atol=1e-7, msg=name)
    for new, source in zip(target.buffers(), online.buffers()):
        assert torch.equal(new, source)
    kept = copy.deepcopy(target)
    ema_update_(target, online, 1.0)  # τ = 1 keeps the parameters
    assert all(torch.equal(a, b) for a, b in zip(target.parameters(), kept.parameters()))
    ema_update_(target, online, 0.0)  # τ = 0 copies the online network
    assert all(torch.equal(a, b) for a, b in zip(target.parameters(), online.parameters()))


def test_target_gets_no_gradient_and_online_keeps_its_own():
    target, online = _network(0), _network(1)
    for parameter in target.parameters():
        parameter.requires_grad_(False)
    x = torch.randn(6, 3)
    online(x).sum().backward()
    grads = [p.grad.clone() for p in online.parameters()]
    ema_update_(target, online, 0.5)
    assert all(p.grad is None and not p.requires_grad for p in target.parameters())
    assert all(torch.equal(p.grad, g) for p, g in zip(online.parameters(), grads))
    assert target(x).grad_fn is None


def test_ema_update_refuses_different_architectures():
    with pytest.raises(ValueError, match="not the same architecture"):
        ema_update_(nn.Linear(3, 4), nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 4)), 0.9)


@pytest.mark.parametrize("size, batches", [(5, [2, 2, 2, 3]), (4, [4, 4, 1]), (3, [7, 1]), (6, [1, 1, 1, 1, 1, 1, 1])])
def test_enqueue_order_with_wraparound_matches_a_slow_ring(size, batches):
    dim = 2
    queue = KeyQueue.random(size, dim, torch.Generator().manual_seed(0))
    reference = [row.clone() for row in queue.keys]  # a plain list written one key at a time
    position, counter = 0, 0
    for batch in batches:
        new = torch.arange(counter, counter + batch * dim, dtype=torch.float32).view(batch, dim)
        counter += batch * dim
        queue.enqueue(new)
        for row in new:
            reference[position] = row
            position = (position + 1) % size
        assert torch.equal(queue.keys, torch.stack(reference))
        assert int(queue.pointer) == position


def test_random_queue_is_normalized_and_reproducible():
    a = KeyQueue.random(8, 3, torch.Generator().manual_seed(7))
    b = KeyQueue.random(8, 3, torch.Generator().manual_seed(7))
    assert torch.equal(a.keys, b.keys) and int(a.pointer) == 0
    torch.testing.assert_close(a.keys.norm(dim=1), torch.ones(8))


def test_enqueue_has_no_host_sync_and_stores_detached_keys():
    queue = KeyQueue.random(16, 4, torch.Generator().manual_seed(1))
    keys = torch.randn(6, 4, requires_grad=True)
    with HostSyncCounter() as counter:
        for _ in range(5):
            queue.enqueue(keys * 2)
    assert counter.total == 0, dict(counter.counts)
    assert not queue.keys.requires_grad


def test_state_dict_round_trip_and_errors():
    queue = KeyQueue.random(5, 2, torch.Generator().manual_seed(2))
    queue.enqueue(torch.ones(3, 2))
    other = KeyQueue.random(5, 2, torch.Generator().manual_seed(3))
    other.load_state_dict({k: v.clone() for k, v in queue.state_dict().items()})
    assert torch.equal(other.keys, queue.keys) and int(other.pointer) == 3
    with pytest.raises(ValueError, match="queue size or dim changed"):
        KeyQueue.random(4, 2, torch.Generator()).load_state_dict(queue.state_dict())
    with pytest.raises(ValueError, match=r"must be \(B, 2\)"):
        queue.enqueue(torch.ones(3, 5))
