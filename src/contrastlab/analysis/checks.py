"""Input checks and small shared pieces of every analysis (landscape, sharpness, attacks).

Each check raises the caller's own error class (``error=``), so a user of the attacks sees an
:class:`AttackInputError` and a user of the landscape a :class:`LandscapeInputError`; both are
:class:`AnalysisInputError`, hence ``ValueError``.

- :func:`check_batch`, :func:`check_label_range`, :func:`check_positive_int`: samples and options.
- :func:`parameter_mask`: which parameters a ``params`` selector picks.
- :func:`model_device`: where a kernel computes (the model's first parameter).
- :func:`check_precision`: the explicit ``precision`` argument of every kernel.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from .. import precision as precision_module
from ..errors import ContrastlabError
from ..precision import PRECISIONS

ParameterSelector = str | Sequence[str] | Callable[[str], bool]

# Selector keywords; any other string is a parameter or submodule name prefix.
SELECTOR_KEYWORDS = ("all", "probe")


class AnalysisInputError(ContrastlabError, ValueError):
    """A batch, label vector, parameter selector or option that an analysis cannot use."""


class LandscapeInputError(AnalysisInputError):
    """A direction, grid, batch or option that the landscape analysis cannot use."""


class SharpnessInputError(AnalysisInputError):
    """A batch, parameter selection, vector or option that the Hessian (sharpness) analysis cannot use."""


# --------------------------------------------------------------------------- samples and options


def check_batch(images: torch.Tensor, labels: torch.Tensor, *, pixels: bool = False, error: type[Exception] = AnalysisInputError) -> None:
    """Images: floating (N, ...) with N >= 1 (values in [0, 1] when ``pixels``); labels: integer (N,)."""
    if not torch.is_tensor(images) or not images.is_floating_point():
        what = "pixels in [0, 1]" if pixels else "values"
        raise error(f"images must be a floating-point tensor of {what}, got {getattr(images, 'dtype', type(images))}")
    if images.ndim < 2 or images.shape[0] == 0:
        raise error(f"images must have shape (N, ...) with N >= 1, got {tuple(images.shape)}")
    if not torch.is_tensor(labels) or labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
        raise error(f"labels must be an integer tensor of class indices, got {getattr(labels, 'dtype', type(labels))}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise error(f"labels must have shape ({images.shape[0]},) to match images {tuple(images.shape)}, got {tuple(labels.shape)}")
    if pixels:
        low, high = images.detach().aminmax()
        if not (bool(low >= 0) and bool(high <= 1)):  # also false for NaN
            raise error(f"images must hold pixels in [0, 1], got values in [{low.item():.4g}, {high.item():.4g}]")


def check_label_range(labels: torch.Tensor, n_classes: int, *, error: type[Exception] = AnalysisInputError) -> None:
    """Labels in [0, n_classes): cross_entropy would fail with a device-side assert on CUDA instead."""
    if bool((labels < 0).any()) or bool((labels >= n_classes).any()):
        raise error(f"labels must lie in [0, {n_classes}) for a model with {n_classes} outputs, got [{int(labels.min())}, {int(labels.max())}]")


def check_positive_int(value, name: str, *, error: type[Exception] = AnalysisInputError) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < 1:
        raise error(f"{name} must be an integer >= 1, got {value}")
    return int(value)


def check_choice(value, name: str, choices: Sequence[str], *, error: type[Exception] = AnalysisInputError) -> str:
    if value not in choices:
        raise error(f"{name} must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")
    return value


# --------------------------------------------------------------------------- device and precision


def model_device(model: nn.Module, default: torch.device | None = None, *, error: type[Exception] = AnalysisInputError) -> torch.device:
    """The device of the model's first parameter (else first buffer, else ``default``)."""
    device = precision_module.model_device(model)
    if device is not None:
        return device
    if default is None:
        raise error("the model has no parameters")
    return torch.device(default)


def check_precision(precision: str, *, error: type[Exception] = AnalysisInputError) -> str:
    return check_choice(precision, "precision", PRECISIONS, error=error)  # worded like every other analysis option


def at_least_fp32(tensor: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 outputs of an autocast forward as float32; float32 and float64 unchanged."""
    return tensor.float() if tensor.dtype in (torch.bfloat16, torch.float16) else tensor


# --------------------------------------------------------------------------- parameter selection


def parameter_mask(model: nn.Module, params: ParameterSelector = "all", *, error: type[Exception] = LandscapeInputError) -> list[bool]:
    """Which of ``list(model.parameters())`` are selected; one bool per parameter, same order.

    ``params``: ``"all"``; ``"probe"``, the last child of an ``nn.Sequential`` (the head of
    ``classifier(encoder, probe)``, equivalently ``"1"``); a submodule or parameter name such
    as ``"1"`` (or ``"1."``) or ``"0.stem"`` — a parameter is selected when its name equals it
    or starts with it followed by a dot; a sequence of such names (union); or a predicate on
    parameter names. Selecting nothing is an error that names the valid choices, so a typo
    such as ``"prob"`` never silently means something else.
    """
    names = [name for name, _ in model.named_parameters()]
    if isinstance(params, str) and params == "all":
        mask = [True] * len(names)
    elif isinstance(params, str) and params == "probe" and isinstance(model, nn.Sequential) and len(model) >= 2 and "probe" not in dict(model.named_children()):
        prefix = list(dict(model.named_children()))[-1]
        mask = [n.startswith(prefix + ".") for n in names]
    elif isinstance(params, str) or (isinstance(params, Sequence) and params and all(isinstance(p, str) for p in params)):
        prefixes = [params] if isinstance(params, str) else list(params)
        prefixes = [p.rstrip(".") for p in prefixes]
        mask = [any(n == p or n.startswith(p + ".") for p in prefixes) for n in names]
    elif callable(params):
        mask = [bool(params(n)) for n in names]
    else:
        raise error(f"params must be 'all', 'probe', a name prefix, a list of prefixes or a predicate on names, got {params!r}")
    if not any(mask):
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        raise error(f"params={params!r} selects no parameter; valid: 'all', 'probe' (last child of a Sequential), or a prefix of the names: {shown}")
    return mask
