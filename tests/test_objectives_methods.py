"""BYOL, SimSiam, Barlow Twins, VICReg and MoCo losses against slow float64 loop references
written from their formulas (values and input gradients), closed-form cases, stop-gradients,
symmetry, and zero host syncs per call."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from contrastlab.objectives import barlow_twins_loss, byol_loss, moco_loss, simsiam_loss, vicreg_loss
from contrastlab.utils.host_sync import HostSyncCounter


def _cosine(a, b):
    return torch.dot(a, b) / (torch.sqrt(torch.dot(a, a)) * torch.sqrt(torch.dot(b, b)))


def reference_byol(p, z):
    z = z.detach()
    return sum(2 - 2 * _cosine(p[n], z[n]) for n in range(len(p))) / len(p)


def reference_simsiam(p, z):
    z = z.detach()
    return -sum(_cosine(p[n], z[n]) for n in range(len(p))) / len(p)


def _reference_standardize(z):
    """Column by column: (z − mean) / sqrt(biased var + 1e-5)."""
    n_rows, dim = z.shape
    columns = []
    for d in range(dim):
        mean = sum(z[n, d] for n in range(n_rows)) / n_rows
        var = sum((z[n, d] - mean) ** 2 for n in range(n_rows)) / n_rows
        columns.append(torch.stack([(z[n, d] - mean) / torch.sqrt(var + 1e-5) for n in range(n_rows)]))
    return torch.stack(columns, dim=1)


def reference_barlow(z1, z2, lambd, scale):
    a, b = _reference_standardize(z1), _reference_standardize(z2)
    n_rows, dim = z1.shape
    total = 0.0
    for i in range(dim):
        for j in range(dim):
            c_ij = sum(a[n, i] * b[n, j] for n in range(n_rows)) / n_rows
            total = total + ((1 - c_ij) ** 2 if i == j else lambd * c_ij**2)
    return scale * total


def _reference_covariance(z):
    n_rows, dim = z.shape
    mean = [sum(z[n, d] for n in range(n_rows)) / n_rows for d in range(dim)]
    return [[sum((z[n, i] - mean[i]) * (z[n, j] - mean[j]) for n in range(n_rows)) / (n_rows - 1) for j in range(dim)] for i in range(dim)]


def reference_vicreg(z1, z2, sim_weight, var_weight, cov_weight):
    n_rows, dim = z1.shape
    invariance = sum((z1[n, d] - z2[n, d]) ** 2 for n in range(n_rows) for d in range(dim)) / (n_rows * dim)
    variance, covariance = 0.0, 0.0
    for z in (z1, z2):
        cov = _reference_covariance(z)
        variance = variance + sum(torch.relu(1 - torch.sqrt(cov[d][d] + 1e-4)) for d in range(dim)) / dim
        covariance = covariance + sum(cov[i][j] ** 2 for i in range(dim) for j in range(dim) if i != j) / dim
    return sim_weight * invariance + var_weight * variance + cov_weight * covariance


def reference_moco(q, k, queue, temperature):
    k = k.detach()
    total = 0.0
    for n in range(len(q)):
        qn, kn = q[n] / q[n].norm(), k[n] / k[n].norm()
        logits = [torch.dot(qn, kn) / temperature] + [torch.dot(qn, queue[j]) / temperature for j in range(len(queue))]
        total = total - (logits[0] - torch.log(sum(torch.exp(x) for x in logits)))
    return total / len(q)


def _inputs(seed, *shapes, scale=2.0):
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(*shape, generator=generator, dtype=torch.float64) * scale).requires_grad_(True) for shape in shapes]


def _queue(seed, size, dim):
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(size, dim, generator=generator, dtype=torch.float64), dim=1)


def _value_and_grads(fn, tensors):
    loss = fn(*tensors)
    wanted = [t for t in tensors if t.requires_grad]
    grads = torch.autograd.grad(loss, wanted, allow_unused=True)
    return loss, [torch.zeros_like(t) if g is None else g for t, g in zip(wanted, grads)]


CASES = {  # name: (loss under test, slow reference, input shapes), loss hyper-parameters not at their defaults
    "byol": (byol_loss, reference_byol),
    "simsiam": (simsiam_loss, reference_simsiam),
    "barlow": (lambda a, b: barlow_twins_loss(a, b, lambd=0.03, scale=0.5), lambda a, b: reference_barlow(a, b, 0.03, 0.5)),
    "barlow_default": (barlow_twins_loss, lambda a, b: reference_barlow(a, b, 0.0051, 0.1)),
    "vicreg": (lambda a, b: vicreg_loss(a, b, 3.0, 2.0, 0.5), lambda a, b: reference_vicreg(a, b, 3.0, 2.0, 0.5)),
    "vicreg_default": (vicreg_loss, lambda a, b: reference_vicreg(a, b, 25.0, 25.0, 1.0)),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("n, d", [(2, 3), (5, 4), (7, 6)])
def test_pair_losses_match_reference_value_and_gradient(name, n, d):
    fn, reference = CASES[name]
    # Scale 0.3 keeps some VICReg std below 1, so the relu's active branch is covered too.
    a, b = _inputs(n * 10 + d, (n, d), (n, d), scale=0.3 if name.startswith("vicreg") else 2.0)
    loss, grads = _value_and_grads(fn, [a, b])
    a_ref, b_ref = (t.detach().clone().requires_grad_(True) for t in (a, b))
    expected, expected_grads = _value_and_grads(reference, [a_ref, b_ref])
    assert loss.dim() == 0 and loss.dtype == torch.float64
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("queue_size", [0, 1, 9])
@pytest.mark.parametrize("temperature", [0.2, 0.07, 1.0])
def test_moco_matches_reference_value_and_gradient(queue_size, temperature):
    q, k = _inputs(queue_size + 3, (5, 4), (5, 4))
    queue = _queue(queue_size, queue_size, 4)
    loss, (q_grad, k_grad) = _value_and_grads(lambda a, b: moco_loss(a, b, queue, temperature), [q, k])
    q_ref = q.detach().clone().requires_grad_(True)
    expected = reference_moco(q_ref, k.detach(), queue, temperature)
    (expected_grad,) = torch.autograd.grad(expected, q_ref)
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(q_grad, expected_grad, rtol=1e-8, atol=1e-12)
    assert torch.equal(k_grad, torch.zeros_like(k))


def test_targets_and_keys_get_no_gradient():
    p, z = _inputs(0, (4, 3), (4, 3))
    for loss in (byol_loss(p, z), simsiam_loss(p, z), moco_loss(p, z, _queue(1, 6, 3))):
        p_grad, z_grad = torch.autograd.grad(loss, [p, z], allow_unused=True)
        assert z_grad is None and p_grad is not None and p_grad.abs().sum() > 0
    queue = _queue(2, 6, 3).requires_grad_(True)
    (queue_grad,) = torch.autograd.grad(moco_loss(p, z, queue), [queue], allow_unused=True)
    assert queue_grad is None


def test_closed_forms():
    (x,) = _inputs(1, (6, 5))
    x = x.detach()
    torch.testing.assert_close(byol_loss(x, 3 * x), torch.tensor(0.0, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(byol_loss(x, -x), torch.tensor(4.0, dtype=torch.float64))
    torch.testing.assert_close(simsiam_loss(x, 2 * x), torch.tensor(-1.0, dtype=torch.float64))
    # Orthogonal ±1 columns: mean 0, biased var 1, uncorrelated, so C = c·I with c = 1/(1 + eps)
    # (BatchNorm's eps) and the loss is scale·D·(1 − c)²: 0 up to the eps.
    design = torch.tensor([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=torch.float64)
    c = 1 / (1 + 1e-5)
    torch.testing.assert_close(barlow_twins_loss(design, design), torch.tensor(0.1 * 3 * (1 - c) ** 2, dtype=torch.float64))
    # Standardization makes it invariant to a per-view shift and a (large) scale, up to the eps.
    torch.testing.assert_close(barlow_twins_loss(design, design * 1e3 + 5), torch.tensor(0.0, dtype=torch.float64), atol=1e-9, rtol=0)
    # Swapped columns: C is c times a permutation matrix, two zero diagonal entries and two c off it.
    swapped = design[:, [1, 0, 2]]
    torch.testing.assert_close(barlow_twins_loss(design, swapped, lambd=0.25, scale=2.0), torch.tensor(2.0 * (2 + (1 - c) ** 2 + 0.25 * 2 * c**2), dtype=torch.float64))
    # VICReg: identical, uncorrelated views with unbiased std sqrt(1 - 1e-4) ⇒ every term is 0.
    vic = design * math.sqrt((1 - 1e-4) * 3 / 4)
    torch.testing.assert_close(vicreg_loss(vic, vic), torch.tensor(0.0, dtype=torch.float64), atol=1e-12, rtol=0)
    # A collapsed batch: no invariance, no covariance, variance term relu(1 − sqrt(1e-4)) = 0.99 per view.
    collapsed = torch.ones(4, 3, dtype=torch.float64)
    torch.testing.assert_close(vicreg_loss(collapsed, collapsed), torch.tensor(25.0 * 2 * 0.99, dtype=torch.float64))
    # MoCo with an empty queue: one logit per row, so the loss is 0 whatever q and k are.
    torch.testing.assert_close(moco_loss(x, x.flip(0), _queue(0, 0, 5)), torch.tensor(0.0, dtype=torch.float64))
    # MoCo, k = q and K negatives orthogonal to q: log(1 + K·exp(−1/T)) − ... = −log(e^{1/T} / (e^{1/T} + K)).
    q = torch.eye(5, dtype=torch.float64)[:2]
    queue = torch.eye(5, dtype=torch.float64)[2:]
    expected = -math.log(math.exp(1 / 0.2) / (math.exp(1 / 0.2) + 3))
    torch.testing.assert_close(moco_loss(q, q, queue), torch.tensor(expected, dtype=torch.float64))


def test_symmetric_in_the_two_views():
    a, b = (t.detach() for t in _inputs(3, (6, 4), (6, 4)))
    torch.testing.assert_close(vicreg_loss(a, b), vicreg_loss(b, a), rtol=1e-12, atol=0)
    # C(b, a) = C(a, b)ᵀ: the same diagonal and the same off-diagonal squares.
    torch.testing.assert_close(barlow_twins_loss(a, b), barlow_twins_loss(b, a), rtol=1e-12, atol=0)
    # The cosine is symmetric, so BYOL and SimSiam values (not gradients) are too.
    torch.testing.assert_close(byol_loss(a, b), byol_loss(b, a), rtol=1e-12, atol=0)
    torch.testing.assert_close(simsiam_loss(a, b), simsiam_loss(b, a), rtol=1e-12, atol=0)


def test_float32_under_bfloat16_autocast():
    generator = torch.Generator().manual_seed(4)
    a, b = torch.randn(8, 6, generator=generator), torch.randn(8, 6, generator=generator)
    queue = F.normalize(torch.randn(5, 6, generator=generator), dim=1)
    calls = [lambda: byol_loss(a, b), lambda: simsiam_loss(a, b), lambda: barlow_twins_loss(a, b),
             lambda: vicreg_loss(a, b), lambda: moco_loss(a, b, queue)]
    for call in calls:
        plain = call()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            under_autocast = call()
        assert plain.dtype == under_autocast.dtype == torch.float32
        torch.testing.assert_close(under_autocast, plain, rtol=0, atol=0)
    half = byol_loss(a.bfloat16(), b.bfloat16())
    assert half.dtype == torch.float32


def test_no_host_syncs():
    p, z = _inputs(5, (8, 6), (8, 6))
    queue = _queue(6, 10, 6)
    calls = [lambda: byol_loss(p, z), lambda: simsiam_loss(p, z), lambda: barlow_twins_loss(p, z),
             lambda: vicreg_loss(p, z), lambda: moco_loss(p, z, queue)]
    for call in calls:
        with HostSyncCounter() as counter:
            call().backward()
        assert counter.total == 0, dict(counter.counts)


@pytest.mark.parametrize("call, message", [
    (lambda: byol_loss(torch.zeros(3, 4), torch.zeros(3, 5)), "must both be"),
    (lambda: simsiam_loss(torch.zeros(3, 4, 1), torch.zeros(3, 4, 1)), "must both be"),
    (lambda: barlow_twins_loss(torch.zeros(1, 4), torch.zeros(1, 4)), "at least 2 rows"),
    (lambda: vicreg_loss(torch.zeros(1, 4), torch.zeros(1, 4)), "at least 2 rows"),
    (lambda: moco_loss(torch.zeros(3, 4), torch.zeros(3, 4), torch.zeros(5, 3)), "queue must be"),
    (lambda: moco_loss(torch.zeros(3, 4), torch.zeros(3, 4), torch.zeros(5, 4), temperature=0.0), "temperature"),
])
def test_shape_errors_are_one_line(call, message):
    with pytest.raises(ValueError, match=message) as error:
        call()
    assert "\n" not in str(error.value)
