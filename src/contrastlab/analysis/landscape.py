"""Loss landscapes along filter-normalized random directions (Li et al., NeurIPS 2018).

The surface of a trained classifier f_θ* is L(x, y) = mean_n CE(f_θ(x,y)(images_n), labels_n)
with θ(x, y) = θ* + x·δ + y·η, evaluated in eval mode (BatchNorm running statistics are read,
never updated). A direction is a list of tensors aligned with ``list(model.parameters())``.

Directions (:func:`random_directions`): Gaussian entries, then per parameter

- ``normalization="filter"``: each slice along dim 0 (one output filter of a conv, one row of a
  linear layer) is rescaled to the norm of the matching slice of the weight, so a unit step moves
  every filter by its own size and the picture does not depend on the scale invariance of
  BatchNorm networks. ``"layer"``: the whole tensor is rescaled to the weight's norm. ``"none"``:
  raw Gaussian entries.
- ``ignore="biasbn"``: parameters with ≤ 1 dim (biases, BN γ and β) get a zero direction.
  With ``ignore="none"`` they are normalized like the others; for ``"filter"`` each entry is its
  own slice, so it becomes sign(d_i)·|w_i| (Li et al.'s code uses the weight itself there).
- ``params``: only the selected parameters (see :func:`parameter_mask`) get a non-zero
  direction, e.g. ``params="1"`` for the probe of ``classifier(encoder, probe)``. The Gaussian
  draws do not depend on the selection, so the probe part of a whole-network direction equals
  the probe-only direction drawn with the same seed.

Evaluation (:func:`loss_surface`) picks the cheapest exact strategy:

- Only the tail of an ``nn.Sequential`` moves (e.g. the probe): the output of the fixed head of
  the sequence is computed once. If the moving tail is one ``nn.Linear``, the logits are affine
  in (x, y) — logits(x, y) = z₀ + x·z_δ + y·z_η — and the whole grid is a few tensor ops in
  float64, with no forward pass per point.
- Otherwise one forward pass over the samples per point, with the parameters updated in place
  (no copy of the model per point), convolution→BatchNorm pairs folded into one convolution per
  point (exact in eval mode), ``torch.inference_mode`` and channels_last; on CUDA also bf16
  autocast and large batches (``precision``/``batch_size`` override the automatic choice).
  On the CPU several points are evaluated at once by ``workers`` threads (default: one per
  intra-op thread), each on its own copy of the moving part of the model with single-threaded
  ops — cheaper than splitting every op across threads, whose synchronization dominates for the
  small convolutions of a CIFAR network, and far more robust on a busy machine.

Results may differ from a plain per-point evaluation by float rounding only. The model's
parameters are written back bit-identically afterwards, also when an exception (or Ctrl-C)
interrupts the grid. With ``resume_path`` finished points are saved every ``save_every``
seconds and on interruption; a restarted call with the same inputs continues where it stopped.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..errors import ContrastlabError, RunDirectoryError
from ..utils.io import is_complete, load_array, save_array
from ..utils.progress import progress_bar
from ..models import eval_mode

log = logging.getLogger(__name__)

ParameterSelector = str | Sequence[str] | Callable[[str], bool]
Direction = list[torch.Tensor]

NORMALIZATIONS = ("filter", "layer", "none")
IGNORES = ("biasbn", "none")
PRECISIONS = ("auto", "fp32", "bf16")

# Cache the fixed head of a Sequential only when its output for all samples fits in this many bytes.
FEATURE_CACHE_LIMIT_BYTES = 2 << 30
# Elements of the (points, samples, classes) logits block of the affine-probe path.
_AFFINE_BLOCK_ELEMENTS = 1 << 22


class LandscapeInputError(ContrastlabError, ValueError):
    """A direction, grid, batch or option that the landscape or sharpness analysis cannot use."""


# --------------------------------------------------------------------------- parameter selection


def parameter_mask(model: nn.Module, params: ParameterSelector = "all") -> list[bool]:
    """Which of ``list(model.parameters())`` are selected; one bool per parameter, same order.

    ``params``: ``"all"``; a submodule or parameter name such as ``"1"`` (equivalently ``"1."``,
    the probe of ``nn.Sequential(encoder, probe)``) or ``"0.stem"`` — a parameter is selected when
    its name equals it or starts with it followed by a dot; a sequence of such names (union); or a
    predicate on parameter names. Selecting nothing is an error that lists the names.
    """
    names = [name for name, _ in model.named_parameters()]
    if isinstance(params, str) and params == "all":
        mask = [True] * len(names)
    elif isinstance(params, str) or (isinstance(params, Sequence) and all(isinstance(p, str) for p in params)):
        prefixes = [params] if isinstance(params, str) else list(params)
        prefixes = [p.rstrip(".") for p in prefixes]
        mask = [any(n == p or n.startswith(p + ".") for p in prefixes) for n in names]
    elif callable(params):
        mask = [bool(params(n)) for n in names]
    else:
        raise LandscapeInputError(f"params must be 'all', a name prefix, a list of prefixes or a predicate on names, got {params!r}")
    if not any(mask):
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        raise LandscapeInputError(f"params={params!r} selects no parameter; names are: {shown}")
    return mask


# --------------------------------------------------------------------------- directions


def _rescale_slices(direction: torch.Tensor, weight: torch.Tensor, per_slice: bool) -> torch.Tensor:
    """Rescale ``direction`` to the norm of ``weight``: per slice along dim 0, or as a whole."""
    if per_slice and direction.ndim >= 1:
        d, w = direction.reshape(direction.shape[0], -1), weight.reshape(weight.shape[0], -1)
        d_norm = torch.linalg.vector_norm(d, dim=1, keepdim=True)
        w_norm = torch.linalg.vector_norm(w, dim=1, keepdim=True)
        # A zero weight slice gets a zero direction slice (as in the reference code's d/(|d|+ε)·|w|).
        return (d * (w_norm / d_norm.clamp_min(torch.finfo(d.dtype).tiny))).reshape(direction.shape)
    d_norm, w_norm = torch.linalg.vector_norm(direction), torch.linalg.vector_norm(weight)
    return direction * (w_norm / d_norm.clamp_min(torch.finfo(direction.dtype).tiny))


def random_directions(
    model: nn.Module,
    n: int = 2,
    seed: int = 0,
    ignore: str = "biasbn",
    normalization: str = "filter",
    params: ParameterSelector = "all",
) -> list[Direction]:
    """``n`` random directions, each a list of tensors aligned with ``list(model.parameters())``.

    Every tensor has its parameter's shape, dtype and device. Entries are drawn from N(0, 1) by
    a CPU generator seeded with ``seed`` (so the result does not depend on the device), then
    normalized as described in the module docstring. Parameters outside ``params`` get zeros.
    """
    if int(n) != n or n < 1:
        raise LandscapeInputError(f"n must be an integer >= 1, got {n}")
    if normalization not in NORMALIZATIONS:
        raise LandscapeInputError(f"normalization must be one of {', '.join(NORMALIZATIONS)}, got '{normalization}'")
    if ignore not in IGNORES:
        raise LandscapeInputError(f"ignore must be one of {', '.join(IGNORES)}, got '{ignore}'")
    mask = parameter_mask(model, params)
    weights = [p.detach() for p in model.parameters()]
    generator = torch.Generator().manual_seed(int(seed))

    directions = []
    for _ in range(int(n)):
        direction = []
        for weight, selected in zip(weights, mask):
            # Drawn for every parameter, selected or not, so a subset does not shift the stream.
            draw = torch.randn(weight.shape, generator=generator, dtype=torch.float32)
            draw = draw.to(device=weight.device, dtype=weight.dtype)
            if not selected or (weight.ndim <= 1 and ignore == "biasbn"):
                direction.append(torch.zeros_like(weight))
            elif normalization == "none":
                direction.append(draw)
            else:
                direction.append(_rescale_slices(draw, weight, per_slice=normalization == "filter"))
        directions.append(direction)
    return directions


def _check_directions(model: nn.Module, directions: Sequence[Sequence[torch.Tensor]]) -> list[Direction]:
    weights = list(model.parameters())
    if not 1 <= len(directions) <= 2:
        raise LandscapeInputError(f"loss_surface takes one or two directions, got {len(directions)}")
    checked = []
    for i, direction in enumerate(directions):
        direction = list(direction)
        if len(direction) != len(weights):
            raise LandscapeInputError(f"direction {i} has {len(direction)} tensors; the model has {len(weights)} parameters")
        for j, (d, w) in enumerate(zip(direction, weights)):
            if not torch.is_tensor(d) or d.shape != w.shape:
                raise LandscapeInputError(f"direction {i}, tensor {j}: shape {tuple(getattr(d, 'shape', ()))} does not match parameter shape {tuple(w.shape)}")
            if not bool(torch.isfinite(d).all()):
                raise LandscapeInputError(f"direction {i}, tensor {j} holds NaN or inf")
        checked.append([d.detach().to(device=w.device, dtype=w.dtype) for d, w in zip(direction, weights)])
    return checked


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Surface:
    """A loss landscape: ``loss`` and ``accuracy`` of shape (len(ys), len(xs)) — row = y, column = x.

    For a 1-D landscape ``ys`` is None and both arrays have shape (len(xs),). Unfinished points of
    a partial surface (a resume file) are NaN.
    """

    xs: np.ndarray
    ys: np.ndarray | None
    loss: np.ndarray
    accuracy: np.ndarray

    @property
    def is_1d(self) -> bool:
        return self.ys is None


def save_surface(path: str | Path, surface: Surface, meta: dict | None = None) -> Path:
    """Write ``surface`` as ``path`` (.npy of shape (2, ...): loss, accuracy) plus its JSON sidecar."""
    sidecar = {
        "kind": "loss_surface",
        "xs": [float(v) for v in surface.xs],
        "ys": None if surface.ys is None else [float(v) for v in surface.ys],
        **(meta or {}),
    }
    return save_array(path, np.stack([surface.loss, surface.accuracy]), sidecar)


def load_surface(path: str | Path) -> tuple[Surface, dict]:
    """Read a surface written by :func:`save_surface`; returns it with its sidecar."""
    values, meta = load_array(path)
    if meta.get("kind") != "loss_surface" or values.shape[0] != 2:
        raise LandscapeInputError(f"{path} does not hold a loss surface")
    ys = None if meta["ys"] is None else np.asarray(meta["ys"], dtype=np.float64)
    return Surface(np.asarray(meta["xs"], dtype=np.float64), ys, values[0], values[1]), meta


# --------------------------------------------------------------------------- evaluation pieces


def _first_parameter(model: nn.Module) -> torch.Tensor:
    try:
        return next(model.parameters())
    except StopIteration:
        raise LandscapeInputError("the model has no parameters") from None


def _check_batch(images: torch.Tensor, labels: torch.Tensor) -> None:
    if not torch.is_tensor(images) or not images.is_floating_point() or images.ndim < 2 or images.shape[0] == 0:
        raise LandscapeInputError(f"images must be a floating-point tensor of shape (N, ...) with N >= 1, got {getattr(images, 'shape', type(images))}")
    if not torch.is_tensor(labels) or labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.shape != (images.shape[0],):
        raise LandscapeInputError(f"labels must be an integer tensor of shape ({images.shape[0]},), got {getattr(labels, 'dtype', type(labels))} {tuple(getattr(labels, 'shape', ()))}")


def _check_label_range(labels: torch.Tensor, n_classes: int) -> None:
    if bool((labels < 0).any()) or bool((labels >= n_classes).any()):
        raise LandscapeInputError(f"labels must lie in [0, {n_classes}) for a model with {n_classes} outputs")


def _grid_axis(values: Sequence[float] | np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    array = np.asarray(values.detach().cpu() if torch.is_tensor(values) else values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0 or not np.isfinite(array).all():
        raise LandscapeInputError(f"{name} must be a non-empty 1-D sequence of finite numbers, got shape {array.shape}")
    return array


def _fingerprint(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, directions: list[Direction], xs: np.ndarray, ys: np.ndarray | None
) -> str:
    """A hash of everything the surface depends on: parameters, buffers, samples, directions, grid."""
    digest = hashlib.blake2b(digest_size=16)
    tensors = [*model.parameters(), *model.buffers(), images, labels, *(d for direction in directions for d in direction)]
    for tensor in tensors:
        tensor = tensor.detach()
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.float()
        digest.update(f"{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.cpu().contiguous().numpy().tobytes())
    digest.update(xs.tobytes())
    digest.update(b"-" if ys is None else ys.tobytes())
    return digest.hexdigest()


def _moving_indices(directions: list[Direction]) -> list[int]:
    """Indices of the parameters that some direction moves."""
    n = len(directions[0])
    return [i for i in range(n) if any(bool(direction[i].any()) for direction in directions)]


def _split_sequential(model: nn.Module, moving_params: set[int]) -> int:
    """For an ``nn.Sequential``: the index of the first child that holds a moving parameter, else 0."""
    if not isinstance(model, nn.Sequential):
        return 0
    moving = moving_params
    for index, child in enumerate(model):
        if any(id(p) in moving for p in child.parameters()):
            return index
    return len(model)


def fold_batchnorm(module: nn.Module) -> tuple[nn.Module, Callable[[], None]]:
    """A view of ``module`` in which each conv→BatchNorm pair is one convolution (eval mode).

    Returns ``(folded, refresh)``: ``folded`` shares every other submodule, parameter and buffer
    with ``module``; its folded convolutions are new modules whose weights ``refresh()``
    recomputes from the current conv weight and BN γ, β, running mean and variance:
    W' = W·s, b' = (b − μ)·s + β with s = γ/√(σ² + ε) per output channel. Call it after every
    change of ``module``'s parameters. A module that torch.fx cannot trace comes back unchanged
    with a no-op ``refresh``.
    """
    try:
        traced = fx.symbolic_trace(module)
    except Exception as error:  # noqa: BLE001 - any tracing failure means "evaluate unfolded"
        log.debug("no conv-BN folding: %s cannot be traced (%s)", type(module).__name__, error)
        return module, lambda: None
    modules = dict(traced.named_modules())
    pairs: list[tuple[nn.Module, nn.Module, nn.Module]] = []
    conv_types = {1: (nn.Conv1d, nn.BatchNorm1d), 2: (nn.Conv2d, nn.BatchNorm2d), 3: (nn.Conv3d, nn.BatchNorm3d)}
    for node in list(traced.graph.nodes):
        source = node.args[0] if node.op == "call_module" and len(node.args) == 1 and not node.kwargs else None
        if not isinstance(source, fx.Node) or source.op != "call_module" or len(source.users) != 1:
            continue
        bn, conv = modules.get(node.target), modules.get(source.target)
        matches = any(type(conv) is c and type(bn) is b for c, b in conv_types.values())
        if not matches or bn.running_mean is None or bn.running_var is None:
            continue
        folded = copy.deepcopy(conv)
        if folded.bias is None:
            folded.bias = nn.Parameter(torch.zeros(conv.out_channels, dtype=conv.weight.dtype, device=conv.weight.device))
        folded.requires_grad_(False)
        name = f"_folded_conv_{len(pairs)}"
        traced.add_submodule(name, folded)
        with traced.graph.inserting_after(node):
            replacement = traced.graph.call_module(name, source.args, source.kwargs)
        node.replace_all_uses_with(replacement)
        traced.graph.erase_node(node)
        traced.graph.erase_node(source)
        pairs.append((conv, bn, folded))
    if not pairs:
        return module, lambda: None
    traced.graph.lint()
    traced.recompile()
    traced.delete_all_unused_submodules()

    def refresh() -> None:
        with torch.no_grad():
            for conv, bn, folded in pairs:
                scale = torch.rsqrt(bn.running_var + bn.eps)
                if bn.weight is not None:
                    scale = scale * bn.weight
                bias = -bn.running_mean if conv.bias is None else conv.bias - bn.running_mean
                bias = bias * scale + (bn.bias if bn.bias is not None else 0)
                folded.weight.copy_(conv.weight * scale.reshape(-1, *([1] * (conv.weight.ndim - 1))))
                folded.bias.copy_(bias)

    refresh()
    log.debug("folded %d conv-BN pairs", len(pairs))
    return traced, refresh


def _to_channels_last(module: nn.Module) -> None:
    """Store the folded (module-owned) 4-D conv weights channels_last; shared weights stay as they are."""
    for name, child in module.named_children():
        if name.startswith("_folded_conv_") and child.weight.ndim == 4:
            child.weight.data = child.weight.data.contiguous(memory_format=torch.channels_last)


def _sum_loss_and_correct(
    module: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int, autocast_dtype: torch.dtype | None
) -> tuple[float, int]:
    """Σ_n CE (float64) and the number of correct argmax predictions of ``module`` on ``inputs``."""
    total, correct = torch.zeros((), dtype=torch.float64, device=inputs.device), torch.zeros((), dtype=torch.int64, device=inputs.device)
    for start in range(0, inputs.shape[0], batch_size):
        x, y = inputs[start : start + batch_size], labels[start : start + batch_size]
        if autocast_dtype is not None:
            with torch.autocast(inputs.device.type, dtype=autocast_dtype):
                logits = module(x)
        else:
            logits = module(x)
        logits = logits.double()
        total += F.cross_entropy(logits, y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
    return total.item(), int(correct.item())


def _compute_inputs(module: nn.Module, images: torch.Tensor, batch_size: int, device: torch.device, autocast_dtype) -> torch.Tensor | None:
    """``module`` applied to all images (N, ...) in batches, or None if the result would be too large."""
    outputs, total_bytes = [], 0
    for start in range(0, images.shape[0], batch_size):
        x = images[start : start + batch_size].to(device)
        if autocast_dtype is not None:
            with torch.autocast(device.type, dtype=autocast_dtype):
                out = module(x)
        else:
            out = module(x)
        out = out.float() if out.dtype in (torch.float16, torch.bfloat16) else out
        outputs.append(out)
        total_bytes += out.numel() * out.element_size()
        if total_bytes * images.shape[0] / min(images.shape[0], start + batch_size) > FEATURE_CACHE_LIMIT_BYTES:
            return None
    return torch.cat(outputs)


class _PartialGrid:
    """Loss and accuracy (Y, X) with NaN at unfinished points, saved to ``path`` now and then."""

    def __init__(self, path: Path | None, xs: np.ndarray, ys: np.ndarray | None, fingerprint: str | None, save_every: float):
        self.path, self.xs, self.ys, self.fingerprint, self.save_every = path, xs, ys, fingerprint, save_every
        shape = (1 if ys is None else len(ys), len(xs))
        self.loss, self.accuracy = np.full(shape, np.nan), np.full(shape, np.nan)
        self.unsaved, self.last_save = 0, time.monotonic()
        if path is not None and is_complete(path):
            surface, meta = load_surface(path)
            if meta.get("fingerprint") != fingerprint:
                raise RunDirectoryError(f"{path} holds a loss surface of other inputs (model, samples, directions or grid); delete it to start over")
            self.loss[:], self.accuracy[:] = surface.loss.reshape(shape), surface.accuracy.reshape(shape)
            log.info("resuming %s: %d of %d points done", path, self.finished, self.loss.size)

    @property
    def finished(self) -> int:
        return int(np.isfinite(self.loss).sum())

    def record(self, row: int, column: int, loss: float, accuracy: float) -> None:
        self.loss[row, column], self.accuracy[row, column] = loss, accuracy
        self.unsaved += 1
        if self.path is not None and time.monotonic() - self.last_save >= self.save_every:
            self.save()

    def save(self) -> None:
        if self.path is None or self.unsaved == 0:
            return
        surface = self.surface()
        save_surface(self.path, surface, {"fingerprint": self.fingerprint, "finished": self.finished, "points": int(self.loss.size)})
        self.unsaved, self.last_save = 0, time.monotonic()

    def surface(self) -> Surface:
        if self.ys is None:
            return Surface(self.xs, None, self.loss[0].copy(), self.accuracy[0].copy())
        return Surface(self.xs, self.ys, self.loss.copy(), self.accuracy.copy())


@torch.no_grad()
def _set_point(parameters: list[torch.Tensor], origins: list[torch.Tensor], steps: list[list[torch.Tensor]], coefficients: Sequence[float]) -> None:
    """parameters[i] ← origins[i] + Σ_k coefficients[k]·steps[k][i], in place."""
    for i, (parameter, origin) in enumerate(zip(parameters, origins)):
        parameter.copy_(origin)
        for coefficient, step in zip(coefficients, steps):
            if coefficient != 0:
                parameter.add_(step[i], alpha=float(coefficient))


def _affine_probe_points(
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


# --------------------------------------------------------------------------- the surface


def loss_surface(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    directions: Sequence[Sequence[torch.Tensor]],
    xs: Sequence[float] | np.ndarray | torch.Tensor,
    ys: Sequence[float] | np.ndarray | torch.Tensor | None = None,
    batch_size: int | None = None,
    *,
    resume_path: str | Path | None = None,
    save_every: float = 60.0,
    precision: str = "auto",
    channels_last: bool = True,
    fold_bn: bool = True,
    reuse_fixed_head: bool = True,
    workers: int | None = None,
    progress: bool = False,
) -> Surface:
    """Loss and accuracy of ``model`` at θ* + x·δ + y·η for every (x, y) of the grid xs × ys.

    ``images`` (N, ...) and ``labels`` (N,) are all samples (moved to the model's device in
    batches of ``batch_size``; None: 64 on the CPU, where small batches stay in cache and run
    faster, 256 elsewhere); the loss is the mean cross-entropy over them. Two directions and
    ``ys`` give arrays of shape (len(ys), len(xs)); one direction and ``ys=None`` give (len(xs),).

    Options: ``resume_path`` (a .npy path; see module docstring) and ``save_every`` (seconds);
    ``precision`` "auto" (bf16 autocast on CUDA, fp32 elsewhere), "fp32" or "bf16";
    ``channels_last`` for the folded convolutions and the inputs (faster with oneDNN and cuDNN);
    ``workers``: points evaluated concurrently (None: ``torch.get_num_threads()`` on the CPU,
    1 on other devices); with more than one, the model itself is never written to and torch's
    intra-op thread count is set to 1 for the duration of the grid (process-wide, restored after).
    ``fold_bn=False`` and ``reuse_fixed_head=False`` switch the speed-ups off (for comparison).
    """
    _check_batch(images, labels)
    directions = _check_directions(model, directions)
    xs = _grid_axis(xs, "xs")
    if ys is None and len(directions) != 1:
        raise LandscapeInputError("two directions need ys (a 2-D grid); pass one direction for a 1-D curve")
    if ys is not None:
        if len(directions) != 2:
            raise LandscapeInputError("a 2-D grid (ys given) needs two directions")
        ys = _grid_axis(ys, "ys")
    if batch_size is not None and (int(batch_size) != batch_size or batch_size < 1):
        raise LandscapeInputError(f"batch_size must be an integer >= 1, got {batch_size}")
    if precision not in PRECISIONS:
        raise LandscapeInputError(f"precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")

    device = _first_parameter(model).device
    autocast_dtype = torch.bfloat16 if precision == "bf16" or (precision == "auto" and device.type == "cuda") else None
    use_channels_last = bool(channels_last)
    batch_size = int(batch_size) if batch_size is not None else (64 if device.type == "cpu" else 256)

    resume_path = None if resume_path is None else Path(resume_path)
    fingerprint = None if resume_path is None else _fingerprint(model, images, labels, directions, xs, ys)
    grid = _PartialGrid(resume_path, xs, ys, fingerprint, float(save_every))
    todo = [(r, c) for r in range(grid.loss.shape[0]) for c in range(grid.loss.shape[1]) if not np.isfinite(grid.loss[r, c])]
    if not todo:
        return grid.surface()

    def coefficients(row: int, column: int) -> list[float]:
        return [xs[column]] if ys is None else [xs[column], ys[row]]

    parameters = list(model.parameters())
    moving = _moving_indices(directions)
    moving_ids = {id(parameters[i]) for i in moving}
    labels_device = labels.to(device)

    with eval_mode(model), torch.inference_mode():
        split = _split_sequential(model, moving_ids) if reuse_fixed_head else 0
        inputs = None
        if split > 0:
            inputs = _compute_inputs(model[:split], images, batch_size, device, autocast_dtype)
            if inputs is None:
                log.debug("output of the fixed head too large to cache; evaluating the whole model per point")
                split = 0
        evaluated = model[split:] if split > 0 else model
        if inputs is None:
            inputs = images.to(device)
        n_classes = evaluated(inputs[:1]).shape[1]
    _check_label_range(labels_device, n_classes)

    if split > 0 and split == len(model) - 1 and type(model[split]) is nn.Linear:
        return _affine_probe_surface(model[split], inputs, labels_device, directions, parameters, grid, todo, coefficients, progress)

    origins = [parameters[i].detach().clone() for i in moving]
    steps = [[direction[i] for i in moving] for direction in directions]
    workers = min(_resolve_workers(workers, device), len(todo))
    with eval_mode(model):
        # One worker moves the model itself; several each move a private copy of the evaluated part.
        owned = [evaluated] if workers == 1 else [copy.deepcopy(evaluated) for _ in range(workers)]
        position = {id(p): i for i, p in enumerate(evaluated.parameters())}
        states = []
        for module in owned:
            own_parameters = list(module.parameters())
            moved = [own_parameters[position[id(parameters[i])]] for i in moving]
            folded, refresh = fold_batchnorm(module) if fold_bn else (module, lambda: None)
            if use_channels_last:
                _to_channels_last(folded)
            states.append(_Worker(folded, refresh, moved))
        if use_channels_last and inputs.ndim == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)

        def evaluate(worker: _Worker, row: int, column: int) -> tuple[float, float]:
            _set_point(worker.parameters, origins, steps, coefficients(row, column))
            worker.refresh()
            with torch.inference_mode():
                total, correct = _sum_loss_and_correct(worker.module, inputs, labels_device, batch_size, autocast_dtype)
            return total / inputs.shape[0], correct / inputs.shape[0]

        try:
            with progress_bar(len(todo), "loss surface", progress) as advance:
                if workers == 1:
                    for row, column in todo:
                        grid.record(row, column, *evaluate(states[0], row, column))
                        advance(1)
                else:
                    _evaluate_in_parallel(evaluate, states, todo, grid, advance)
        finally:
            if workers == 1:
                _set_point(states[0].parameters, origins, steps, [0.0] * len(steps))  # θ*, bit for bit
            grid.save()
    return grid.surface()


@dataclass
class _Worker:
    """A module to evaluate (maybe a folded view), its refresh after a move, and its moving parameters."""

    module: nn.Module
    refresh: Callable[[], None]
    parameters: list[torch.Tensor]


def _resolve_workers(workers: int | None, device: torch.device) -> int:
    """None: one single-threaded worker per intra-op thread on the CPU, one worker elsewhere."""
    if workers is None:
        return torch.get_num_threads() if device.type == "cpu" else 1
    if int(workers) != workers or workers < 1:
        raise LandscapeInputError(f"workers must be an integer >= 1, got {workers}")
    return int(workers)


def _evaluate_in_parallel(
    evaluate: Callable[[_Worker, int, int], tuple[float, float]],
    states: list[_Worker],
    todo: list[tuple[int, int]],
    grid: _PartialGrid,
    advance: Callable[..., None],
) -> None:
    """Evaluate ``len(states)`` points at a time, one per worker thread, each op single-threaded.

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
                for (row, column), future in zip(points, futures):
                    grid.record(row, column, *future.result())
                    advance(1)
    finally:
        torch.set_num_threads(threads)


def _affine_probe_surface(
    probe: nn.Linear,
    features: torch.Tensor,
    labels: torch.Tensor,
    directions: list[Direction],
    parameters: list[torch.Tensor],
    grid: _PartialGrid,
    todo: list[tuple[int, int]],
    coefficients: Callable[[int, int], list[float]],
    progress: bool,
) -> Surface:
    """The remaining points of ``grid`` for a moving linear probe on fixed ``features`` (N, D)."""
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
                c = np.array([coefficients(row, column) for row, column in points], dtype=np.float64)
                losses, accuracies = _affine_probe_points(probe, features, labels, probe_steps, c)
                for (row, column), loss, accuracy in zip(points, losses, accuracies):
                    grid.record(row, column, float(loss), float(accuracy))
                advance(len(points))
    finally:
        grid.save()
    return grid.surface()
