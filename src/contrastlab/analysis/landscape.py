"""Loss landscapes along filter-normalized random directions (Li et al., NeurIPS 2018).

The surface of a trained classifier f_θ* is L(x, y) = mean_n CE(f_θ(x,y)(images_n), labels_n)
with θ(x, y) = θ* + x·δ + y·η, evaluated in eval mode (BatchNorm running statistics are read,
never updated). A direction is a list of tensors aligned with ``list(model.parameters())``.

The pieces live by concern; this module is the entry point, and each name is imported from
the module that defines it:

- :mod:`.directions`: :func:`random_directions` (normalization "filter" | "layer" | "none",
  ignore "biasbn" | "none", seed, parameter subset).
- :mod:`.checks`: :func:`parameter_mask`, the batch and option checks shared by all analyses.
- :mod:`.surface_grid`: :class:`Surface`, :func:`save_surface`, :func:`load_surface` and the
  resumable partial grid.
- :mod:`.surface_eval`: the evaluation strategies (per point with worker threads; affine probe).
- :mod:`contrastlab.models.batchnorm`: :func:`fold_batchnorm`.

:func:`loss_surface` picks the cheapest exact strategy:

- Only the tail of an ``nn.Sequential`` moves (e.g. the probe): the output of the fixed head of
  the sequence is computed once. If the moving tail is one ``nn.Linear``, the logits are affine
  in (x, y) and the whole grid is a few tensor ops in float64, with no forward pass per point.
- Otherwise one forward pass over the samples per point, parameters updated in place,
  conv→BN pairs folded, ``torch.inference_mode`` and channels_last; on the CPU several points
  at once on ``workers`` threads (default: one per intra-op thread).

Results may differ from a plain per-point evaluation by float rounding only. The model's
parameters are written back bit-identically afterwards, also when an exception (or Ctrl-C)
interrupts the grid. With ``resume_path`` finished points are saved every ``save_every``
seconds and on interruption; a restarted call with the same inputs continues where it stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..models import eval_mode
from .checks import (
    LandscapeInputError,
    check_batch,
    check_label_range,
    check_positive_int,
    check_precision,
    model_device,
)
from .directions import check_directions, moving_indices
from .surface_eval import (
    GPU_BATCH_SIZE,
    Moves,
    PointOptions,
    affine_probe_surface,
    compute_inputs,
    cpu_batch_size,
    per_point_surface,
    resolve_workers,
    split_sequential,
)
from .surface_grid import PartialGrid, Surface, fingerprint, grid_axis

__all__ = ["SurfaceSettings", "loss_surface"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SurfaceSettings:
    """How :func:`loss_surface` evaluates its grid.

    ``batch_size``: samples per forward batch (None: on the CPU as many as keep the model's
    largest activation within ~2 MiB of cache (:func:`cpu_batch_size`, 32–256), 1024 on a GPU,
    which large batches fill). ``precision`` "fp32" or "bf16" (bf16 autocast on the model's
    device type; losses are accumulated in float64 either way). ``resume_path`` (a .npy path;
    see the module docstring) and ``save_every`` (seconds). ``channels_last`` for the folded
    convolutions and the inputs (faster with oneDNN and cuDNN). ``workers``: points evaluated
    concurrently (None: ``torch.get_num_threads()`` on the CPU, 1 on other devices); with more
    than one, the model itself is never written to and torch's intra-op thread count is set to
    1 for the duration of the grid (process-wide, restored after). ``fold_bn=False`` and
    ``reuse_fixed_head=False`` switch the speed-ups off (for comparison).
    """

    batch_size: int | None = None
    precision: str = "fp32"
    resume_path: str | Path | None = None
    save_every: float = 60.0
    channels_last: bool = True
    fold_bn: bool = True
    reuse_fixed_head: bool = True
    workers: int | None = None
    progress: bool = False


Axis = Sequence[float] | np.ndarray | torch.Tensor


def _check_grid(directions: list, xs: Axis, ys: Axis | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The grid axes as float64 arrays, after checking they suit the number of directions."""
    xs = grid_axis(xs, "xs")
    if ys is None and len(directions) != 1:
        raise LandscapeInputError("two directions need ys (a 2-D grid); pass one direction for a 1-D curve")
    if ys is not None:
        if len(directions) != 2:
            raise LandscapeInputError("a 2-D grid (ys given) needs two directions")
        ys = grid_axis(ys, "ys")
    return xs, ys


def _evaluated_part(model: nn.Module, images: torch.Tensor, moving: set[int], batch_size: int | None, settings: SurfaceSettings,
                    device: torch.device) -> tuple[int, torch.Tensor, int]:
    """(split, inputs, batch size): the fixed head ``model[:split]`` applied once when it fits, else split 0 and the images."""
    with eval_mode(model), torch.inference_mode():
        if batch_size is None:  # measured in eval mode on the CPU; a GPU fills with large batches
            batch_size = cpu_batch_size(model, images[:1].to(device)) if device.type == "cpu" else GPU_BATCH_SIZE
        split = split_sequential(model, moving) if settings.reuse_fixed_head else 0
        inputs = None
        if split > 0:
            inputs = compute_inputs(model[:split], images, batch_size, device, settings.precision)
            if inputs is None:
                log.debug("output of the fixed head too large to cache; evaluating the whole model per point")
                split = 0
        if inputs is None:
            inputs = images.to(device)
    return split, inputs, batch_size


def loss_surface(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, directions: Sequence[Sequence[torch.Tensor]],
                 xs: Axis, ys: Axis | None = None, settings: SurfaceSettings = SurfaceSettings()) -> Surface:
    """Loss and accuracy of ``model`` at θ* + x·δ + y·η for every (x, y) of the grid xs × ys.

    ``images`` (N, ...) and ``labels`` (N,) are all samples, moved to the model's device (its
    first parameter's) in batches; the loss is the mean cross-entropy over them. Two directions
    and ``ys`` give arrays of shape (len(ys), len(xs)); one direction and ``ys=None`` give
    (len(xs),). How the grid is evaluated: :class:`SurfaceSettings`.
    """
    check_batch(images, labels, error=LandscapeInputError)
    directions = check_directions(model, directions)
    xs, ys = _check_grid(directions, xs, ys)
    batch_size = settings.batch_size
    if batch_size is not None:
        batch_size = check_positive_int(batch_size, "batch_size", error=LandscapeInputError)
    check_precision(settings.precision, error=LandscapeInputError)
    device = model_device(model, error=LandscapeInputError)
    resume_path = None if settings.resume_path is None else Path(settings.resume_path)
    key = None if resume_path is None else fingerprint(model, images, labels, directions, xs, ys)
    grid = PartialGrid(resume_path, xs, ys, key, float(settings.save_every))
    if not grid.todo():
        return grid.surface()

    parameters = list(model.parameters())
    moving = moving_indices(directions)
    labels_device = labels.to(device)
    split, inputs, batch_size = _evaluated_part(model, images, {id(parameters[i]) for i in moving}, batch_size, settings, device)
    evaluated = model[split:] if split > 0 else model
    with eval_mode(model), torch.inference_mode():
        n_classes = evaluated(inputs[:1]).shape[1]
    check_label_range(labels_device, n_classes, error=LandscapeInputError)

    if split > 0 and split == len(model) - 1 and type(model[split]) is nn.Linear:
        return affine_probe_surface(model[split], inputs, labels_device, directions, parameters, grid, settings.progress)
    options = PointOptions(batch_size, settings.precision, resolve_workers(settings.workers, device), settings.fold_bn,
                           bool(settings.channels_last), settings.progress)
    moves = Moves([parameters[i] for i in moving], [[d[i] for i in moving] for d in directions])
    with eval_mode(model):
        return per_point_surface(evaluated, inputs, labels_device, moves, grid, options)
