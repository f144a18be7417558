"""Hessian top eigenvalues and trace: against the exact Hessian, closed forms, invariances, state left untouched."""

from __future__ import annotations

import contextlib
import copy
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from contrastlab.analysis.checks import SharpnessInputError, parameter_mask
from contrastlab.analysis.hessian import HessianOperator, HessianSettings, LinearOperator, check_normalizations
from contrastlab.analysis.sharpness import (
    EigenEstimate,
    SharpnessSettings,
    TraceEstimate,
    hessian_sharpness,
    lanczos_top_eigenvalues,
    stochastic_trace,
    stochastic_traces,
)
from contrastlab.models import classifier, linear_classifier, tiny_cnn

N_CLASSES = 3


pytestmark = pytest.mark.usefixtures("one_thread")


def dense(matvec, dim: int) -> LinearOperator:
    """A float64 operator on the CPU from a function (dim,) -> (dim,)."""
    return LinearOperator(matvec, dim, torch.float64)


@contextlib.contextmanager
def views(model, images, labels, normalizations=("none", "filter"), **hessian):
    """{normalization: its LinearOperator} over one HessianOperator (the filter view alone: graphs of the ≥ 2-dim parameters only)."""
    normalizations = check_normalizations(normalizations)
    with HessianOperator(model, images, labels, HessianSettings(**hessian), filter_only="none" not in normalizations) as hessian_operator:
        yield {norm: hessian_operator.view(norm) for norm in normalizations}


@contextlib.contextmanager
def operators(model, images, labels, normalizations=("none", "filter"), **hessian):
    """{normalization: (matvec, dim)}, as :func:`views`."""
    with views(model, images, labels, normalizations, **hessian) as found:
        yield {norm: (view.matvec, view.dim) for norm, view in found.items()}


@contextlib.contextmanager
def operator(model, images, labels, normalization="filter", **hessian):
    """(matvec, dim) of one normalization's operator."""
    with operators(model, images, labels, (normalization,), **hessian) as found:
        yield found[normalization]


def top_eigenvalues(model, images, labels, k=1, iters=30, seed=0, *, tol=1e-6, normalization="filter", **hessian) -> EigenEstimate:
    """Lanczos on one normalization's Hessian alone."""
    with views(model, images, labels, (normalization,), **hessian) as found:
        return lanczos_top_eigenvalues(found[normalization], k, iters, seed, tol=tol)


def trace_estimate(model, images, labels, samples=60, seed=0, *, method="hutch++", normalization="filter", **hessian) -> TraceEstimate:
    """Hutch++ (or Hutchinson) on one normalization's Hessian alone."""
    with views(model, images, labels, (normalization,), **hessian) as found:
        return stochastic_trace(found[normalization], samples, seed, method)


def make_mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, N_CLASSES))


def dense_filter_scales(model: nn.Module) -> torch.Tensor:
    """S as one float64 vector over all parameters: each filter's norm on its elements, 0 on 1-D parameters."""
    return torch.cat([(torch.linalg.vector_norm(p.detach().double().flatten(1), dim=1).view(-1, *[1] * (p.ndim - 1)).expand_as(p)
                       if p.ndim >= 2 else torch.zeros_like(p, dtype=torch.float64)).reshape(-1) for p in model.parameters()])


def make_batch(n: int = 40, seed: int = 1, shape: tuple[int, ...] = (2, 3)) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=generator), torch.randint(0, N_CLASSES, (n,), generator=generator)


def exact_hessian(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, params="all") -> torch.Tensor:
    """The Hessian of the mean CE w.r.t. the selected parameters, from torch.autograd.functional.hessian (float64)."""
    named = list(model.named_parameters())
    mask = parameter_mask(model, params)
    selected = [(name, p) for (name, p), keep in zip(named, mask) if keep]
    fixed = {name: p.detach().double() for (name, p), keep in zip(named, mask) if not keep}
    buffers = {name: b.double() if b.is_floating_point() else b for name, b in model.named_buffers()}
    flat = torch.cat([p.detach().double().reshape(-1) for _, p in selected])

    def loss(vector: torch.Tensor) -> torch.Tensor:
        values, start = dict(fixed), 0
        for name, p in selected:
            values[name] = vector[start : start + p.numel()].view_as(p)
            start += p.numel()
        logits = functional_call(model, {**values, **buffers}, (images.double(),))
        return F.cross_entropy(logits, labels)

    was_training = model.training
    model.eval()
    try:
        return torch.autograd.functional.hessian(loss, flat)
    finally:
        model.train(was_training)


def test_top_eigenvalues_match_the_exact_hessian_within_one_percent():
    model = make_mlp()
    images, labels = make_batch()
    exact = torch.linalg.eigvalsh(exact_hessian(model, images, labels)).flip(0).numpy()
    assert exact.size == 53
    top = top_eigenvalues(model, images, labels, k=3, iters=30, batch_size=16, normalization="none").values
    assert top.shape == (3,) and np.all(np.diff(top) <= 0)
    np.testing.assert_allclose(top, exact[:3], rtol=0.01)
    np.testing.assert_allclose(top_eigenvalues(model, images, labels, normalization="none").values, exact[:1], rtol=0.01)


def test_trace_matches_the_exact_hessian_within_one_percent():
    model = make_mlp()
    images, labels = make_batch()
    exact = exact_hessian(model, images, labels).trace().item()
    # Hutch++ is exact once its sketch (samples // 3 products) spans the 53 parameters.
    estimate = trace_estimate(model, images, labels, samples=3 * 53, normalization="none")
    assert estimate.value == pytest.approx(exact, rel=0.01)
    assert estimate.std_error == 0.0
    # Plain Hutchinson is unbiased; it is near the truth in units of its own standard error.
    plain = trace_estimate(model, images, labels, samples=300, seed=3, method="hutchinson", normalization="none")
    assert plain.matvecs == 300 and plain.std_error > 0
    assert abs(plain.value - exact) < 4 * plain.std_error
    # With fewer products Hutch++ is an estimate too, with a smaller error than Hutchinson's.
    partial = trace_estimate(model, images, labels, samples=90, seed=3, normalization="none")
    assert 0 < partial.std_error and abs(partial.value - exact) < 4 * partial.std_error


def test_a_batchnorm_convnet_in_eval_mode_and_a_parameter_subset():
    torch.manual_seed(0)
    encoder = tiny_cnn(width=2)
    model = classifier(encoder, linear_classifier(encoder.feature_dim, N_CLASSES))
    with torch.no_grad():  # non-trivial running statistics
        model.train()(torch.rand(32, 3, 6, 6) * 2)
    model.train()  # the analysis must switch to eval mode itself
    images, labels = torch.rand(20, 3, 6, 6), torch.randint(0, N_CLASSES, (20,))
    full = exact_hessian(model, images, labels)
    assert full.shape == (153, 153)
    top = top_eigenvalues(model, images, labels, k=1, iters=40, normalization="none").values
    assert top[0] == pytest.approx(torch.linalg.eigvalsh(full)[-1].item(), rel=0.01)
    assert model.training  # mode restored

    # The probe's Hessian is the trailing block of the full one.
    probe = exact_hessian(model, images, labels, params="1")
    torch.testing.assert_close(probe, full[-15:, -15:])
    top_probe = top_eigenvalues(model, images, labels, k=2, iters=15, params="1", normalization="none").values
    np.testing.assert_allclose(top_probe, torch.linalg.eigvalsh(probe).flip(0)[:2].numpy(), rtol=0.01)
    assert trace_estimate(model, images, labels, samples=45, params="1", normalization="none").value == pytest.approx(probe.trace().item(), rel=0.01)


def test_results_do_not_depend_on_batch_size_or_sample_order():
    model = make_mlp()
    images, labels = make_batch()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    reference = top_eigenvalues(model, images, labels, k=2, batch_size=40, normalization="none").values
    shuffled = top_eigenvalues(model, images[order], labels[order], k=2, batch_size=7, normalization="none").values
    np.testing.assert_allclose(shuffled, reference, rtol=1e-4)
    trace_a = trace_estimate(model, images, labels, samples=30, batch_size=40, normalization="none")
    trace_b = trace_estimate(model, images[order], labels[order], samples=30, batch_size=7, normalization="none")
    assert trace_b.value == pytest.approx(trace_a.value, rel=1e-4)


def test_hessian_vector_products_equal_the_exact_hessian_times_v():
    model = make_mlp()
    images, labels = make_batch()
    hessian = exact_hessian(model, images, labels)
    v = torch.randn(hessian.shape[0], generator=torch.Generator().manual_seed(0))
    with operator(model, images, labels, batch_size=9, normalization="none") as (matvec, dim):
        assert dim == hessian.shape[0]
        product = matvec(v)
    torch.testing.assert_close(product.double(), hessian @ v.double(), rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------- kernels: closed forms


def test_lanczos_on_a_known_spectrum():
    eigenvalues = torch.tensor([5.0, 3.0, 2.5, 1.0, 0.5, 0.1, -2.0, -4.0], dtype=torch.float64)
    rotation, _ = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    matrix = rotation @ torch.diag(eigenvalues) @ rotation.T
    top = lanczos_top_eigenvalues(dense(lambda v: matrix @ v, 8), k=3, iters=8).values
    np.testing.assert_allclose(top, [5.0, 3.0, 2.5], rtol=1e-10)
    # Largest algebraic, not largest magnitude: -4 is not "top".
    assert lanczos_top_eigenvalues(dense(lambda v: matrix @ v, 8), k=1, iters=50).values[0] == pytest.approx(5.0)


def test_lanczos_stops_at_an_invariant_subspace():
    identity = lambda v: 2.0 * v  # noqa: E731 - every start vector spans an invariant subspace
    assert lanczos_top_eigenvalues(dense(identity, 10), k=1, iters=10).values[0] == pytest.approx(2.0)
    with pytest.raises(SharpnessInputError, match="invariant subspace"):
        lanczos_top_eigenvalues(dense(identity, 10), k=2, iters=10).values


def test_hutchinson_is_exact_for_a_diagonal_operator():
    diagonal = torch.linspace(-1.0, 3.0, 17, dtype=torch.float64)
    estimate = stochastic_trace(dense(lambda v: diagonal * v, 17), samples=3, method="hutchinson")
    assert estimate.value == pytest.approx(diagonal.sum().item(), rel=1e-12)  # vᵀDv = Σ dᵢ vᵢ² = tr D
    assert estimate.std_error == pytest.approx(0.0, abs=1e-12)


def test_hutch_plus_plus_is_exact_once_the_sketch_spans_the_space():
    generator = torch.Generator().manual_seed(2)
    factor = torch.randn(12, 12, generator=generator, dtype=torch.float64)
    matrix = factor @ factor.T - 5 * torch.eye(12, dtype=torch.float64)
    estimate = stochastic_trace(dense(lambda v: matrix @ v, 12), samples=36)
    assert estimate.value == pytest.approx(matrix.trace().item(), rel=1e-10)
    # A low-rank operator is captured by a small sketch: only rounding is left for the probes.
    low_rank = factor[:, :2] @ factor[:, :2].T
    estimate = stochastic_trace(dense(lambda v: low_rank @ v, 12), samples=9)
    assert estimate.value == pytest.approx(low_rank.trace().item(), rel=1e-10)


def hutch_plus_plus_from_the_formula(matrix: torch.Tensor, weight: torch.Tensor, samples: int, seed: int) -> float:
    """tr(diag(w)·A) ≈ tr(Qᵀ diag(w) A Q) + mean gᵢᵀ(I−P) diag(w) A (I−P)gᵢ, Q = orth(A·S), P = QQᵀ, written
    densely; probes drawn as the kernel draws them (one CPU generator: the sketch S first, then the gᵢ)."""
    dim, sketch_size = matrix.shape[0], samples // 3
    generator = torch.Generator().manual_seed(seed)
    sketch = (torch.randint(0, 2, (sketch_size, dim), generator=generator, dtype=torch.int8) * 2 - 1).double()
    probes = (torch.randint(0, 2, (samples - 2 * sketch_size, dim), generator=generator, dtype=torch.int8) * 2 - 1).double()
    q = torch.linalg.qr(matrix @ sketch.T).Q
    projector = torch.eye(dim, dtype=torch.float64) - q @ q.T
    weighted = torch.diag(weight) @ matrix
    head = torch.trace(q.T @ weighted @ q)
    tail = torch.stack([g @ projector @ weighted @ projector @ g for g in probes]).mean()
    return float(head + tail)


def spiked_matrix(dim: int = 30, seed: int = 3) -> torch.Tensor:
    """A symmetric matrix with a few large eigenvalues, like a trained network's Hessian."""
    generator = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64)).Q
    spectrum = torch.cat([torch.tensor([40.0, 25.0, 10.0], dtype=torch.float64), torch.randn(dim - 3, generator=generator, dtype=torch.float64)])
    return basis @ torch.diag(spectrum) @ basis.T


def test_weighted_traces_follow_the_formula_and_share_the_plain_traces_products():
    matrix = spiked_matrix()
    weight = torch.rand(30, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 2
    calls = [0]

    def matvec(v):
        calls[0] += 1
        return matrix @ v

    plain, weighted = stochastic_traces(dense(matvec, 30), samples=9, seed=7, weights=(None, weight))
    assert calls[0] == 9 == plain.matvecs == weighted.matvecs  # one set of products for both
    assert plain == stochastic_trace(dense(lambda v: matrix @ v, 30), samples=9, seed=7)
    assert weighted.value == pytest.approx(hutch_plus_plus_from_the_formula(matrix, weight, 9, 7), rel=1e-10)
    assert plain.value == pytest.approx(hutch_plus_plus_from_the_formula(matrix, torch.ones(30, dtype=torch.float64), 9, 7), rel=1e-10)
    with pytest.raises(SharpnessInputError, match="shape"):
        stochastic_traces(dense(matvec, 30), samples=9, weights=(torch.ones(29),))


@pytest.mark.parametrize("method, samples", [("hutch++", 36), ("hutchinson", None)])
def test_weighted_traces_are_exact_when_they_can_be(method, samples):
    """Hutch++ once its sketch spans the space; Hutchinson on a diagonal operator (vᵀ diag(w) D v = Σ wᵢdᵢ)."""
    weight = torch.linspace(0.0, 2.0, 12, dtype=torch.float64)
    if method == "hutch++":
        factor = torch.randn(12, 12, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
        matrix = factor @ factor.T - 5 * torch.eye(12, dtype=torch.float64)
    else:
        matrix, samples = torch.diag(torch.linspace(-1.0, 3.0, 12, dtype=torch.float64)), 3
    _, weighted = stochastic_traces(dense(lambda v: matrix @ v, 12), samples=samples, method=method, weights=(None, weight))
    assert weighted.value == pytest.approx((weight * matrix.diagonal()).sum().item(), rel=1e-10)


@pytest.mark.parametrize("method", ["hutch++", "hutchinson"])
def test_weighted_traces_are_unbiased(method):
    matrix = spiked_matrix()
    weight = torch.rand(30, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 2
    exact = (weight * matrix.diagonal()).sum().item()
    values = np.array([stochastic_traces(dense(lambda v: matrix @ v, 30), samples=6, seed=seed, method=method,
                                         weights=(weight,))[0].value for seed in range(400)])
    assert abs(values.mean() - exact) < 4 * values.std(ddof=1) / np.sqrt(len(values))


# --------------------------------------------------------------------------- state left untouched


def test_parameters_grads_flags_and_modes_are_restored():
    model = make_mlp()
    images, labels = make_batch()
    model[1].weight.requires_grad_(False)  # a frozen layer
    model[3].weight.grad = torch.full_like(model[3].weight, 7.0)  # an existing gradient
    model.train()
    model[2].eval()
    modes = [m.training for m in model.modules()]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]

    top_eigenvalues(model, images, labels, k=1, iters=5, normalization="none").values
    trace_estimate(model, images, labels, samples=6, params="3", normalization="none")

    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])
    assert [p.requires_grad for p in model.parameters()] == flags
    assert [m.training for m in model.modules()] == modes
    assert torch.equal(model[3].weight.grad, torch.full_like(model[3].weight, 7.0))
    assert all(p.grad is None for name, p in model.named_parameters() if name != "3.weight")


def test_a_frozen_parameter_is_still_differentiated_when_selected():
    model = make_mlp()
    images, labels = make_batch()
    for p in model.parameters():
        p.requires_grad_(False)
    exact = torch.linalg.eigvalsh(exact_hessian(model, images, labels)).flip(0)[:1].numpy()
    np.testing.assert_allclose(top_eigenvalues(model, images, labels, iters=40, normalization="none").values, exact, rtol=0.01)


def test_bad_options_are_errors():
    model = make_mlp()
    images, labels = make_batch()
    with pytest.raises(SharpnessInputError, match="cannot give k=3"):
        top_eigenvalues(model, images, labels, k=3, iters=2, normalization="none").values
    with pytest.raises(SharpnessInputError, match="method"):
        trace_estimate(model, images, labels, method="exact", normalization="none")
    with pytest.raises(SharpnessInputError, match="samples"):
        trace_estimate(model, images, labels, samples=2, normalization="none")
    with pytest.raises(SharpnessInputError, match="selects no parameter"):
        trace_estimate(model, images, labels, params="9", normalization="none")
    with pytest.raises(SharpnessInputError, match=r"lie in \[0, 3\)"):
        trace_estimate(model, images, labels + 3, samples=3, normalization="none")


def test_channels_last_strided_images_do_not_crash_the_hessian():
    """torch 2.13's CPU double backward corrupts the heap on a channels_last-strided batch of 125
    with 2 threads (the quick study crashed on it); the operator feeds contiguous batches. Run in
    a subprocess: the failure is an abort, not an exception."""
    script = (
        "import torch\n"
        "from contrastlab.analysis.hessian import HessianSettings\n"
        "from contrastlab.analysis.sharpness import SharpnessSettings, hessian_sharpness\n"
        "from contrastlab.models import classifier, linear_classifier, resnet18\n"
        "torch.set_num_threads(2); torch.manual_seed(0)\n"
        "encoder = resnet18(width=8)\n"
        "model = classifier(encoder, linear_classifier(encoder.feature_dim, 5))\n"
        "images = torch.rand(125, 16, 16, 3).permute(0, 3, 1, 2)  # NHWC memory, as from a uint8 dataset\n"
        "labels = torch.arange(125) % 5\n"
        "settings = SharpnessSettings(normalizations='none', k=1, iters=2, trace_samples=3)\n"
        "print(hessian_sharpness(model, (images, labels), settings)['none'].top.values)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


# --------------------------------------------------------------------------- filter-normalized (scale-invariant) sharpness


def make_conv_bn(seed: int = 0) -> nn.Sequential:
    """conv → BN (ε = 0, so rescaling a filter and its BN statistics is exactly the same function) → probe, float64."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, bias=False), nn.BatchNorm2d(3, eps=0.0), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, N_CLASSES),
    ).double()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        bn = model[1]
        bn.running_mean.copy_(torch.rand(3, generator=generator, dtype=torch.float64) - 0.5)
        bn.running_var.copy_(torch.rand(3, generator=generator, dtype=torch.float64) + 0.5)
        bn.weight.copy_(torch.rand(3, generator=generator, dtype=torch.float64) + 0.5)
        bn.bias.copy_(torch.rand(3, generator=generator, dtype=torch.float64) - 0.5)
    return model.eval()


def rescale_filters(model: nn.Sequential, c: float, filters: list[int]) -> nn.Sequential:
    """The same function: conv filters × c, BN running mean × c and running var × c² (eval mode)."""
    scaled = copy.deepcopy(model)
    with torch.no_grad():
        scaled[0].weight[filters] *= c
        scaled[1].running_mean[filters] *= c
        scaled[1].running_var[filters] *= c**2
    return scaled


def conv_batch(n: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(4)
    return torch.randn(n, 2, 5, 5, generator=generator, dtype=torch.float64), torch.randint(0, N_CLASSES, (n,), generator=generator)


def test_rescaling_every_filter_of_a_conv_scales_the_raw_hessian_by_1_over_c2_but_not_the_normalized_one():
    model, images, labels = make_conv_bn(), *conv_batch()
    c = 3.0
    scaled = rescale_filters(model, c, [0, 1, 2])
    with torch.no_grad():
        torch.testing.assert_close(scaled(images), model(images))  # the same function
    dim = 3 * 2 * 3 * 3  # params="0": the conv only, so its Hessian block scales by exactly 1/c²
    kwargs = {"params": "0", "iters": dim, "tol": 0.0}
    raw, raw_scaled = (top_eigenvalues(m, images, labels, normalization="none", **kwargs).values[0] for m in (model, scaled))
    assert raw_scaled == pytest.approx(raw / c**2, rel=1e-8)
    normalized = [top_eigenvalues(m, images, labels, **kwargs).values[0] for m in (model, scaled)]
    assert normalized[1] == pytest.approx(normalized[0], rel=1e-8)
    # Traces: Hutch++ with a sketch that spans the space is exact.
    traces = {norm: [trace_estimate(m, images, labels, samples=3 * dim, params="0", normalization=norm).value for m in (model, scaled)]
              for norm in ("none", "filter")}
    assert traces["none"][1] == pytest.approx(traces["none"][0] / c**2, rel=1e-8)
    assert traces["filter"][1] == pytest.approx(traces["filter"][0], rel=1e-8)


def test_rescaling_one_filter_leaves_the_normalized_sharpness_of_the_whole_network_unchanged():
    model, images, labels = make_conv_bn(1), *conv_batch()
    scaled = rescale_filters(model, 5.0, [1])
    dim = 54 + 3 * N_CLASSES  # filter normalization keeps the conv and probe weights, drops BN γ, β and the bias
    top = [top_eigenvalues(m, images, labels, iters=dim, tol=0.0).values[0] for m in (model, scaled)]
    assert top[1] == pytest.approx(top[0], rel=1e-8)
    trace = [trace_estimate(m, images, labels, samples=3 * dim).value for m in (model, scaled)]
    assert trace[1] == pytest.approx(trace[0], rel=1e-8)
    raw = [trace_estimate(m, images, labels, samples=3 * 54, params="0", normalization="none").value for m in (model, scaled)]
    assert abs(raw[1] / raw[0] - 1) > 1e-3  # raw sharpness is not scale-invariant (normalized: 1e-8)


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-8), (torch.float32, 1e-3)])
def test_normalized_eigenvalues_and_trace_match_a_dense_s_h_s(dtype, rtol):
    model = make_mlp().to(dtype)
    images, labels = make_batch()
    hessian = exact_hessian(model, images, labels)
    scale = dense_filter_scales(model)
    normalized = scale[:, None] * hessian * scale[None, :]
    exact = torch.linalg.eigvalsh(normalized).flip(0).numpy()
    top = top_eigenvalues(model, images.to(dtype), labels, k=2, iters=45, tol=0.0)
    np.testing.assert_allclose(top.values, exact[:2], rtol=rtol)
    trace = trace_estimate(model, images.to(dtype), labels, samples=3 * 45)  # 45 weights with ≥ 2 dims
    assert trace.value == pytest.approx(normalized.trace().item(), rel=rtol)


def test_filter_normalization_needs_a_parameter_with_filters():
    model = make_mlp()
    images, labels = make_batch()
    with pytest.raises(SharpnessInputError, match="normalization='none'"):
        trace_estimate(model, images, labels, params="1.bias")
    with pytest.raises(SharpnessInputError, match="'filter', 'none'"):
        trace_estimate(model, images, labels, normalization="layer")


# --------------------------------------------------------------------------- kept graphs, early stopping, options


def count_forwards(model: nn.Module) -> list[int]:
    """Forward passes through ``model``, counted at its last module: the Hessian's BN-folded view
    calls that module, not ``model.forward``."""
    calls = [0]
    last = model[-1] if isinstance(model, nn.Sequential) else model
    last.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_kept_graphs_give_the_same_products_with_one_forward_pass_per_batch():
    images, labels = make_batch()
    vectors = torch.randn(3, 53, generator=torch.Generator().manual_seed(5))
    results, forwards = {}, {}
    for name, options in {"keep": {"keep_graph": True}, "recompute": {"keep_graph": False},
                          "auto, fits": {}, "auto, over budget": {"graph_budget_bytes": 0}}.items():
        model = make_mlp()
        calls = count_forwards(model)
        with operator(model, images, labels, batch_size=16, normalization="none", **options) as (matvec, dim):
            results[name] = torch.stack([matvec(v) for v in vectors])
        forwards[name] = calls[0]
    for name in results:
        assert torch.equal(results[name], results["keep"]), name
    assert forwards == {"keep": 3, "recompute": 9, "auto, fits": 3, "auto, over budget": 1 + 9}
    with pytest.raises(SharpnessInputError, match="keep_graph"):
        trace_estimate(make_mlp(), images, labels, keep_graph="yes")


def test_eigenvalues_do_not_depend_on_keeping_the_graph():
    model = make_mlp()
    images, labels = make_batch()
    kept = top_eigenvalues(model, images, labels, k=2, batch_size=16, keep_graph=True)
    recomputed = top_eigenvalues(model, images, labels, k=2, batch_size=16, keep_graph=False)
    assert np.array_equal(kept.values, recomputed.values) and kept.iterations == recomputed.iterations


def test_lanczos_stops_when_the_top_ritz_values_settle():
    diagonal = torch.cat([torch.tensor([10.0, 6.0]), torch.linspace(0.0, 1.0, 198)]).double()
    operator = lambda v: diagonal * v  # noqa: E731
    early = lanczos_top_eigenvalues(dense(operator, 200), k=2, iters=100, tol=1e-10)
    assert early.converged and early.iterations < 40 and early.tol == 1e-10
    np.testing.assert_allclose(early.values, [10.0, 6.0], rtol=1e-9)
    full = lanczos_top_eigenvalues(dense(operator, 200), k=2, iters=100, tol=0.0)
    assert full.iterations == 100 and not full.converged
    short = lanczos_top_eigenvalues(dense(operator, 200), k=1, iters=3, tol=1e-10)
    assert short.iterations == 3 and not short.converged
    with pytest.raises(SharpnessInputError, match="tol"):
        lanczos_top_eigenvalues(dense(operator, 200), tol=-1.0)


def test_hessian_eigenvalues_stop_early_and_agree_with_the_exact_hessian():
    model = make_mlp()
    images, labels = make_batch()
    exact = torch.linalg.eigvalsh(exact_hessian(model, images, labels))[-1].item()
    result = top_eigenvalues(model, images, labels, iters=53, tol=1e-5, normalization="none")
    assert result.converged and result.iterations < 53
    assert result.values[0] == pytest.approx(exact, rel=1e-4)


def test_the_probe_keyword_and_a_misspelled_selector():
    torch.manual_seed(0)
    encoder = tiny_cnn(width=2)
    model = classifier(encoder, linear_classifier(encoder.feature_dim, N_CLASSES))
    assert parameter_mask(model, "probe") == parameter_mask(model, "1")
    images, labels = torch.rand(10, 3, 6, 6), torch.randint(0, N_CLASSES, (10,))
    with pytest.raises(SharpnessInputError, match="valid: 'all', 'probe'"):
        trace_estimate(model, images, labels, samples=3, params="prob")
    with pytest.raises(SharpnessInputError, match="valid: 'all', 'probe'"):
        top_eigenvalues(model, images, labels, params="prob")


def test_precision_is_explicit():
    model = make_mlp()
    images, labels = make_batch()
    with pytest.raises(SharpnessInputError, match="'fp32', 'bf16'"):
        top_eigenvalues(model, images, labels, precision="auto")
    fp32 = top_eigenvalues(model, images, labels, normalization="none").values[0]
    bf16 = top_eigenvalues(model, images, labels, normalization="none", precision="bf16").values[0]
    assert isinstance(bf16, np.float64) and bf16 == pytest.approx(fp32, rel=0.1)


# --------------------------------------------------------------------------- several normalizations over one set of graphs


def separate_estimates(model, images, labels, normalizations, **options) -> dict:
    """What hessian_sharpness computes, by one hessian_top_eigenvalues and one hessian_trace call per normalization."""
    return {norm: (top_eigenvalues(model, images, labels, k=2, iters=12, tol=0.0, normalization=norm, **options),
                   trace_estimate(model, images, labels, samples=9, normalization=norm, **options))
            for norm in normalizations}


@pytest.mark.parametrize("keep_graph", [True, False])
@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_shared_graphs_give_the_separate_calls_numbers(dtype, rtol, keep_graph):
    """The filter view differentiates through the raw view's graph (1-D parameters included): the
    same numbers up to float rounding, on a model with BN γ, β and a bias and over several batches."""
    model, (images, labels) = make_conv_bn().to(dtype), conv_batch()
    images = images.to(dtype)
    options = {"batch_size": 10, "keep_graph": keep_graph}
    separate = separate_estimates(model, images, labels, ("none", "filter"), **options)
    shared = hessian_sharpness(model, (images, labels), SharpnessSettings(normalizations=("none", "filter"), k=2, iters=12, tol=0.0, trace_samples=9,
                                                                  hessian=HessianSettings(**options)))
    assert list(shared) == ["none", "filter"]
    for norm, (top, trace) in shared.items():
        assert isinstance(top, EigenEstimate) and isinstance(trace, TraceEstimate)
        np.testing.assert_allclose(top.values, separate[norm][0].values, rtol=rtol)
        assert top.iterations == separate[norm][0].iterations
        assert trace.matvecs == separate["none"][1].matvecs
    raw = shared["none"].trace
    assert raw.value == pytest.approx(separate["none"][1].value, rel=rtol)
    assert raw.std_error == pytest.approx(separate["none"][1].std_error, rel=100 * rtol)
    # The filter-normalized trace comes from the raw trace's products: tr(S H S) = tr(diag(S²) H),
    # here against the formula on the dense Hessian (S² zero on BN γ, β and the bias).
    hessian = exact_hessian(model.double(), images.double(), labels)
    squared_scales = dense_filter_scales(model) ** 2
    assert shared["filter"].trace.value == pytest.approx(hutch_plus_plus_from_the_formula(hessian, squared_scales, 9, 0), rel=100 * rtol)


def test_one_normalization_through_hessian_sharpness_is_the_separate_calls_exactly():
    model = make_mlp()
    images, labels = make_batch()
    for norm in ("none", "filter"):
        separate = separate_estimates(model, images, labels, (norm,), batch_size=16)
        settings = SharpnessSettings(normalizations=norm, k=2, iters=12, tol=0.0, trace_samples=9, hessian=HessianSettings(batch_size=16))
        (top, estimate), = hessian_sharpness(model, (images, labels), settings).values()
        assert np.array_equal(top.values, separate[norm][0].values) and estimate == separate[norm][1]


@pytest.mark.parametrize("options, forwards", [({"keep_graph": True}, 3), ({}, 3), ({"keep_graph": False}, 2 * 3 * 3),
                                               ({"graph_budget_bytes": 0}, 1 + 2 * 3 * 3)])
def test_both_views_share_one_forward_pass_per_batch_when_the_graph_is_kept(options, forwards):
    model, (images, labels) = make_conv_bn(), conv_batch()
    calls = count_forwards(model)
    vectors = {"none": torch.randn(3, 54 + 6 + 12, generator=torch.Generator().manual_seed(5), dtype=torch.float64),
               "filter": torch.randn(3, 54 + 9, generator=torch.Generator().manual_seed(6), dtype=torch.float64)}
    with operators(model, images, labels, batch_size=10, **options) as found:
        assert {norm: dim for norm, (_, dim) in found.items()} == {"none": 72, "filter": 63}
        products = {norm: torch.stack([found[norm][0](v) for v in vectors[norm]]) for norm in ("filter", "none")}
    assert calls[0] == forwards
    for norm in products:
        with operator(model, images, labels, batch_size=10, normalization=norm, **options) as (matvec, _):
            torch.testing.assert_close(products[norm], torch.stack([matvec(v) for v in vectors[norm]]), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("normalization", ["none", "filter"])
def test_products_through_the_folded_batchnorm_equal_the_unfolded_ones(normalization):
    """The operator's forward through fold_batchnorm_differentiable is the same Hessian (float64, to rounding)."""
    model, (images, labels) = make_conv_bn(), conv_batch()
    calls = count_forwards(model)
    products = {}
    for fold_bn in (True, False):
        with operator(model, images, labels, batch_size=10, normalization=normalization, fold_bn=fold_bn) as (matvec, dim):
            vectors = torch.randn(3, dim, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
            products[fold_bn] = torch.stack([matvec(v) for v in vectors])
    assert calls[0] == 2 * 3  # both ways ran their forward passes (3 batches each, graphs kept)
    torch.testing.assert_close(products[True], products[False], rtol=1e-10, atol=1e-13)


def test_shared_operators_restore_the_model_and_check_their_normalizations():
    model = make_mlp()
    images, labels = make_batch()
    model[1].bias.requires_grad_(False)
    model.train()
    flags = [p.requires_grad for p in model.parameters()]
    with operators(model, images, labels) as found:
        found["filter"][0](torch.ones(found["filter"][1]))
        assert not model.training and all(p.requires_grad for p in model.parameters())
    assert model.training and [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    for bad in ((), ("none", "none"), ("none", "layer")):
        with pytest.raises(SharpnessInputError, match="normalization"):
            with operators(model, images, labels, normalizations=bad):
                pass
    with pytest.raises(SharpnessInputError, match="normalization='none'"):
        hessian_sharpness(model, (images, labels), SharpnessSettings(hessian=HessianSettings(params="1.bias")))
    with pytest.raises(SharpnessInputError, match="samples"):
        hessian_sharpness(model, (images, labels), SharpnessSettings(trace_samples=2))
