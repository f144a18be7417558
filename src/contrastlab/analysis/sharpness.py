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
- :func:`lanczos_top_eigenvalues`: Lanczos with full reorthogonalization; stops once the top
  ``k`` Ritz values change by less than ``tol`` (relative) from one step to the next, after
  ``iters`` steps at most. Returns an :class:`EigenEstimate` (values, iterations, tol, converged).
- :func:`stochastic_trace`: Hutchinson's estimator E[vᵀHv] = tr H with Rademacher v, by default
  in its Hutch++ form (Meyer, Musco, Musco & Woodruff, SOSA 2021): a third of the products
  sketch the dominant subspace, whose trace is taken exactly, and the rest estimate the trace of
  what is left — far lower variance for Hessians with a few large eigenvalues, and exact once
  the sketch spans the parameter space.
- :func:`hessian_sharpness`: both, for several normalizations at once, over one
  :class:`~contrastlab.analysis.hessian.HessianOperator` (one set of first-backward graphs);
  the filter-normalized trace next to the raw one reuses the raw trace's products
  (:func:`stochastic_traces`: tr(S H S) = tr(diag(S²) H), estimated as unbiasedly from the same probes).

The solvers take any symmetric operator with ``matvec``, ``dim``, ``dtype`` and ``device`` (a
:class:`~contrastlab.analysis.hessian.LinearOperator`, a ``HessianOperator`` or one of its views).

Speed: when the graphs of the first backward pass (the gradient with ``create_graph``) of all
batches fit the graph budget (``keep_graph=None``, measured on the first batch; on CUDA the free
memory less a margin) they are built once and every product is one backward pass through them;
otherwise each product recomputes them batch by batch. Both give the same numbers.

The analysis leaves the model as it was: each submodule's mode, every parameter's value,
``requires_grad`` and ``.grad`` (the products use ``torch.autograd.grad``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from ..utils.progress import progress_bar
from .checks import SharpnessInputError, check_positive_int
from .hessian import HessianOperator, HessianSettings, LinearOperator, check_normalizations

__all__ = [
    "EigenEstimate", "Sharpness", "SharpnessSettings", "TRACE_METHODS", "TraceEstimate", "hessian_sharpness",
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


def _lanczos_steps(k: int, iters: int, dim: int, tol: float) -> int:
    """The most Lanczos steps to take, after checking the options."""
    k = check_positive_int(k, "k", error=SharpnessInputError)
    if not math.isfinite(float(tol)) or tol < 0:
        raise SharpnessInputError(f"tol must be a finite number >= 0, got {tol}")
    steps = min(check_positive_int(iters, "iters", error=SharpnessInputError), int(dim))
    if steps < k:
        raise SharpnessInputError(f"iters={iters} Lanczos steps cannot give k={k} eigenvalues (dim={dim})")
    return steps


def _converged(ritz: np.ndarray, previous: np.ndarray | None, tol: float) -> bool:
    """Every top Ritz value changed by less than ``tol`` relative to its magnitude since the last step."""
    if previous is None or tol <= 0:
        return False
    floor = 1e-12 * np.abs(ritz).max() + 1e-300
    return bool(np.all(np.abs(ritz - previous) <= tol * np.maximum(np.abs(ritz), floor)))


def lanczos_top_eigenvalues(operator: LinearOperator, k: int = 1, iters: int = 30, seed: int = 0, *,
                            tol: float = 1e-6, progress: bool = False) -> EigenEstimate:
    """The ``k`` largest eigenvalues (descending) of the symmetric ``operator`` (its matvec (dim,) -> (dim,)).

    Lanczos from a seeded Gaussian start vector, with full reorthogonalization (twice, against
    every previous basis vector) so no spurious copies of converged eigenvalues appear. Stops
    when every one of the top ``k`` Ritz values changes by less than ``tol`` relative to its
    magnitude between consecutive steps (``tol=0``: never early), when the Krylov space is
    invariant (the Ritz values are then exact), or after ``min(iters, dim)`` products.
    """
    steps = _lanczos_steps(k, iters, operator.dim, tol)
    dtype, device = operator.dtype, torch.device(operator.device)
    basis = torch.zeros(steps, operator.dim, dtype=dtype, device=device)
    alphas: list[float] = []
    betas: list[float] = []
    previous, converged = None, False
    q = _start_vector(operator.dim, seed, dtype, device)
    q = q / torch.linalg.vector_norm(q)
    with progress_bar(steps, "Hessian eigenvalues", progress) as advance:
        for j in range(steps):
            basis[j] = q
            w = operator.matvec(q).to(dtype)
            alpha = float(torch.dot(w.double(), q.double()))  # the solver's one read-back per product
            w = w - alpha * q
            if j > 0:
                w = w - betas[-1] * basis[j - 1]
            for _ in range(2):  # Gram-Schmidt twice is enough in floating point
                w = w - basis[: j + 1].T @ (basis[: j + 1] @ w)
            alphas.append(alpha)
            advance(1)
            if len(alphas) >= k:
                ritz = _ritz_values(alphas, betas)[:k]
                converged, previous = _converged(ritz, previous, tol), ritz
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
        raise SharpnessInputError(f"the operator has an invariant subspace of dimension {len(ritz)} < k={k} around the start vector; use another seed")
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
        raise SharpnessInputError(f"method must be one of {', '.join(TRACE_METHODS)}, got '{method}'")
    if int(samples) != samples or samples < (3 if method == "hutch++" else 1):
        raise SharpnessInputError(f"samples must be an integer >= {3 if method == 'hutch++' else 1} for {method}, got {samples}")
    return int(samples)


def stochastic_trace(operator: LinearOperator, samples: int = 60, seed: int = 0, method: str = "hutch++",
                     progress: bool = False) -> TraceEstimate:
    """tr A of a symmetric ``operator`` from ``samples`` products (Rademacher probes).

    ``method="hutchinson"``: mean of vᵀAv over ``samples`` probes; std_error = sample std/√samples.
    ``method="hutch++"``: s = samples//3 probes S, Q = orth(A·S), then
    tr A ≈ tr(QᵀAQ) + mean_i gᵢᵀ(I−QQᵀ)A(I−QQᵀ)gᵢ over the remaining samples − 2s probes gᵢ;
    std_error is that of the second term. Exact (up to rounding) once s ≥ dim.
    """
    return stochastic_traces(operator, samples, seed, method, progress)[0]


class _QuadraticForms:
    """(w⊙v)ᵀ(Av) for each weight vector w and each probe v, with a progress bar's ``advance``."""

    def __init__(self, operator: LinearOperator, weights: Sequence[torch.Tensor | None], advance: Callable[..., None]):
        self.operator, self.advance = operator, advance
        self.scales = [None if w is None else w.to(device=operator.device, dtype=torch.float64).reshape(-1) for w in weights]
        if any(w is not None and w.shape != (operator.dim,) for w in self.scales):
            raise SharpnessInputError(f"every weight vector must have shape ({operator.dim},)")

    def __call__(self, vectors: torch.Tensor) -> np.ndarray:
        """(len(weights), len(vectors))."""
        values = []
        for v in vectors:
            product, v = self.operator.matvec(v).double(), v.double()
            values.append([float(torch.dot(product, v if w is None else w * v)) for w in self.scales])
            self.advance(1)
        return np.asarray(values, dtype=np.float64).reshape(len(vectors), len(self.scales)).T


def _std_errors(values: np.ndarray) -> list[float]:
    n = values.shape[1]
    return [float(row.std(ddof=1) / math.sqrt(n)) if n > 1 else math.inf for row in values]


def stochastic_traces(operator: LinearOperator, samples: int = 60, seed: int = 0, method: str = "hutch++",
                      progress: bool = False, weights: Sequence[torch.Tensor | None] = (None,)) -> list[TraceEstimate]:
    """tr(diag(w)·A) for each ``w`` of ``weights`` ((dim,) tensors; None: tr A), all from the same ``samples`` products.

    The estimator of :func:`stochastic_trace` with every quadratic form vᵀ(Av) replaced by
    (w⊙v)ᵀ(Av): unbiased for any w, since E[vᵀMv] = tr M for Rademacher v and any matrix M, and
    for Hutch++ tr M = tr(QᵀMQ) + tr((I−P)M(I−P)) with P = QQᵀ for any M (the cross term
    tr((I−P)MP) = tr(P(I−P)M) is 0). With w = S² (zero off the filters) this is the trace of the
    filter-normalized Hessian S H S from the raw Hessian's products. Exact once the sketch spans
    the space. Each estimate's ``matvecs`` is the number of products they share.
    """
    samples = _check_trace_options(samples, method)
    dim, dtype, device = operator.dim, operator.dtype, torch.device(operator.device)
    generator = torch.Generator().manual_seed(int(seed))
    with progress_bar(samples, "Hessian trace", progress) as advance:
        quadratic_forms = _QuadraticForms(operator, weights, advance)
        if method == "hutchinson":
            values = quadratic_forms(_rademacher(dim, samples, generator, dtype, device))
            return [TraceEstimate(float(row.mean()), error, samples) for row, error in zip(values, _std_errors(values))]
        sketch_size = samples // 3
        sketch = _rademacher(dim, sketch_size, generator, dtype, device)
        products = torch.stack([operator.matvec(v).to(dtype) for v in sketch], dim=1)  # (dim, s)
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
        return [TraceEstimate(float(head + tail.mean()), error, matvecs) for head, tail, error in zip(heads, tails, _std_errors(tails))]


# --------------------------------------------------------------------------- the public analysis


@dataclass(frozen=True)
class SharpnessSettings:
    """What :func:`hessian_sharpness` computes, and how.

    ``normalizations``: "none" (raw H) and/or "filter" (S H S), in the order of the result;
    ``k``, ``iters``, ``tol``: :func:`lanczos_top_eigenvalues`; ``trace_samples`` and
    ``trace_method`` ("hutch++" | "hutchinson"): :func:`stochastic_trace`; ``seed`` seeds both;
    ``hessian``: how the operator builds its products (:class:`HessianSettings`).
    """

    normalizations: str | Sequence[str] = ("none", "filter")
    k: int = 1
    iters: int = 30
    tol: float = 1e-6
    trace_samples: int = 60
    trace_method: str = "hutch++"
    seed: int = 0
    hessian: HessianSettings = HessianSettings()
    progress: bool = False


def hessian_sharpness(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor],
                      settings: SharpnessSettings = SharpnessSettings()) -> dict[str, Sharpness]:
    """Top eigenvalues and trace of the loss Hessian for each normalization: ``{normalization: Sharpness(top, trace)}``.

    ``data`` = (images (N, ...), labels (N,)): all samples of the mean CE, moved to the model's
    device. Per normalization, in the order given, ``top`` is Lanczos (``k``, ``iters``, ``tol``)
    and ``trace`` is Hutch++ (``trace_samples`` products), both seeded with ``seed`` and all over
    one :class:`HessianOperator` (one set of first-backward graphs, built once when kept). With
    both "none" and "filter", the filter-normalized trace tr(S H S) = tr(diag(S²) H) is estimated
    from the raw trace's products and probes (:func:`stochastic_traces`) rather than from products
    of its own — as unbiased, with an error of the same size on trained quick-preset models
    (``benchmarks/shared_trace.py``), for half the trace products.
    """
    images, labels = data
    normalizations = check_normalizations(settings.normalizations)
    trace_samples = _check_trace_options(settings.trace_samples, settings.trace_method)  # before any Lanczos step is spent
    s = settings
    with HessianOperator(model, images, labels, s.hessian, filter_only="none" not in normalizations) as hessian:
        views = {normalization: hessian.view(normalization) for normalization in normalizations}
        tops = {normalization: lanczos_top_eigenvalues(view, s.k, s.iters, s.seed, tol=s.tol, progress=s.progress)
                for normalization, view in views.items()}
        if "none" in views and "filter" in views:
            # tr(S H S) = tr(diag(S²) H): both traces from the raw Hessian's products (half the products).
            raw, filtered = stochastic_traces(views["none"], trace_samples, s.seed, s.trace_method, s.progress,
                                              weights=(None, hessian.filter_weights()))
            traces = {"none": raw, "filter": filtered}
        else:
            traces = {normalization: stochastic_trace(view, trace_samples, s.seed, s.trace_method, s.progress)
                      for normalization, view in views.items()}
        return {normalization: Sharpness(tops[normalization], traces[normalization]) for normalization in views}
