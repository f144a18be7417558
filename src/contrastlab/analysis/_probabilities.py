"""Input handling shared by the information-geometry analyses (progress, InPCA).

Probability arrays have shape ``(..., N, C)``: N samples, C classes, any number of leading
model axes. They may come as numpy arrays or torch tensors (any device, float32 or float64;
integer and boolean one-hot arrays are accepted too). Every check here raises ``ValueError``
with a message that names the argument, what is wrong, and where.

Two numerical conventions live here so that every analysis applies them the same way:

* Rows whose sum is within :data:`ROW_SUM_TOLERANCE` of 1 are accepted; the kernels then
  rescale each row to sum to exactly 1, so the rounding of a float32 softmax does not show up
  as a spurious distance (a model's distance to itself is then 0 up to float64 rounding).
* A per-sample overlap Σ_c √(p q) of exactly 0 (two distributions with disjoint support, e.g.
  P* and a model that gives the true class probability 0) would make the Bhattacharyya distance
  +inf. It is floored at :data:`OVERLAP_FLOOR` instead, i.e. that sample contributes
  −log(1e-300) ≈ 690.8 before averaging over N, and a warning is logged. An infinite entry
  would make the InPCA eigenproblem meaningless; a large finite one keeps the model far away.
"""

from __future__ import annotations

import logging
import math
import sys

import numpy as np

log = logging.getLogger(__name__)

ROW_SUM_TOLERANCE = 1e-4
OVERLAP_FLOOR = 1e-300

# Rows checked at once: bounds the temporary arrays of the checks to a few MB.
_CHECK_ROWS = 1 << 18


def _plain_numpy(x: object, name: str) -> np.ndarray:
    """``x`` as a numpy array of its own dtype; torch tensors are detached and moved to the CPU."""
    torch = sys.modules.get("torch")  # a tensor implies torch is imported; numpy input needs no import
    if torch is not None and isinstance(x, torch.Tensor):
        tensor = x.detach()
        if tensor.is_complex():
            raise ValueError(f"{name} must be real, got a complex tensor ({tensor.dtype})")
        if tensor.dtype in (torch.float16, torch.bfloat16):
            tensor = tensor.float()  # numpy has no bfloat16
        return tensor.cpu().numpy()
    return np.asarray(x)


def to_numpy(x: object, name: str) -> np.ndarray:
    """Return ``x`` (numpy array, torch tensor or nested sequence) as a float32 or float64 numpy array.

    float32 and float64 are kept as they are (no copy for numpy input); float16/bfloat16 become
    float32; integer and boolean arrays become float64. Anything else is a ValueError.
    """
    array = _plain_numpy(x, name)
    if array.dtype in (np.float32, np.float64):
        return array
    if array.dtype == np.float16:
        return array.astype(np.float32)
    if array.dtype.kind in "biu":
        return array.astype(np.float64)
    raise ValueError(f"{name} must hold real numbers, got dtype {array.dtype}")


def _first_index(bad_rows: np.ndarray, row_offset: int, leading_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Multi-index (leading axes..., sample) of the first True entry of a chunk of flattened rows."""
    flat = row_offset + int(np.flatnonzero(bad_rows)[0])
    return tuple(int(i) for i in np.unravel_index(flat, leading_shape))


def check_rows(rows: np.ndarray, name: str, row_offset: int = 0, leading_shape: tuple[int, ...] | None = None,
               tolerance: float = ROW_SUM_TOLERANCE) -> None:
    """Raise ValueError unless every row of ``rows`` (R, C) is a probability vector.

    ``row_offset`` and ``leading_shape`` (the shape of all axes but the class axis, flattened
    into R) only serve the error message, which names the first offending index.
    """
    shape = leading_shape if leading_shape is not None else (row_offset + rows.shape[0],)
    # Whole-block tests first (fast, contiguous); the per-row search runs only to name a failure.
    if not np.isfinite(rows).all():
        index = _first_index(~np.isfinite(rows).all(axis=-1), row_offset, shape)
        raise ValueError(f"{name} contains NaN or inf (first at index {index})")
    if rows.min() < 0:
        index = _first_index((rows < 0).any(axis=-1), row_offset, shape)
        raise ValueError(f"{name} has negative entries (first at index {index})")
    # A product with a ones vector sums each short row much faster than a reduction over the last axis.
    deviation = np.abs(rows @ np.ones(rows.shape[-1], dtype=rows.dtype) - 1.0)
    off = deviation > tolerance
    if off.any():
        index = _first_index(off, row_offset, shape)
        worst = float(deviation.max())
        raise ValueError(f"{name} has rows that do not sum to 1 (first at index {index}; "
                         f"largest deviation {worst:.3g} in this block, tolerance {tolerance:g})")


def check_probabilities(probs: np.ndarray, name: str, tolerance: float = ROW_SUM_TOLERANCE) -> None:
    """Check every row of ``probs`` (..., C) in blocks, so large arrays need little extra memory."""
    n_classes = probs.shape[-1]
    leading_shape = probs.shape[:-1]
    n_rows = math.prod(leading_shape)
    rows = probs.reshape(n_rows, n_classes)  # a view for contiguous input
    for start in range(0, n_rows, _CHECK_ROWS):
        check_rows(rows[start:start + _CHECK_ROWS], name, start, leading_shape, tolerance)


def as_probabilities(x: object, name: str, *, ndim: int | None = None, min_classes: int = 1,
                     validate: bool = True) -> np.ndarray:
    """Convert ``x`` with :func:`to_numpy`, check its shape (..., N, C) and, unless told not to, its rows.

    ``ndim`` demands an exact number of axes (e.g. 3 for a set of models (M, N, C)); otherwise
    at least 2 are needed. ``validate=False`` leaves the row checks to the caller (who can then
    run :func:`check_rows` block by block while it computes).
    """
    array = to_numpy(x, name)
    if ndim is not None and array.ndim != ndim:
        axes = {2: "(N, C)", 3: "(M, N, C)"}.get(ndim, f"{ndim} axes")
        raise ValueError(f"{name} must have shape {axes}, got shape {tuple(array.shape)}")
    if array.ndim < 2:
        raise ValueError(f"{name} must have shape (..., N, C) with at least 2 axes, got shape {tuple(array.shape)}")
    if array.shape[-2] < 1:
        raise ValueError(f"{name} has no samples (shape {tuple(array.shape)})")
    if array.shape[-1] < min_classes:
        raise ValueError(f"{name} needs at least {min_classes} classes, got shape {tuple(array.shape)}")
    if 0 in array.shape:
        raise ValueError(f"{name} is empty (shape {tuple(array.shape)})")
    if validate:
        check_probabilities(array, name)
    return array


def as_labels(labels: object, n_samples: int, n_classes: int, name: str = "labels") -> np.ndarray:
    """Return ``labels`` as an int64 array (N,), each in [0, C); ValueError otherwise."""
    array = _plain_numpy(labels, name)
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise ValueError(f"{name} must be integer class indices, got non-integer values")
    elif array.dtype.kind not in "iu":
        raise ValueError(f"{name} must be integer class indices, got dtype {array.dtype}")
    if array.shape != (n_samples,):
        raise ValueError(f"{name} must have shape ({n_samples},) to match the probabilities, got {tuple(array.shape)}")
    array = array.astype(np.int64)
    out_of_range = (array < 0) | (array >= n_classes)
    if out_of_range.any():
        first = int(np.flatnonzero(out_of_range)[0])
        raise ValueError(f"{name} must lie in [0, {n_classes}); {name}[{first}] = {int(array[first])}")
    return array


def neg_log_overlap(overlap: np.ndarray) -> np.ndarray:
    """−log of per-sample overlaps Σ_c √(p q) (any shape), clipped to [:data:`OVERLAP_FLOOR`, 1].

    Above 1 can only be rounding (Cauchy–Schwarz), so the result is never negative; for the
    floor see the module docstring.
    """
    n_floored = int(np.count_nonzero(overlap < OVERLAP_FLOOR))
    if n_floored:
        warn_floored(n_floored)
    return -np.log(np.clip(overlap, OVERLAP_FLOOR, 1.0))


def warn_floored(count: int) -> None:
    """Log that ``count`` overlaps were floored (see the module docstring)."""
    log.warning("%d per-sample overlaps were 0 (disjoint supports); floored at %g, i.e. a distance of %.1f per sample",
                count, OVERLAP_FLOOR, -math.log(OVERLAP_FLOOR))


def unit_sqrt(probs: np.ndarray) -> np.ndarray:
    """√p of each row, rescaled to sum-of-squares 1: a point on the unit sphere, float64, same shape."""
    probs = probs.astype(np.float64, copy=False)
    return np.sqrt(probs / probs.sum(axis=-1, keepdims=True))
