"""Sharpness as numbers: the top eigenvalues and the trace of the loss Hessian.

H is the Hessian of L(θ) = (1/N) Σ_n CE(f_θ(images_n), labels_n) with respect to the selected
parameters (``params``, see :func:`contrastlab.analysis.checks.parameter_mask`), at the
model's current parameters, in eval mode. H is never formed: every method only needs
Hessian-vector products, computed by double backpropagation and accumulated over batches of
samples (H·v = Σ_batches ∂/∂θ ⟨∂L_batch/∂θ, v⟩ with L_batch the batch's share of L).

- ``normalization="filter"`` (default): the Hessian in filter-normalized coordinates,
  H_f = S H S with S the norm of each filter (slice along dim 0 of a parameter with ≥ 2 dims)
  broadcast over its elements and 0 for 1-D parameters (biases, BN γ and β) — the step of the
  landscape's filter-normalized directions. Rescaling a filter that a following BatchNorm
  undoes changes the raw H but not H_f (Dinh et al., ICML 2017: raw sharpness is not
  scale-invariant). The 1-D parameters, whose rows and columns of H_f are zero, are left out
  of the operator. ``"none"``: the raw Hessian.
- :func:`hessian_top_eigenvalues`: Lanczos with full reorthogonalization; stops once the top
  ``k`` Ritz values change by less than ``tol`` (relative) from one step to the next, after
  ``iters`` steps at most. Returns an :class:`EigenEstimate` (values, iterations, tol, converged).
- :func:`hessian_trace`: Hutchinson's estimator E[vᵀHv] = tr H with Rademacher v, by default
  in its Hutch++ form (Meyer, Musco, Musco & Woodruff, SOSA 2021): a third of the products
  sketch the dominant subspace, whose trace is taken exactly, and the rest estimate the trace of
  what is left — far lower variance for Hessians with a few large eigenvalues, and exact once
  the sketch spans the parameter space.
- :func:`hessian_sharpness`: both, for several normalizations at once, over one set of
  first-backward graphs (:func:`contrastlab.analysis.hessian.hessian_operators`); each result
  equals the separate calls' up to float rounding, except the filter-normalized trace next to
  the raw one, which reuses the raw trace's products (:func:`stochastic_traces`: tr(S H S) =
  tr(diag(S²) H), estimated as unbiasedly from the same probes).

Speed: when the graphs of the first backward pass (the gradient with ``create_graph``) of all
batches fit ``graph_budget_bytes`` (``keep_graph=None``, measured on the first batch) they are
built once and every product is one backward pass through them; otherwise each product
recomputes them batch by batch. Both give the same numbers.

Both analyses leave the model as it was: each submodule's mode, every parameter's value,
``requires_grad`` and ``.grad`` (the products use ``torch.autograd.grad``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from ..utils.progress import progress_bar
from .checks import LandscapeInputError, ParameterSelector, check_positive_int, model_device
from .hessian import GRAPH_BUDGET_BYTES, SHARPNESS_NORMALIZATIONS, Matvec, filter_weights, hessian_operator, hessian_operators

__all__ = [
    "EigenEstimate", "GRAPH_BUDGET_BYTES", "SHARPNESS_NORMALIZATIONS", "Sharpness", "TRACE_METHODS", "TraceEstimate",
    "hessian_operator", "hessian_operators", "hessian_sharpness", "hessian_top_eigenvalues", "hessian_trace",
    "lanczos_top_eigenvalues", "stochastic_trace", "stochastic_traces",
]

log = logging.getLogger(__name__)

TRACE_METHODS = ("hutch++", "hutchinson")

class TraceEstimate(NamedTuple):
    """A stochastic trace estimate with its standard error (0 when the estimate is exact)."""

    value: float
    std_error: float
    matvecs: int


@dataclass(frozen=True)
class EigenEstimate:
    """Top eigenvalues from Lanczos: ``values`` (k,) float64, descending.

    ``iterations``: Lanczos steps taken (= operator products); ``tol``: the relative-change
    tolerance it stopped on; ``converged``: the top-k Ritz values changed by less than ``tol``
    between the last two steps, or the Krylov space became invariant (exact values).
    """

    values: np.ndarray
    iterations: int
    tol: float
    converged: bool


class Sharpness(NamedTuple):
    """The top eigenvalues and the trace estimate of one normalization's Hessian."""

    top: EigenEstimate
    trace: TraceEstimate


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
    *,
    tol: float = 1e-6,
) -> EigenEstimate:
    """The ``k`` largest eigenvalues (descending) of the symmetric operator ``matvec`` (dim,) -> (dim,).

    Lanczos from a seeded Gaussian start vector, with full reorthogonalization (twice, against
    every previous basis vector) so no spurious copies of converged eigenvalues appear. Stops
    when every one of the top ``k`` Ritz values changes by less than ``tol`` relative to its
    magnitude between consecutive steps (``tol=0``: never early), when the Krylov space is
    invariant (the Ritz values are then exact), or after ``min(iters, dim)`` products.
    """
    k = check_positive_int(k, "k", error=LandscapeInputError)
    if not math.isfinite(float(tol)) or tol < 0:
        raise LandscapeInputError(f"tol must be a finite number >= 0, got {tol}")
    steps = min(check_positive_int(iters, "iters", error=LandscapeInputError), int(dim))
    if steps < k:
        raise LandscapeInputError(f"iters={iters} Lanczos steps cannot give k={k} eigenvalues (dim={dim})")
    device = torch.device(device)
    basis = torch.zeros(steps, dim, dtype=dtype, device=device)
    alphas: list[float] = []
    betas: list[float] = []
    previous, converged = None, False
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
            if len(alphas) >= k:
                ritz = _ritz_values(alphas, betas)[:k]
                if previous is not None and tol > 0:
                    floor = 1e-12 * np.abs(ritz).max() + 1e-300
                    converged = bool(np.all(np.abs(ritz - previous) <= tol * np.maximum(np.abs(ritz), floor)))
                previous = ritz
            beta = float(torch.linalg.vector_norm(w.double()))
            scale = max(abs(a) for a in alphas) + (max(betas) if betas else 0.0)
            if beta <= 1e-10 * max(scale, 1e-300):
                converged = True  # an invariant subspace: the Ritz values are exact eigenvalues
            if converged or j == steps - 1:
                break
            betas.append(beta)
            q = w / beta
    ritz = _ritz_values(alphas, betas)
    if len(ritz) < k:
        raise LandscapeInputError(f"the operator has an invariant subspace of dimension {len(ritz)} < k={k} around the start vector; use another seed")
    log.debug("Lanczos: %d steps (converged: %s), top Ritz values %s", len(alphas), converged, ritz[:k])
    return EigenEstimate(ritz[:k].copy(), len(alphas), float(tol), converged)


def _ritz_values(alphas: list[float], betas: list[float]) -> np.ndarray:
    """Eigenvalues (descending) of the Lanczos tridiagonal matrix of the steps so far."""
    m = len(alphas)
    off = betas[: m - 1]
    tridiagonal = np.diag(alphas) + np.diag(off, 1) + np.diag(off, -1)
    return np.linalg.eigvalsh(tridiagonal)[::-1]


def _check_trace_options(samples: int, method: str) -> int:
    """``samples`` as an int, after checking it suits ``method``."""
    if method not in TRACE_METHODS:
        raise LandscapeInputError(f"method must be one of {', '.join(TRACE_METHODS)}, got '{method}'")
    if int(samples) != samples or samples < (3 if method == "hutch++" else 1):
        raise LandscapeInputError(f"samples must be an integer >= {3 if method == 'hutch++' else 1} for {method}, got {samples}")
    return int(samples)


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
    return stochastic_traces(matvec, dim, samples, seed, method, dtype, device, progress)[0]


def stochastic_traces(
    matvec: Matvec,
    dim: int,
    samples: int = 60,
    seed: int = 0,
    method: str = "hutch++",
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    progress: bool = False,
    weights: Sequence[torch.Tensor | None] = (None,),
) -> list[TraceEstimate]:
    """tr(diag(w)·A) for each ``w`` of ``weights`` ((dim,) tensors; None: tr A), all from the same ``samples`` products.

    The estimator of :func:`stochastic_trace` with every quadratic form vᵀ(Av) replaced by
    (w⊙v)ᵀ(Av): unbiased for any w, since E[vᵀMv] = tr M for Rademacher v and any matrix M, and
    for Hutch++ tr M = tr(QᵀMQ) + tr((I−P)M(I−P)) with P = QQᵀ for any M (the cross term
    tr((I−P)MP) = tr(P(I−P)M) is 0). With w = S² (zero off the filters) this is the trace of the
    filter-normalized Hessian S H S from the raw Hessian's products. Exact once the sketch spans
    the space. Each estimate's ``matvecs`` is the number of products they share.
    """
    samples = _check_trace_options(samples, method)
    device = torch.device(device)
    generator = torch.Generator().manual_seed(int(seed))
    scales = [None if w is None else w.to(device=device, dtype=torch.float64).reshape(-1) for w in weights]
    if any(w is not None and w.shape != (dim,) for w in scales):
        raise LandscapeInputError(f"every weight vector must have shape ({dim},)")

    with progress_bar(samples, "Hessian trace", progress) as advance:

        def quadratic_forms(vectors: torch.Tensor) -> np.ndarray:
            """(len(weights), len(vectors)): (w⊙v)ᵀ(Av) for each weight w and vector v."""
            values = []
            for v in vectors:
                product, v = matvec(v).double(), v.double()
                values.append([float(torch.dot(product, v if w is None else w * v)) for w in scales])
                advance(1)
            return np.asarray(values, dtype=np.float64).reshape(len(vectors), len(scales)).T

        def std_errors(values: np.ndarray) -> list[float]:
            n = values.shape[1]
            return [float(row.std(ddof=1) / math.sqrt(n)) if n > 1 else math.inf for row in values]

        if method == "hutchinson":
            values = quadratic_forms(_rademacher(dim, samples, generator, dtype, device))
            return [TraceEstimate(float(row.mean()), error, samples) for row, error in zip(values, std_errors(values))]

        sketch_size = samples // 3
        sketch = _rademacher(dim, sketch_size, generator, dtype, device)
        products = torch.stack([matvec(v).to(dtype) for v in sketch], dim=1)  # (dim, s)
        advance(sketch_size)
        # Householder QR: Q has orthonormal columns even when A·S is rank-deficient, which is
        # all the estimator needs (any orthonormal Q gives an unbiased split of the trace).
        q = torch.linalg.qr(products).Q  # (dim, min(dim, s))
        del products
        heads = quadratic_forms(q.T).sum(axis=1)
        if q.shape[1] >= dim:  # Q spans everything: tr(QᵀMQ) is the trace itself
            return [TraceEstimate(float(head), 0.0, sketch_size + q.shape[1]) for head in heads]
        probes = _rademacher(dim, samples - 2 * sketch_size, generator, dtype, device)
        tails = quadratic_forms(probes - (probes @ q) @ q.T)
        matvecs = sketch_size + q.shape[1] + tails.shape[1]
        return [TraceEstimate(float(head + tail.mean()), error, matvecs) for head, tail, error in zip(heads, tails, std_errors(tails))]


# --------------------------------------------------------------------------- the public analyses


def _operator_dtype(model: nn.Module) -> torch.dtype:
    return torch.float64 if all(p.dtype == torch.float64 for p in model.parameters()) else torch.float32


def hessian_top_eigenvalues(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    k: int = 1,
    iters: int = 30,
    seed: int = 0,
    *,
    tol: float = 1e-6,
    params: ParameterSelector = "all",
    normalization: str = "filter",
    batch_size: int = 256,
    precision: str = "fp32",
    keep_graph: bool | None = None,
    graph_budget_bytes: int = GRAPH_BUDGET_BYTES,
    progress: bool = False,
) -> EigenEstimate:
    """The ``k`` largest eigenvalues of the loss Hessian (``normalization="filter"``: of S H S).

    ``images`` (N, ...) and ``labels`` (N,): all samples of the mean CE, moved to the model's
    device. Lanczos from a Gaussian vector seeded by ``seed``, each step one Hessian-vector
    product over all samples, until the top ``k`` Ritz values change by less than ``tol``
    (relative) or after ``iters`` steps. ``params`` restricts the Hessian to a subset (e.g.
    ``"probe"``). Returns ``EigenEstimate(values (k,) float64 descending, iterations, tol,
    converged)``. See :func:`hessian_operator` for ``precision``, ``keep_graph`` and
    ``graph_budget_bytes``.
    """
    with hessian_operator(model, images, labels, params, batch_size, normalization=normalization, precision=precision,
                          keep_graph=keep_graph, graph_budget_bytes=graph_budget_bytes) as (matvec, dim):
        return lanczos_top_eigenvalues(matvec, dim, k, iters, seed, _operator_dtype(model), model_device(model), progress, tol=tol)


def hessian_trace(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    samples: int = 60,
    seed: int = 0,
    *,
    method: str = "hutch++",
    params: ParameterSelector = "all",
    normalization: str = "filter",
    batch_size: int = 256,
    precision: str = "fp32",
    keep_graph: bool | None = None,
    graph_budget_bytes: int = GRAPH_BUDGET_BYTES,
    progress: bool = False,
) -> TraceEstimate:
    """Estimate tr H of the loss Hessian (``normalization="filter"``: tr S H S) from ``samples`` products.

    Returns ``TraceEstimate(value, std_error, matvecs)``; see :func:`stochastic_trace` for
    ``method`` ("hutch++" or plain "hutchinson"). Rademacher probes drawn by a CPU generator
    seeded with ``seed``. Other options as in :func:`hessian_top_eigenvalues`.
    """
    with hessian_operator(model, images, labels, params, batch_size, normalization=normalization, precision=precision,
                          keep_graph=keep_graph, graph_budget_bytes=graph_budget_bytes) as (matvec, dim):
        return stochastic_trace(matvec, dim, samples, seed, method, _operator_dtype(model), model_device(model), progress)


def hessian_sharpness(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    normalizations: str | Sequence[str] = ("none", "filter"),
    k: int = 1,
    iters: int = 30,
    tol: float = 1e-6,
    trace_samples: int = 60,
    trace_method: str = "hutch++",
    seed: int = 0,
    params: ParameterSelector = "all",
    batch_size: int = 256,
    precision: str = "fp32",
    keep_graph: bool | None = None,
    graph_budget_bytes: int = GRAPH_BUDGET_BYTES,
    progress: bool = False,
) -> dict[str, Sharpness]:
    """Top eigenvalues and trace of the loss Hessian for each normalization: ``{normalization: Sharpness(top, trace)}``.

    Per normalization, in the order given, ``top`` is :func:`hessian_top_eigenvalues` (``k``,
    ``iters``, ``tol``) and ``trace`` is :func:`hessian_trace` (``trace_samples`` products,
    ``trace_method``), both seeded with ``seed``; the same numbers up to float rounding, but
    all of them use one set of first-backward graphs (built once when kept; see
    :func:`contrastlab.analysis.hessian.hessian_operators`) instead of one per call. One
    exception: with both "none" and "filter", the filter-normalized trace tr(S H S) =
    tr(diag(S²) H) is estimated from the raw trace's ``trace_samples`` products and probes
    (:func:`stochastic_traces`) rather than from products of its own — as unbiased, with an
    error of the same size on trained quick-preset models (``benchmarks/shared_trace.py``),
    for half the trace products. Other options as in :func:`hessian_top_eigenvalues`.
    """
    trace_samples = _check_trace_options(trace_samples, trace_method)  # before any Lanczos step is spent
    dtype, device = _operator_dtype(model), model_device(model)
    with hessian_operators(model, images, labels, params, batch_size, normalizations=normalizations, precision=precision,
                           keep_graph=keep_graph, graph_budget_bytes=graph_budget_bytes) as operators:
        tops = {normalization: lanczos_top_eigenvalues(matvec, dim, k, iters, seed, dtype, device, progress, tol=tol)
                for normalization, (matvec, dim) in operators.items()}
        if "none" in operators and "filter" in operators:
            # tr(S H S) = tr(diag(S²) H): both traces from the raw Hessian's products (half the products).
            matvec, dim = operators["none"]
            raw, filtered = stochastic_traces(matvec, dim, trace_samples, seed, trace_method, dtype, device, progress,
                                              weights=(None, filter_weights(model, params)))
            traces = {"none": raw, "filter": filtered}
        else:
            traces = {normalization: stochastic_trace(matvec, dim, trace_samples, seed, trace_method, dtype, device, progress)
                      for normalization, (matvec, dim) in operators.items()}
        return {normalization: Sharpness(tops[normalization], traces[normalization]) for normalization in operators}
