"""Evaluating a loss surface: per point (in place, folded BN, worker threads) or affine for a probe.

- :func:`per_point_surface`: one forward pass over the samples per point, with the moving
  parameters updated in place (no copy of the model per point), conv→BN pairs folded into one
  convolution per point (exact in eval mode), ``torch.inference_mode`` and channels_last. On
  the CPU several points are evaluated at once by worker threads, each on its own copy of the
  moving part of the model with single-threaded ops — cheaper than splitting every op across
  threads, whose synchronization dominates for the small convolutions of a CIFAR network.
- :func:`affine_probe_surface`: when only a final ``nn.Linear`` moves on fixed features, the
  logits are affine in the grid coordinates — logits(x, y) = z₀ + x·z_δ + y·z_η — and the grid
  is a few tensor ops in float64, with no forward pass per point.
"""

from __future__ import annotations

import copy
import itertools
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models import eval_mode
from ..models.batchnorm import fold_batchnorm, folded_to_channels_last
from ..precision import autocast
from ..utils.progress import progress_bar
from .checks import LandscapeInputError
from .directions import Direction
from .surface_grid import PartialGrid, Surface

log = logging.getLogger(__name__)

# Cache the fixed head of a Sequential only when its output for all samples fits in this many bytes.
FEATURE_CACHE_LIMIT_BYTES = 2 << 30
# Elements of the (points, samples, classes) logits block of the affine-probe path.
_AFFINE_BLOCK_ELEMENTS = 1 << 22
# On the CPU, a batch whose largest activation fits in about this much cache runs fastest per sample
# (benchmarks/README.md: 256 samples for a width-8 CIFAR ResNet-18 at 16×16, 32 at width 64 and 32×32).
CPU_ACTIVATION_BUDGET_BYTES = 2 << 20
CPU_BATCH_RANGE = (32, 256)
# Samples per forward batch on a GPU when none is given: large batches fill it.
GPU_BATCH_SIZE = 1024


# --------------------------------------------------------------------------- pieces


def cpu_batch_size(module: nn.Module, sample: torch.Tensor) -> int:
    """Samples per forward batch on the CPU: as many as keep the largest output of any leaf module
    within :data:`CPU_ACTIVATION_BUDGET_BYTES`, clamped to :data:`CPU_BATCH_RANGE`. ``sample``: one
    input (1, ...), run through ``module`` once to measure (call in eval and inference mode)."""
    largest = 0

    def record(_module, _inputs, output) -> None:
        nonlocal largest
        if isinstance(output, torch.Tensor):
            largest = max(largest, output.numel() * output.element_size())

    leaves = [m for m in module.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(record) for m in leaves]
    try:
        module(sample)
    finally:
        for handle in handles:
            handle.remove()
    low, high = CPU_BATCH_RANGE
    return int(min(high, max(low, CPU_ACTIVATION_BUDGET_BYTES // max(largest, 1))))


def split_sequential(model: nn.Module, moving_ids: set[int]) -> int:
    """For an ``nn.Sequential``: the index of the first child that holds a moving parameter, else 0."""
    if not isinstance(model, nn.Sequential):
        return 0
    for index, child in enumerate(model):
        if any(id(p) in moving_ids for p in child.parameters()):
            return index
    return len(model)


def compute_inputs(module: nn.Module, images: torch.Tensor, batch_size: int, device: torch.device, precision: str) -> torch.Tensor | None:
    """``module`` applied to all images (N, ...) in batches, or None if the result would be too large."""
    outputs, total_bytes = [], 0
    for start in range(0, images.shape[0], batch_size):
        x = images[start : start + batch_size].to(device)
        with autocast(precision, device):
            out = module(x)
        out = out.float() if out.dtype in (torch.float16, torch.bfloat16) else out
        outputs.append(out)
        total_bytes += out.numel() * out.element_size()
        if total_bytes * images.shape[0] / min(images.shape[0], start + batch_size) > FEATURE_CACHE_LIMIT_BYTES:
            return None
    return torch.cat(outputs)


def loss_and_correct_sums(module: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int, precision: str) -> torch.Tensor:
    """(Σ_n CE, number of correct argmax predictions) of ``module`` on ``inputs`` as one float64 tensor (2,)
    on their device: nothing is read back to the host (a point's numbers are read with its row's)."""
    total = torch.zeros((), dtype=torch.float64, device=inputs.device)
    correct = torch.zeros((), dtype=torch.int64, device=inputs.device)
    for start in range(0, inputs.shape[0], batch_size):
        x, y = inputs[start : start + batch_size], labels[start : start + batch_size]
        with autocast(precision, inputs.device):
            logits = module(x)
        logits = logits.double()
        total += F.cross_entropy(logits, y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
    return torch.stack([total, correct.double()])  # counts < 2**53: exact in float64


def read_back(sums: list[torch.Tensor], samples: int) -> list[tuple[float, float]]:
    """(mean CE, accuracy) per point from its (2,) sums: one copy to the host for all of them."""
    values = torch.stack(sums).cpu().numpy()
    return [(float(total) / samples, float(correct) / samples) for total, correct in values]


@torch.no_grad()
def set_point(parameters: list[torch.Tensor], origins: list[torch.Tensor], steps: list[list[torch.Tensor]], coefficients: Sequence[float]) -> None:
    """parameters[i] ← origins[i] + Σ_k coefficients[k]·steps[k][i], in place."""
    for i, (parameter, origin) in enumerate(zip(parameters, origins)):
        parameter.copy_(origin)
        for coefficient, step in zip(coefficients, steps):
            if coefficient != 0:
                parameter.add_(step[i], alpha=float(coefficient))


def resolve_workers(workers: int | None, device: torch.device) -> int:
    """None: one single-threaded worker per intra-op thread on the CPU, one worker elsewhere."""
    if workers is None:
        return torch.get_num_threads() if device.type == "cpu" else 1
    if int(workers) != workers or workers < 1:
        raise LandscapeInputError(f"workers must be an integer >= 1, got {workers}")
    return int(workers)


# --------------------------------------------------------------------------- per point


@dataclass
class _Worker:
    """A module to evaluate (maybe a folded view), its refresh after a move, and its moving parameters."""

    module: nn.Module
    refresh: Callable[[], None]
    parameters: list[torch.Tensor]


@dataclass(frozen=True)
class PointOptions:
    """How :func:`per_point_surface` evaluates a point: samples per forward batch, ``precision``, concurrent
    ``workers`` (resolved), BN folding, channels_last and a progress bar."""

    batch_size: int
    precision: str = "fp32"
    workers: int = 1
    fold_bn: bool = True
    channels_last: bool = True
    progress: bool = False


@dataclass(frozen=True)
class Moves:
    """The parameters a surface moves and, per direction k, ``steps[k]``: the matching tensors of that direction."""

    parameters: list[torch.Tensor]
    steps: list[list[torch.Tensor]]


def _workers(evaluated: nn.Module, moving: list[torch.Tensor], count: int, options: PointOptions) -> list[_Worker]:
    """``count`` workers: ``evaluated`` itself for one, private copies for several; folded and channels_last as asked."""
    owned = [evaluated] if count == 1 else [copy.deepcopy(evaluated) for _ in range(count)]
    position = {id(p): i for i, p in enumerate(evaluated.parameters())}
    workers = []
    for module in owned:
        own_parameters = list(module.parameters())
        moved = [own_parameters[position[id(p)]] for p in moving]
        folded, refresh = fold_batchnorm(module) if options.fold_bn else (module, lambda: None)
        if options.channels_last:
            folded_to_channels_last(folded)
        workers.append(_Worker(folded, refresh, moved))
    return workers


def per_point_surface(evaluated: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, moves: Moves, grid: PartialGrid,
                      options: PointOptions) -> Surface:
    """The remaining points of ``grid``: ``evaluated`` (N, ...) -> logits at θ* + Σ c_k·steps[k].

    ``moves.parameters`` are the parameters of ``evaluated`` that the directions move. With one
    worker ``evaluated`` itself is moved (and written back bit-identically to θ*, also on an
    exception); with several, each moves a private copy. With one worker (every GPU) nothing is
    read back to the host per point: a row's sums stay on the device and are read at its end.
    """
    todo = grid.todo()
    origins = [p.detach().clone() for p in moves.parameters]
    count = min(options.workers, len(todo))
    with eval_mode(evaluated):
        states = _workers(evaluated, moves.parameters, count, options)
        if options.channels_last and inputs.ndim == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)

        def evaluate(worker: _Worker, row: int, column: int) -> torch.Tensor:
            set_point(worker.parameters, origins, moves.steps, grid.coefficients(row, column))
            worker.refresh()
            with torch.inference_mode():
                return loss_and_correct_sums(worker.module, inputs, labels, options.batch_size, options.precision)

        try:
            with progress_bar(len(todo), "loss surface", options.progress) as advance:
                if count == 1:
                    _evaluate_by_rows(lambda row, column: evaluate(states[0], row, column), todo, grid, inputs.shape[0], advance)
                else:
                    _evaluate_in_parallel(evaluate, states, todo, grid, inputs.shape[0], advance)
        finally:
            if count == 1:
                set_point(states[0].parameters, origins, moves.steps, [0.0] * len(moves.steps))  # θ*, bit for bit
            grid.save()
    return grid.surface()


def _evaluate_by_rows(evaluate: Callable[[int, int], torch.Tensor], todo: list[tuple[int, int]], grid: PartialGrid,
                      samples: int, advance: Callable[..., None]) -> None:
    """Evaluate ``todo`` row by row, reading each row's numbers back to the host once, at its end."""
    for row, points in itertools.groupby(todo, key=lambda point: point[0]):
        columns = [column for _, column in points]
        sums = [evaluate(row, column) for column in columns]
        for column, (loss, accuracy) in zip(columns, read_back(sums, samples)):
            grid.record(row, column, loss, accuracy)
        advance(len(columns))


def _evaluate_in_parallel(
    evaluate: Callable[[_Worker, int, int], torch.Tensor],
    states: list[_Worker],
    todo: list[tuple[int, int]],
    grid: PartialGrid,
    samples: int,
    advance: Callable[..., None],
) -> None:
    """Evaluate ``len(states)`` points at a time, one per worker thread, each op single-threaded (the CPU's way).

    Torch ops release the GIL, so the threads run on separate cores without the per-op
    synchronization of intra-op parallelism (which dominates on a busy or small machine).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # process-wide; restored below
    try:
        with ThreadPoolExecutor(max_workers=len(states), thread_name_prefix="landscape") as pool:
            for start in range(0, len(todo), len(states)):
                points = todo[start : start + len(states)]
                futures = [pool.submit(evaluate, worker, row, column) for worker, (row, column) in zip(states, points)]
                values = read_back([future.result() for future in futures], samples)
                for (row, column), (loss, accuracy) in zip(points, values):
                    grid.record(row, column, loss, accuracy)
                advance(len(points))
    finally:
        torch.set_num_threads(threads)


# --------------------------------------------------------------------------- affine probe


def affine_probe_points(
    probe: nn.Linear,
    features: torch.Tensor,
    labels: torch.Tensor,
    probe_steps: list[tuple[torch.Tensor, torch.Tensor | None]],
    coefficients: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean CE and accuracy of a linear probe at many points at once: coefficients (P, K) -> (P,), (P,).

    logits(c) = z₀ + Σ_k c_k·z_k with z₀ = F·Wᵀ + b and z_k = F·δW_kᵀ + δb_k, in float64.
    """
    features = features.double()
    weight, bias = probe.weight.detach().double(), None if probe.bias is None else probe.bias.detach().double()
    base = F.linear(features, weight, bias)  # (N, C)
    slopes = torch.stack([F.linear(features, dw.double(), None if db is None else db.double()) for dw, db in probe_steps])  # (K, N, C)
    n, c = base.shape
    coefficients_t = torch.as_tensor(coefficients, dtype=torch.float64, device=features.device)
    losses, accuracies = [], []
    block = max(1, _AFFINE_BLOCK_ELEMENTS // (n * c))
    for start in range(0, coefficients_t.shape[0], block):
        chunk = coefficients_t[start : start + block]  # (P, K)
        logits = base + torch.einsum("pk,knc->pnc", chunk, slopes)
        log_z = torch.logsumexp(logits, dim=2)  # (P, N)
        true_logit = logits.gather(2, labels.view(1, n, 1).expand(chunk.shape[0], n, 1)).squeeze(2)
        losses.append((log_z - true_logit).mean(1))
        accuracies.append((logits.argmax(2) == labels.view(1, n)).double().mean(1))
    return torch.cat(losses).cpu().numpy(), torch.cat(accuracies).cpu().numpy()


def affine_probe_surface(
    probe: nn.Linear,
    features: torch.Tensor,
    labels: torch.Tensor,
    directions: list[Direction],
    parameters: list[torch.Tensor],
    grid: PartialGrid,
    progress: bool,
) -> Surface:
    """The remaining points of ``grid`` for a moving linear probe on fixed ``features`` (N, D)."""
    todo = grid.todo()
    position = {id(p): i for i, p in enumerate(parameters)}
    probe_steps = [
        (direction[position[id(probe.weight)]], None if probe.bias is None else direction[position[id(probe.bias)]])
        for direction in directions
    ]
    chunk = 1024  # points per call: bounds the time between progress updates and saves
    try:
        with progress_bar(len(todo), "loss surface", progress) as advance, torch.inference_mode():
            for start in range(0, len(todo), chunk):
                points = todo[start : start + chunk]
                c = np.array([grid.coefficients(row, column) for row, column in points], dtype=np.float64)
                losses, accuracies = affine_probe_points(probe, features, labels, probe_steps, c)
                for (row, column), loss, accuracy in zip(points, losses, accuracies):
                    grid.record(row, column, float(loss), float(accuracy))
                advance(len(points))
    finally:
        grid.save()
    return grid.surface()
