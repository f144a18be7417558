"""Intensive PCA (InPCA, Quinn et al., PNAS 2019) of a set of models' predictions.

Each model is its predictions P_a (N, C) on a fixed list of N samples. Pairwise distances are
Bhattacharyya distances averaged over samples,

    D_ab = −(1/N) Σ_n log Σ_c √(p_a[n,c] p_b[n,c]),

and the models are embedded like classical multidimensional scaling: W = −½ J D J with
J = I − 11ᵀ/M, W = V Λ Vᵀ (symmetric eigenproblem), coordinates V √|Λ|. D is not a squared
Euclidean distance, so W has negative eigenvalues too: they are the time-like directions of a
Minkowski embedding (Σ_k sign(λ_k)(x_ak − x_bk)² = D_ab when all components are kept) and are
reported with their sign, ordered with the others by |λ|.

To place the truth P* in the map, append its one-hot predictions to the set as one more model:
exact zeros are fine (see ``_probabilities`` for the one case that is floored, disjoint support).

Memory: the distances are accumulated over chunks of samples and blocks of models, so beyond
the input only one (M, M) float64 array per worker thread and a few MB of work arrays are in
use; for M = 2,400, N = 10,000, C = 10 (float32 input, 0.96 GB) that is about 0.2 GB more.
"""

from __future__ import annotations

import dataclasses
import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from ..utils.progress import progress_bar
from ._probabilities import OVERLAP_FLOOR, as_probabilities, to_numpy, warn_floored

# Models per block of the distance matrix, and float64 entries per (samples, block, block) work
# array (2 MB): small enough to stay in cache, large enough to amortize the Python loop.
_MODEL_BLOCK = 128
_WORK_ELEMENTS = 1 << 18
# Each product (block × C × block) stays below this many multiply-adds, under which OpenBLAS runs
# single-threaded: its own threads inside our worker threads would oversubscribe the CPUs.
_PRODUCT_SIZE = 1 << 18


@dataclasses.dataclass(frozen=True)
class InPCAResult:
    """An InPCA embedding of M models.

    coords: (M, k) coordinates, eigenvector × √|λ| per component.
    eigenvalues: (k,) the kept eigenvalues of W, signed, ordered by |λ| descending.
    explained: (k,) each kept component's |λ| over Σ|λ| of all M eigenvalues.
    spectrum: (M,) all eigenvalues of W, signed, ordered by |λ| descending (the first k are
        ``eigenvalues``); shows how much of the geometry is Minkowski (negative).
    """

    coords: np.ndarray
    eigenvalues: np.ndarray
    explained: np.ndarray
    spectrum: np.ndarray


def _unit_roots(probs: np.ndarray, start: int, stop: int) -> np.ndarray:
    """√p of samples [start, stop) of every model, rows rescaled to unit norm: (stop − start, M, C) float64."""
    roots = probs[:, start:stop].transpose(1, 0, 2).astype(np.float64)  # a contiguous copy
    roots /= roots.sum(axis=-1, keepdims=True)
    return np.sqrt(roots, out=roots)


def _neg_log_overlap_sums(probs: np.ndarray, chunk_starts: list[int], per_chunk: int, block: int,
                          block_pairs: list[tuple[int, int]], advance) -> tuple[np.ndarray, int]:
    """Σ over the given sample chunks of −log Σ_c √(p_a p_b), upper block triangle only: ((M, M), floored count)."""
    n_models = probs.shape[0]
    total = np.zeros((n_models, n_models))
    n_floored = 0
    for start in chunk_starts:
        roots = _unit_roots(probs, start, start + per_chunk)  # (n, M, C)
        for a, b in block_pairs:
            overlap = np.matmul(roots[:, a:a + block], roots[:, b:b + block].transpose(0, 2, 1))  # (n, Ba, Bb)
            if overlap.min() < OVERLAP_FLOOR:  # disjoint supports: rare, so test before paying for a clamp
                n_floored += int(np.count_nonzero(overlap < OVERLAP_FLOOR)) * (1 if a == b else 2)
                np.maximum(overlap, OVERLAP_FLOOR, out=overlap)
            total[a:a + block, b:b + block] -= np.log(overlap, out=overlap).sum(axis=0)
        advance(1)
    return total, n_floored


def default_workers() -> int:
    """Worker threads for :func:`bhattacharyya_matrix`: the CPUs this process may use, at most 4."""
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        available = os.cpu_count() or 1
    return max(1, min(available, 4))


def _bhattacharyya_on_device(probs: np.ndarray, device: torch.device) -> tuple[np.ndarray, int]:
    """The same sums as :func:`_neg_log_overlap_sums` with torch on ``device`` (float64, all models at
    once, chunks of samples): −Σ_n log Σ_c √(p_a p_b) as (M, M), and how many overlaps were floored."""
    n_models, n_samples, _ = probs.shape
    total = torch.zeros(n_models, n_models, dtype=torch.float64, device=device)
    n_floored = 0
    per_chunk = max(1, (1 << 24) // max(1, n_models * n_models))  # (chunk, M, M) float64 work array: 128 MB
    for start in range(0, n_samples, per_chunk):
        roots = torch.from_numpy(probs[:, start:start + per_chunk]).to(device, torch.float64).transpose(0, 1)  # (n, M, C)
        roots = (roots / roots.sum(-1, keepdim=True)).sqrt_()
        overlap = roots @ roots.transpose(1, 2)  # (n, M, M)
        floored = overlap < OVERLAP_FLOOR
        n_floored += int(floored.sum())
        total -= overlap.clamp_(min=OVERLAP_FLOOR).log_().sum(0)
    return total.cpu().numpy(), n_floored


def bhattacharyya_matrix(probs: object, *, workers: int | None = None, progress: bool = False,
                         device: str | torch.device | None = None) -> np.ndarray:
    """Pairwise Bhattacharyya distances D (M, M) of models ``probs`` (M, N, C).

    Symmetric with an exactly zero diagonal. Each row of probs is rescaled to sum to exactly 1
    first (after the tolerance check), so a copy of a model is at distance 0 up to rounding.
    Computed in float64 by batched matrix products over the upper triangle of model blocks, in
    chunks of samples (bounded memory). ``workers`` threads (default :func:`default_workers`)
    each take a fixed share of the sample chunks and sum into their own (M, M) array; numpy
    releases the GIL in the products and logs, and the fixed shares make the result the same
    from run to run for a given ``workers``. ``progress`` draws a bar over the sample chunks.
    ``device`` (e.g. "cuda"): compute the same sums with torch there instead (float64; equal to
    the CPU path up to rounding); None: numpy on the CPU.
    """
    probs = as_probabilities(probs, "probs", ndim=3)
    n_models, n_samples, n_classes = probs.shape
    if device is not None:
        total, n_floored = _bhattacharyya_on_device(probs, torch.device(device))
        if n_floored:
            warn_floored(n_floored)
        return _symmetric(total / n_samples)
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    block = max(1, min(n_models, _MODEL_BLOCK, math.isqrt(_PRODUCT_SIZE // n_classes)))
    per_chunk = max(1, _WORK_ELEMENTS // (block * block))
    starts = range(0, n_models, block)
    block_pairs = [(a, b) for a in starts for b in starts if b >= a]
    chunk_starts = list(range(0, n_samples, per_chunk))
    shares = [chunk_starts[i::workers] for i in range(min(workers, len(chunk_starts)))]
    with progress_bar(len(chunk_starts), "Bhattacharyya distances", progress) as advance:
        if len(shares) == 1:
            parts = [_neg_log_overlap_sums(probs, shares[0], per_chunk, block, block_pairs, advance)]
        else:
            with ThreadPoolExecutor(len(shares)) as pool:
                parts = list(pool.map(lambda share: _neg_log_overlap_sums(probs, share, per_chunk, block, block_pairs,
                                                                          advance), shares))
    n_floored = sum(count for _, count in parts)
    if n_floored:
        warn_floored(n_floored)
    return _symmetric(sum(total for total, _ in parts) / n_samples)


def _symmetric(distances: np.ndarray) -> np.ndarray:
    """Mirror the strict upper triangle (the CPU path computes only the upper triangle of blocks); zero diagonal."""
    upper = np.triu(distances, k=1)
    distances = upper + upper.T
    np.fill_diagonal(distances, 0.0)
    return distances


def _validate_distances(distances: object) -> np.ndarray:
    matrix = to_numpy(distances, "distances").astype(np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] < 1:
        raise ValueError(f"distances must be a square matrix (M, M), got shape {tuple(matrix.shape)}")
    if not np.all(np.isfinite(matrix)):
        raise ValueError("distances contains NaN or inf")
    scale = max(float(np.abs(matrix).max()), 1.0)
    if not np.allclose(matrix, matrix.T, rtol=0.0, atol=1e-10 * scale):
        raise ValueError("distances must be symmetric")
    return matrix


def embed_distances(distances: object, n_components: int = 3) -> InPCAResult:
    """Embed a symmetric distance matrix (M, M) by W = −½ J D J; see :class:`InPCAResult`.

    Each eigenvector's sign is fixed so that its largest-magnitude entry is positive (the first
    such entry on a tie), so the map does not flip between runs or under a reordering of models.
    """
    matrix = _validate_distances(distances)
    n_models = matrix.shape[0]
    if not 1 <= n_components <= n_models:
        raise ValueError(f"n_components must be in [1, {n_models}] for {n_models} models, got {n_components}")
    # J D J without forming J: subtract row and column means, add back the grand mean.
    row_means = matrix.mean(axis=1, keepdims=True)
    centered = matrix - row_means - row_means.T + matrix.mean()
    w = -0.5 * centered
    w = 0.5 * (w + w.T)
    values, vectors = np.linalg.eigh(w)
    order = np.argsort(-np.abs(values), kind="stable")
    values, vectors = values[order], vectors[:, order]
    largest = np.argmax(np.abs(vectors), axis=0)
    signs = np.where(vectors[largest, np.arange(n_models)] < 0, -1.0, 1.0)
    vectors = vectors * signs
    total = float(np.abs(values).sum())
    kept = values[:n_components]
    explained = np.abs(kept) / total if total > 0 else np.zeros(n_components)
    coords = vectors[:, :n_components] * np.sqrt(np.abs(kept))
    return InPCAResult(coords=coords, eigenvalues=kept.copy(), explained=explained, spectrum=values)


def inpca(probs: object, n_components: int = 3, *, workers: int | None = None, progress: bool = False,
          device: str | torch.device | None = None) -> InPCAResult:
    """InPCA of models ``probs`` (M, N, C): :func:`bhattacharyya_matrix` (on ``device`` if given) then
    :func:`embed_distances`."""
    return embed_distances(bhattacharyya_matrix(probs, workers=workers, progress=progress, device=device), n_components)
