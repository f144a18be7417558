"""Speed (and, with --memory-check, peak memory) of the information-geometry analyses.

    python benchmarks/geometry.py                 # InPCA M=384 N=2500 C=5; progress 10,000 models N=2500 C=5
    python benchmarks/geometry.py --memory-check  # also InPCA M=2400 N=10000 C=10 in a fresh process: time, peak RSS

Inputs are fabricated Dirichlet probabilities (float32, like the study's snapshot files) whose
true-class concentration grows from model to model, so the models spread along the path from
P0 to P*. Each fast implementation is compared with the straightforward reference written from
the formulas: InPCA as chunked numpy (matmul, log) with a general eigensolver (numpy.linalg.eig);
progress as one bounded scalar minimization (scipy) per model, run on a subset of the models
and extrapolated. Times are the best of --repeats (the machine may be shared: the load average
is printed with the table).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys

import numpy as np
from scipy.optimize import minimize_scalar

from common import Stopwatch, best_time
from contrastlab.analysis.inpca import default_workers, inpca
from contrastlab.analysis.progress import progress


def fabricated_probabilities(rng: np.random.Generator, n_models: int, n_samples: int, n_classes: int,
                             labels: np.ndarray) -> np.ndarray:
    """(M, N, C) float32 Dirichlet draws; model m's true-class concentration is 1 + 8·m/M."""
    probs = np.empty((n_models, n_samples, n_classes), dtype=np.float32)
    per_block = max(1, (1 << 22) // (n_samples * n_classes))
    for start in range(0, n_models, per_block):
        stop = min(start + per_block, n_models)
        concentration = np.ones((stop - start, n_samples, n_classes))
        concentration[:, np.arange(n_samples), labels] += 8.0 * np.arange(start, stop)[:, None] / n_models
        draws = rng.standard_gamma(concentration)
        probs[start:stop] = draws / draws.sum(axis=-1, keepdims=True)
    return probs


# ---------------------------------------------------------------- references


def reference_inpca(probs: np.ndarray, n_components: int, samples_per_chunk: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Chunked numpy distances, explicit centering matrix, general eigensolver; (coords, eigenvalues)."""
    n_models, n_samples, _ = probs.shape
    neg_log_sum = np.zeros((n_models, n_models))
    for start in range(0, n_samples, samples_per_chunk):
        roots = np.sqrt(probs[:, start:start + samples_per_chunk].astype(np.float64)).transpose(1, 0, 2)
        overlap = roots @ roots.transpose(0, 2, 1)  # (n, M, M)
        neg_log_sum -= np.log(np.maximum(overlap, 1e-300)).sum(axis=0)
    distances = neg_log_sum / n_samples
    centering = np.eye(n_models) - 1.0 / n_models
    values, vectors = np.linalg.eig(-0.5 * centering @ distances @ centering)
    values, vectors = values.real, vectors.real
    order = np.argsort(-np.abs(values))[:n_components]
    vectors = vectors[:, order] / np.linalg.norm(vectors[:, order], axis=0)
    vectors *= np.where(vectors[np.argmax(np.abs(vectors), axis=0), np.arange(n_components)] < 0, -1.0, 1.0)
    return vectors * np.sqrt(np.abs(values[order])), values[order]


def reference_progress(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """One bounded scalar minimization per model of d_B(P_w, geodesic(P0, P*, λ))."""
    n_samples, n_classes = probs.shape[1:]
    angle = np.arccos(1.0 / np.sqrt(n_classes))
    root_uniform = np.full(n_classes, 1.0 / np.sqrt(n_classes))
    root_truth = np.eye(n_classes)[labels]
    result = np.empty(len(probs))
    for m, model in enumerate(probs):
        root_model = np.sqrt(model.astype(np.float64))

        def distance(lam: float) -> float:
            root_path = (np.sin((1 - lam) * angle) * root_uniform + np.sin(lam * angle) * root_truth) / np.sin(angle)
            return -np.mean(np.log(np.maximum(np.sum(root_model * root_path, axis=-1), 1e-300)))

        inner = minimize_scalar(distance, bounds=(0.0, 1.0), method="bounded", options={"xatol": 1e-10}).x
        candidates = [0.0, inner, 1.0]
        result[m] = candidates[int(np.argmin([distance(lam) for lam in candidates]))]
    return result


# ---------------------------------------------------------------- runs


def memory_check(seed: int, workers: int | None) -> None:
    """InPCA of M=2400, N=10000, C=10 (float32 input, 0.96 GB); prints time and peak RSS. Runs in its own process."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, 10_000)
    probs = fabricated_probabilities(rng, 2400, 10_000, 10, labels)
    rss_input = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    with Stopwatch() as watch:
        inpca(probs, n_components=3, workers=workers)
    seconds = watch.seconds
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux
    print(f"{seconds:.1f} {peak:.2f} {rss_input:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inpca-models", type=int, default=384)
    parser.add_argument("--progress-models", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=2500)
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--reference-progress-models", type=int, default=200,
                        help="models given to the per-model scalar minimizer; its time is scaled to --progress-models")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None, help="InPCA worker threads (default: the library's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--memory-check", action="store_true", help="also run InPCA M=2400 N=10000 C=10 in a fresh process")
    parser.add_argument("--memory-check-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_check_only:
        memory_check(args.seed, args.workers)
        return

    rng = np.random.default_rng(args.seed)
    n, c = args.samples, args.classes
    labels = rng.integers(0, c, n)
    rows = []

    probs = fabricated_probabilities(rng, args.inpca_models, n, c, labels)
    fast, result = best_time(lambda: inpca(probs, n_components=3, workers=args.workers), args.repeats)
    slow, (ref_coords, ref_values) = best_time(lambda: reference_inpca(probs, 3), 1)
    agreement = max(np.abs(result.coords - ref_coords).max(), np.abs(result.eigenvalues - ref_values).max())
    rows.append((f"InPCA M={args.inpca_models} N={n} C={c}", fast, 2.0, slow, "", agreement))

    probs = fabricated_probabilities(rng, args.progress_models, n, c, labels)
    fast, t_w = best_time(lambda: progress(probs, labels), args.repeats)
    subset = np.linspace(0, args.progress_models - 1, min(args.reference_progress_models, args.progress_models)).astype(int)
    slow_subset, ref_t_w = best_time(lambda: reference_progress(probs[subset], labels), 1)
    slow = slow_subset * args.progress_models / len(subset)
    note = f"(extrapolated from {len(subset)})" if len(subset) < args.progress_models else ""
    rows.append((f"progress {args.progress_models} models N={n} C={c}", fast, 5.0, slow, note,
                 np.abs(t_w[subset] - ref_t_w).max()))
    del probs

    if args.memory_check:
        command = [sys.executable, os.path.abspath(__file__), "--memory-check-only", "--seed", str(args.seed)]
        if args.workers:
            command += ["--workers", str(args.workers)]
        seconds, peak, rss_input = map(float, subprocess.run(command, check=True, capture_output=True, text=True).stdout.split())

    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    workers = args.workers or default_workers()
    print(f"geometry benchmark — numpy {np.__version__}, InPCA with {workers} worker threads, "
          f"{os.cpu_count()} CPUs, load average {load}")
    print(f"{'case':<36} {'fast s':>8} {'target s':>9} {'reference s':>12} {'ratio':>7}  {'max |diff|':>10}")
    for name, fast, target, slow, note, diff in rows:
        print(f"{name:<36} {fast:>8.3f} {target:>9.1f} {slow:>12.2f} {slow / fast:>6.1f}×  {diff:>10.1e} {note}")
    if args.memory_check:
        print(f"InPCA M=2400 N=10000 C=10 (float32): {seconds:.1f} s, peak RSS {peak:.2f} GiB "
              f"(input alone {rss_input:.2f} GiB; limit 4 GB)")


if __name__ == "__main__":
    main()
