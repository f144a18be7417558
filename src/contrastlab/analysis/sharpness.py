"""Sharpness as numbers: the top eigenvalues and the trace of the loss Hessian.

H is the Hessian of L(θ) = (1/N) Σ_n CE(f_θ(images_n), labels_n) with respect to the selected
parameters (``params``, as in :func:`contrastlab.analysis.landscape.parameter_mask`), at the
model's current parameters, in eval mode. H is never formed: every method only needs
Hessian-vector products, computed by double backpropagation and accumulated over batches of
samples (H·v = Σ_batches ∂/∂θ ⟨∂L_batch/∂θ, v⟩ with L_batch the batch's share of L).

- :func:`hessian_top_eigenvalues`: Lanczos with full reorthogonalization; returns the largest
  (algebraic) Ritz values. ``iters`` Lanczos steps store ``iters`` vectors of the size of the
  selected parameters.
- :func:`hessian_trace`: Hutchinson's estimator E[vᵀHv] = tr H with Rademacher v, by default
  in its Hutch++ form (Meyer, Musco, Musco & Woodruff, SOSA 2021): a third of the products
  sketch the dominant subspace, whose trace is taken exactly, and the rest estimate the trace of
  what is left — far lower variance for Hessians with a few large eigenvalues, and exact once
  the sketch spans the parameter space.

Both leave the model as it was: each submodule's mode, every parameter's value,
``requires_grad`` and ``.grad`` (the products use ``torch.autograd.grad``).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..utils.progress import progress_bar
from ..models import eval_mode
from .landscape import LandscapeInputError, ParameterSelector, _check_batch, _check_label_range, parameter_mask

log = logging.getLogger(__name__)

TRACE_METHODS = ("hutch++", "hutchinson")

Matvec = Callable[[torch.Tensor], torch.Tensor]


class TraceEstimate(NamedTuple):
    """A stochastic trace estimate with its standard error (0 when the estimate is exact)."""

    value: float
    std_error: float
    matvecs: int


# --------------------------------------------------------------------------- Hessian-vector products


@contextlib.contextmanager
def hessian_operator(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    params: ParameterSelector = "all",
    batch_size: int = 256,
) -> Iterator[tuple[Matvec, int]]:
    """Yield ``(matvec, dim)``: v (dim,) -> H·v (dim,) for the Hessian of the mean CE over all samples.

    Vectors are flat, in the order of the selected ``list(model.parameters())``, on the
    parameters' device, float64 for a float64 model and float32 otherwise. Inside the context
    the model is in eval mode and only the selected parameters require grad; both are restored
    on exit.
    """
    _check_batch(images, labels)
    if int(batch_size) != batch_size or batch_size < 1:
        raise LandscapeInputError(f"batch_size must be an integer >= 1, got {batch_size}")
    batch_size = int(batch_size)
    mask = parameter_mask(model, params)
    parameters = list(model.parameters())
    selected = [p for p, keep in zip(parameters, mask) if keep]
    sizes = [p.numel() for p in selected]
    dim = sum(sizes)
    device = selected[0].device
    dtype = torch.float64 if all(p.dtype == torch.float64 for p in selected) else torch.float32
    n = images.shape[0]
    flags = [p.requires_grad for p in parameters]

    def matvec(vector: torch.Tensor) -> torch.Tensor:
        if vector.shape != (dim,):
            raise LandscapeInputError(f"expected a vector of shape ({dim},), got {tuple(vector.shape)}")
        parts = [chunk.view_as(p).to(p.dtype) for chunk, p in zip(vector.split(sizes), selected)]
        product = [torch.zeros_like(p) for p in selected]
        with torch.enable_grad():
            for start in range(0, n, batch_size):
                # contiguous: torch 2.13's CPU double backward through a convolution corrupts the
                # heap on some channels_last-strided batches (e.g. 125 images on 2 threads).
                x = images[start : start + batch_size].to(device).contiguous()
                y = labels[start : start + batch_size].to(device)
                logits = model(x)
                _check_label_range(y, logits.shape[1])
                loss = F.cross_entropy(logits, y, reduction="sum") / n  # this batch's share of the mean
                grads = torch.autograd.grad(loss, selected, create_graph=True, allow_unused=True)
                inner = sum((g * v).sum() for g, v in zip(grads, parts) if g is not None)
                if not torch.is_tensor(inner) or not inner.requires_grad:
                    continue  # the loss is linear in every selected parameter: this batch adds nothing
                second = torch.autograd.grad(inner, selected, allow_unused=True)
                for total, s in zip(product, second):
                    if s is not None:
                        total += s.detach()
        return torch.cat([p.reshape(-1) for p in product]).to(dtype)

    try:
        for p, keep in zip(parameters, mask):
            p.requires_grad_(keep)
        with eval_mode(model):
            yield matvec, dim
    finally:
        for p, flag in zip(parameters, flags):
            p.requires_grad_(flag)


# --------------------------------------------------------------------------- kernels on any symmetric operator


def _start_vector(dim: int, seed: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randn(dim, generator=generator, dtype=torch.float64).to(device=device, dtype=dtype)


def _rademacher(dim: int, count: int, generator: torch.Generator, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(count, dim) matrix of independent ±1 entries, drawn on the CPU so results do not depend on the device."""
    signs = torch.randint(0, 2, (count, dim), generator=generator, dtype=torch.int8) * 2 - 1
    return signs.to(device=device, dtype=dtype)


def lanczos_top_eigenvalues(
    matvec: Matvec,
    dim: int,
    k: int = 1,
    iters: int = 30,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> np.ndarray:
    """The ``k`` largest eigenvalues (descending, float64 array (k,)) of the symmetric operator ``matvec``.

    Lanczos from a seeded Gaussian start vector, with full reorthogonalization (twice, against
    every previous basis vector) so no spurious copies of converged eigenvalues appear; at most
    ``min(iters, dim)`` products. The Ritz values of the tridiagonal matrix are exact once the
    Krylov space is invariant (after ``dim`` steps at the latest).
    """
    if int(k) != k or k < 1:
        raise LandscapeInputError(f"k must be an integer >= 1, got {k}")
    steps = min(int(iters), int(dim))
    if steps < k:
        raise LandscapeInputError(f"iters={iters} Lanczos steps cannot give k={k} eigenvalues (dim={dim})")
    device = torch.device(device)
    basis = torch.zeros(steps, dim, dtype=dtype, device=device)
    alphas: list[float] = []
    betas: list[float] = []
    q = _start_vector(dim, seed, dtype, device)
    q = q / torch.linalg.vector_norm(q)
    with progress_bar(steps, "Hessian eigenvalues", progress) as advance:
        for j in range(steps):
            basis[j] = q
            w = matvec(q).to(dtype)
            alpha = float(torch.dot(w.double(), q.double()))
            w = w - alpha * q
            if j > 0:
                w = w - betas[-1] * basis[j - 1]
            for _ in range(2):  # Gram-Schmidt twice is enough in floating point
                w = w - basis[: j + 1].T @ (basis[: j + 1] @ w)
            alphas.append(alpha)
            advance(1)
            beta = float(torch.linalg.vector_norm(w.double()))
            scale = max(abs(a) for a in alphas) + (max(betas) if betas else 0.0)
            if j == steps - 1 or beta <= 1e-10 * max(scale, 1e-300):
                break  # done, or an invariant subspace: the Ritz values are exact eigenvalues
            betas.append(beta)
            q = w / beta
    tridiagonal = np.diag(alphas) + np.diag(betas[: len(alphas) - 1], 1) + np.diag(betas[: len(alphas) - 1], -1)
    ritz = np.linalg.eigvalsh(tridiagonal)[::-1]
    if len(ritz) < k:
        raise LandscapeInputError(f"the operator has an invariant subspace of dimension {len(ritz)} < k={k} around the start vector; use another seed")
    log.debug("Lanczos: %d steps, top Ritz values %s", len(alphas), ritz[:k])
    return ritz[:k].copy()


def stochastic_trace(
    matvec: Matvec,
    dim: int,
    samples: int = 60,
    seed: int = 0,
    method: str = "hutch++",
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> TraceEstimate:
    """tr A of a symmetric operator from ``samples`` products ``matvec`` (Rademacher probes).

    ``method="hutchinson"``: mean of vᵀAv over ``samples`` probes; std_error = sample std/√samples.
    ``method="hutch++"``: s = samples//3 probes S, Q = orth(A·S), then
    tr A ≈ tr(QᵀAQ) + mean_i gᵢᵀ(I−QQᵀ)A(I−QQᵀ)gᵢ over the remaining samples − 2s probes gᵢ;
    std_error is that of the second term. Exact (up to rounding) once s ≥ dim.
    """
    if method not in TRACE_METHODS:
        raise LandscapeInputError(f"method must be one of {', '.join(TRACE_METHODS)}, got '{method}'")
    if int(samples) != samples or samples < (3 if method == "hutch++" else 1):
        raise LandscapeInputError(f"samples must be an integer >= {3 if method == 'hutch++' else 1} for {method}, got {samples}")
    samples = int(samples)
    device = torch.device(device)
    generator = torch.Generator().manual_seed(int(seed))

    with progress_bar(samples, "Hessian trace", progress) as advance:

        def quadratic_forms(vectors: torch.Tensor) -> np.ndarray:
            values = []
            for v in vectors:
                values.append(float(torch.dot(matvec(v).double(), v.double())))
                advance(1)
            return np.asarray(values)

        if method == "hutchinson":
            values = quadratic_forms(_rademacher(dim, samples, generator, dtype, device))
            std_error = float(values.std(ddof=1) / math.sqrt(samples)) if samples > 1 else math.inf
            return TraceEstimate(float(values.mean()), std_error, samples)

        sketch_size = samples // 3
        sketch = _rademacher(dim, sketch_size, generator, dtype, device)
        products = torch.stack([matvec(v).to(dtype) for v in sketch], dim=1)  # (dim, s)
        advance(sketch_size)
        # Householder QR: Q has orthonormal columns even when A·S is rank-deficient, which is
        # all the estimator needs (any orthonormal Q gives an unbiased split of the trace).
        q = torch.linalg.qr(products).Q  # (dim, min(dim, s))
        del products
        head = float(quadratic_forms(q.T).sum())
        if q.shape[1] >= dim:  # Q spans everything: tr(QᵀAQ) is the trace itself
            return TraceEstimate(head, 0.0, sketch_size + q.shape[1])
        probes = _rademacher(dim, samples - 2 * sketch_size, generator, dtype, device)
        tail = quadratic_forms(probes - (probes @ q) @ q.T)
        std_error = float(tail.std(ddof=1) / math.sqrt(len(tail))) if len(tail) > 1 else math.inf
        return TraceEstimate(head + float(tail.mean()), std_error, sketch_size + q.shape[1] + len(tail))


# --------------------------------------------------------------------------- the public analyses


def hessian_top_eigenvalues(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    k: int = 1,
    iters: int = 30,
    seed: int = 0,
    *,
    params: ParameterSelector = "all",
    batch_size: int = 256,
    progress: bool = False,
) -> np.ndarray:
    """The ``k`` largest eigenvalues (float64 array (k,), descending) of the loss Hessian.

    ``images`` (N, ...) and ``labels`` (N,): all samples of the mean CE. ``iters`` Lanczos steps
    (each one Hessian-vector product over all samples), started from a Gaussian vector seeded
    by ``seed``. ``params`` restricts the Hessian to a subset (e.g. ``"1"`` for the probe).
    """
    with hessian_operator(model, images, labels, params, batch_size) as (matvec, dim):
        reference = next(p for p, keep in zip(model.parameters(), parameter_mask(model, params)) if keep)
        dtype = torch.float64 if reference.dtype == torch.float64 else torch.float32
        return lanczos_top_eigenvalues(matvec, dim, k, iters, seed, dtype, reference.device, progress)


def hessian_trace(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    samples: int = 60,
    seed: int = 0,
    *,
    method: str = "hutch++",
    params: ParameterSelector = "all",
    batch_size: int = 256,
    progress: bool = False,
) -> TraceEstimate:
    """Estimate tr H of the loss Hessian from ``samples`` Hessian-vector products.

    Returns ``TraceEstimate(value, std_error, matvecs)``; see :func:`stochastic_trace` for
    ``method`` ("hutch++" or plain "hutchinson"). Rademacher probes drawn by a CPU generator
    seeded with ``seed``.
    """
    with hessian_operator(model, images, labels, params, batch_size) as (matvec, dim):
        reference = next(p for p, keep in zip(model.parameters(), parameter_mask(model, params)) if keep)
        dtype = torch.float64 if reference.dtype == torch.float64 else torch.float32
        return stochastic_trace(matvec, dim, samples, seed, method, dtype, reference.device, progress)
