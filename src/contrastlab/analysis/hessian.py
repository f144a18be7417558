"""Hessian-vector products of the mean cross-entropy of a model, raw or filter-normalized.

See :mod:`contrastlab.analysis.sharpness` for the analyses built on :func:`hessian_operator`.
H·v = Σ_batches ∂/∂θ ⟨∂L_batch/∂θ, v⟩ by double backpropagation, with L_batch the batch's
share of the mean. When the first-backward graphs (the gradients with ``create_graph``) of all
batches fit the budget, they are built once and kept, so every further product is one backward
pass through them (PyHessian does this for a single batch); otherwise each product recomputes
them batch by batch. The numbers are the same either way. The forward pass runs through
:func:`~contrastlab.models.batchnorm.fold_batchnorm_differentiable` (each conv→BN pair one
convolution whose weights are computed from W, γ and β): the same function of the same
parameters in eval mode, 21–28% less time per product on a CIFAR ResNet-18 (float rounding aside).

:func:`hessian_operators` serves several normalizations (raw H and filter-normalized S H S)
from one set of graphs; :func:`hessian_operator` is its single-normalization form.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..models import eval_mode
from ..models.batchnorm import fold_batchnorm_differentiable
from .checks import (
    at_least_fp32,
    LandscapeInputError,
    ParameterSelector,
    check_batch,
    check_choice,
    check_label_range,
    check_positive_int,
    check_precision,
    model_device,
    parameter_mask,
)
from ..precision import autocast
from .directions import filter_scales

log = logging.getLogger(__name__)

SHARPNESS_NORMALIZATIONS = ("filter", "none")
# keep_graph=None keeps the first-backward graphs of all batches when they fit in this many bytes.
GRAPH_BUDGET_BYTES = 2 << 30

Matvec = Callable[[torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- Hessian-vector products


def _saved_bytes() -> tuple[contextlib.AbstractContextManager, Callable[[], int]]:
    """A saved-tensors hook context that counts the distinct storage bytes autograd keeps."""
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    return torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor), lambda: sum(seen.values())


def _check_normalizations(normalizations: str | Sequence[str]) -> tuple[str, ...]:
    """The requested normalizations as a tuple: one name or a non-empty sequence of distinct names."""
    names = (normalizations,) if isinstance(normalizations, str) else tuple(normalizations)
    for name in names:
        check_choice(name, "normalization", SHARPNESS_NORMALIZATIONS, error=LandscapeInputError)
    if not names or len(set(names)) != len(names):
        raise LandscapeInputError(f"normalizations must be distinct names from {', '.join(map(repr, SHARPNESS_NORMALIZATIONS))}, at least one, got {normalizations!r}")
    return names


@contextlib.contextmanager
def hessian_operators(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    params: ParameterSelector = "all",
    batch_size: int = 256,
    *,
    normalizations: str | Sequence[str] = ("none", "filter"),
    precision: str = "fp32",
    keep_graph: bool | None = None,
    graph_budget_bytes: int = GRAPH_BUDGET_BYTES,
    fold_bn: bool = True,
) -> Iterator[dict[str, tuple[Matvec, int]]]:
    """Yield ``{normalization: (matvec, dim)}``, one view per requested normalization of one Hessian.

    Each view is the operator :func:`hessian_operator` gives for that normalization (same
    vector layout, dtype and ``dim``); all views share one set of first-backward graphs, built
    on the union of their parameters: S H S·v = S·(H·(S v)) restricted to the parameters with
    ≥ 2 dims, so the filter view is a product through the raw view's graph with v zero on the
    1-D parameters. Kept graphs are built once (by the first product of any view); when they
    are not kept, each product recomputes only its own view's first backward. Options as in
    :func:`hessian_operator`.
    """
    check_batch(images, labels, error=LandscapeInputError)
    batch_size = check_positive_int(batch_size, "batch_size", error=LandscapeInputError)
    normalizations = _check_normalizations(normalizations)
    check_precision(precision, error=LandscapeInputError)
    if keep_graph not in (None, True, False):
        raise LandscapeInputError(f"keep_graph must be True, False or None (decide by graph_budget_bytes), got {keep_graph!r}")
    mask = parameter_mask(model, params)
    parameters = list(model.parameters())
    if "filter" in normalizations and not any(keep and p.ndim >= 2 for p, keep in zip(parameters, mask)):
        raise LandscapeInputError(f"params={params!r} selects only parameters with <= 1 dim, whose filter scale is 0; use normalization='none'")
    if "none" not in normalizations:  # the filter view alone: its graph needs no 1-D parameter
        mask = [keep and p.ndim >= 2 for p, keep in zip(parameters, mask)]
    selected = [p for p, keep in zip(parameters, mask) if keep]  # the union of the views' parameters
    device = model_device(model)
    n = images.shape[0]
    starts = range(0, n, batch_size)
    flags = [p.requires_grad for p in parameters]
    # Per batch, (index, gradient with graph) pairs kept across products; decided at the first product.
    state: dict = {"kept": None, "decided": keep_graph is False}
    forward = fold_batchnorm_differentiable(model) if fold_bn else model

    def first_backward(start: int, indices: Sequence[int]) -> list[tuple[int, torch.Tensor]]:
        """The batch's share of ∂L/∂θ for selected[indices], with its graph: (index into selected, gradient) pairs."""
        # contiguous: torch 2.13's CPU double backward through a convolution corrupts the
        # heap on some channels_last-strided batches (e.g. 125 images on 2 threads).
        x = images[start : start + batch_size].to(device).contiguous()
        y = labels[start : start + batch_size].to(device)
        with autocast(precision, device):
            logits = forward(x)
        check_label_range(y, logits.shape[1], error=LandscapeInputError)
        loss = F.cross_entropy(at_least_fp32(logits), y, reduction="sum") / n  # this batch's share of the mean
        grads = torch.autograd.grad(loss, [selected[i] for i in indices], create_graph=True, allow_unused=True)
        # A gradient without a graph is constant: the loss is linear in that parameter.
        return [(i, g) for i, g in zip(indices, grads) if g is not None and g.requires_grad]

    def second_backward(pairs: list[tuple[int, torch.Tensor]], parts: dict[int, torch.Tensor], product: dict[int, torch.Tensor], retain: bool) -> None:
        """product += ∂/∂θ ⟨g, v⟩ for one batch's gradient g, over the view's parameters (the keys of parts)."""
        pairs = [(i, g) for i, g in pairs if i in parts]  # v is 0 on the other parameters
        if not pairs:
            return
        outputs = [g for _, g in pairs]
        vectors = [parts[i].to(g.dtype) for i, g in pairs]
        second = torch.autograd.grad(outputs, [selected[i] for i in parts], grad_outputs=vectors, retain_graph=retain, allow_unused=True)
        for i, s in zip(parts, second):
            if s is not None:
                product[i] += s.detach()

    def build_graphs() -> list[list[tuple[int, torch.Tensor]]] | None:
        """The first-backward graphs of all batches over all selected parameters, or None when they should not be kept."""
        if keep_graph is False:
            return None
        everything = range(len(selected))
        graphs = []
        for index, start in enumerate(starts):
            if keep_graph is None and index == 0:
                counting, counted = _saved_bytes()
                with counting:
                    graphs.append(first_backward(start, everything))
                per_batch = counted() + sum(g.numel() * g.element_size() for _, g in graphs[0])
                if per_batch * len(starts) > graph_budget_bytes:
                    log.debug("Hessian: graphs of %d batches need ~%d bytes > %d; recomputing per product", len(starts), per_batch * len(starts), graph_budget_bytes)
                    return None
            else:
                graphs.append(first_backward(start, everything))
        return graphs

    def view(normalization: str) -> tuple[Matvec, int]:
        """(matvec, dim) of one normalization over the shared graphs."""
        indices = [i for i, p in enumerate(selected) if normalization == "none" or p.ndim >= 2]
        scales = filter_scales([selected[i] for i in indices]) if normalization == "filter" else None
        sizes = [selected[i].numel() for i in indices]
        dim = sum(sizes)
        dtype = torch.float64 if all(selected[i].dtype == torch.float64 for i in indices) else torch.float32

        def matvec(vector: torch.Tensor) -> torch.Tensor:
            if vector.shape != (dim,):
                raise LandscapeInputError(f"expected a vector of shape ({dim},), got {tuple(vector.shape)}")
            parts = {i: chunk.view_as(selected[i]).to(selected[i].dtype) for i, chunk in zip(indices, vector.to(device).split(sizes))}
            if scales is not None:
                parts = {i: part * scale for (i, part), scale in zip(parts.items(), scales)}
            product = {i: torch.zeros_like(selected[i]) for i in indices}
            with torch.enable_grad():
                if not state["decided"]:
                    state["kept"], state["decided"] = build_graphs(), True
                if state["kept"] is not None:
                    for pairs in state["kept"]:
                        second_backward(pairs, parts, product, retain=True)
                else:
                    for start in starts:
                        second_backward(first_backward(start, indices), parts, product, retain=False)
            totals = list(product.values())
            if scales is not None:
                totals = [total * scale for total, scale in zip(totals, scales)]
            return torch.cat([t.reshape(-1) for t in totals]).to(dtype)

        return matvec, dim

    try:
        for p, keep in zip(parameters, mask):
            p.requires_grad_(keep)
        with eval_mode(model):
            yield {normalization: view(normalization) for normalization in normalizations}
    finally:
        state["kept"] = None
        for p, flag in zip(parameters, flags):
            p.requires_grad_(flag)


def filter_weights(model: nn.Module, params: ParameterSelector = "all") -> torch.Tensor:
    """S² as a flat vector in the raw operator's layout (the selected parameters, in order): the
    squared filter norm on each element of a parameter with ≥ 2 dims, 0 on the others, so that
    tr(S H S) = tr(diag(S²)·H) (float64, on the model's device)."""
    selected = [p for p, keep in zip(model.parameters(), parameter_mask(model, params)) if keep]
    return torch.cat([scale.double().reshape(-1) for scale in filter_scales(selected)]).square()


@contextlib.contextmanager
def hessian_operator(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    params: ParameterSelector = "all",
    batch_size: int = 256,
    *,
    normalization: str = "filter",
    precision: str = "fp32",
    keep_graph: bool | None = None,
    graph_budget_bytes: int = GRAPH_BUDGET_BYTES,
    fold_bn: bool = True,
) -> Iterator[tuple[Matvec, int]]:
    """Yield ``(matvec, dim)``: v (dim,) -> H·v (dim,) (or S H S·v) for the mean CE over all samples.

    Vectors are flat, in the order of the operator's parameters (the selected
    ``list(model.parameters())``; with ``normalization="filter"`` only those with ≥ 2 dims), on
    the model's device, float64 for a float64 model and float32 otherwise. ``precision``
    "fp32" | "bf16" (bf16 autocast of the forward pass; products accumulate in float32).
    ``keep_graph``: True keeps the first-backward graphs of all batches across products, False
    recomputes them per product, None decides by ``graph_budget_bytes``. ``fold_bn=False``
    runs the forward pass through the unfolded model (for comparison). Inside the context
    the model is in eval mode and only the operator's parameters require grad; both are
    restored on exit (the kept graphs are freed). For several normalizations over one set of
    graphs, see :func:`hessian_operators`.
    """
    check_choice(normalization, "normalization", SHARPNESS_NORMALIZATIONS, error=LandscapeInputError)
    with hessian_operators(model, images, labels, params, batch_size, normalizations=(normalization,), precision=precision,
                           keep_graph=keep_graph, graph_budget_bytes=graph_budget_bytes, fold_bn=fold_bn) as operators:
        yield operators[normalization]
