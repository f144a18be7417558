"""Loss-surface results: the :class:`Surface`, its files, and the resumable partial grid.

A surface is stored as one .npy of shape (2, ...) — values[0] = loss, values[1] = accuracy —
with a JSON sidecar holding the grid axes. While a grid is being evaluated,
:class:`PartialGrid` keeps unfinished points as NaN and saves itself every ``save_every``
seconds under a fingerprint of all inputs, so a restarted evaluation of the same inputs
continues where the last one stopped and one of other inputs is refused.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import RunDirectoryError
from ..utils.io import is_complete, load_array, save_array
from .checks import LandscapeInputError

log = logging.getLogger(__name__)


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


def grid_axis(values: Sequence[float] | np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    """A grid axis as a float64 array (K,), checked non-empty and finite."""
    array = np.asarray(values.detach().cpu() if torch.is_tensor(values) else values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0 or not np.isfinite(array).all():
        raise LandscapeInputError(f"{name} must be a non-empty 1-D sequence of finite numbers, got shape {array.shape}")
    return array


def fingerprint(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, directions: list[list[torch.Tensor]], xs: np.ndarray, ys: np.ndarray | None
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


class PartialGrid:
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

    def todo(self) -> list[tuple[int, int]]:
        """(row, column) of every unfinished point, row-major."""
        rows, columns = self.loss.shape
        return [(r, c) for r in range(rows) for c in range(columns) if not np.isfinite(self.loss[r, c])]

    def coefficients(self, row: int, column: int) -> list[float]:
        """The step sizes along the directions at a point: [x] for a curve, [x, y] for a grid."""
        return [self.xs[column]] if self.ys is None else [self.xs[column], self.ys[row]]

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
