"""Directions in parameter space: filter-normalized random directions and filter scales.

A direction is a list of tensors aligned with ``list(model.parameters())``.

:func:`random_directions` (Li et al., NeurIPS 2018): Gaussian entries, then per parameter

- ``normalization="filter"`` (default): each slice along dim 0 (one output filter of a conv,
  one row of a linear layer) is rescaled to the norm of the matching slice of the weight, so a
  unit step moves every filter by its own size and the picture does not depend on the scale
  invariance of BatchNorm networks. ``"layer"``: the whole tensor is rescaled to the weight's
  norm. ``"none"``: raw Gaussian entries.
- ``ignore="biasbn"`` (default): parameters with ≤ 1 dim (biases, BN γ and β) get a zero
  direction. With ``ignore="none"`` they get a random direction too, normalized like the
  others; for ``"filter"`` each entry of a 1-D parameter is its own slice, so it becomes
  sign(d_i)·|w_i| (Li et al.'s code uses the weight itself there).
- ``params``: only the selected parameters (see :func:`~.checks.parameter_mask`) get a
  non-zero direction. The Gaussian draws do not depend on the selection, so the probe part of a
  whole-network direction equals the probe-only direction drawn with the same seed.

:func:`filter_scales` is the diagonal S of the same filter normalization, used by the
scale-invariant sharpness (H_f = S H S).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .checks import LandscapeInputError, ParameterSelector, check_choice, check_positive_int, parameter_mask

Direction = list[torch.Tensor]

NORMALIZATIONS = ("filter", "layer", "none")
IGNORES = ("biasbn", "none")


def _slice_norms(tensor: torch.Tensor) -> torch.Tensor:
    """Norm of each slice along dim 0, shape (len, 1, ..., 1) so it broadcasts over the slice."""
    flat = tensor.reshape(tensor.shape[0], -1)
    return torch.linalg.vector_norm(flat, dim=1).reshape(-1, *([1] * (tensor.ndim - 1)))


def _rescale(direction: torch.Tensor, weight: torch.Tensor, per_slice: bool) -> torch.Tensor:
    """Rescale ``direction`` to the norm of ``weight``: per slice along dim 0, or as a whole."""
    tiny = torch.finfo(direction.dtype).tiny
    if per_slice and direction.ndim >= 1:
        # A zero weight slice gets a zero direction slice (as in the reference code's d/(|d|+ε)·|w|).
        return direction * (_slice_norms(weight) / _slice_norms(direction).clamp_min(tiny))
    return direction * (torch.linalg.vector_norm(weight) / torch.linalg.vector_norm(direction).clamp_min(tiny))


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
    normalized as described in the module docstring (``normalization`` "filter" | "layer" |
    "none"; ``ignore`` "biasbn" | "none"). Parameters outside ``params`` get zeros.
    """
    n = check_positive_int(n, "n", error=LandscapeInputError)
    check_choice(normalization, "normalization", NORMALIZATIONS, error=LandscapeInputError)
    check_choice(ignore, "ignore", IGNORES, error=LandscapeInputError)
    mask = parameter_mask(model, params)
    weights = [p.detach() for p in model.parameters()]
    generator = torch.Generator().manual_seed(int(seed))

    directions = []
    for _ in range(n):
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
                direction.append(_rescale(draw, weight, per_slice=normalization == "filter"))
        directions.append(direction)
    return directions


def check_directions(model: nn.Module, directions: Sequence[Sequence[torch.Tensor]]) -> list[Direction]:
    """One or two directions matching the model's parameters, detached, on their device and dtype."""
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


def moving_indices(directions: list[Direction]) -> list[int]:
    """Indices of the parameters that some direction moves."""
    return [i for i in range(len(directions[0])) if any(bool(direction[i].any()) for direction in directions)]


def filter_scales(parameters: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """S of filter-normalized coordinates, one tensor per parameter (its shape, no grad).

    For a parameter with ≥ 2 dims every element gets the norm of its filter (its slice along
    dim 0); parameters with ≤ 1 dim (biases, BN γ and β) get 0. A step u in these coordinates is
    the parameter step S·u, so the Hessian there is S H S (Dinh et al., ICML 2017: invariant to
    rescaling a filter that a following BatchNorm undoes).
    """
    scales = []
    for p in parameters:
        p = p.detach()
        scales.append(_slice_norms(p).expand_as(p).clone() if p.ndim >= 2 else torch.zeros_like(p))
    return scales
