"""The Hessian of the mean cross-entropy of a model as an operator: :class:`HessianOperator`.

See :mod:`contrastlab.analysis.sharpness` for the solvers and analyses built on it.
H·v = Σ_batches ∂/∂θ ⟨∂L_batch/∂θ, v⟩ by double backpropagation, with L_batch the batch's
share of the mean. When the first-backward graphs (the gradients with ``create_graph``) of all
batches fit the graph budget, they are built once and kept, so every further product is one
backward pass through them (PyHessian does this for a single batch); otherwise each product
recomputes them batch by batch. The numbers are the same either way. The forward pass runs
through :func:`~contrastlab.models.batchnorm.fold_batchnorm_differentiable` (each conv→BN pair
one convolution whose weights are computed from W, γ and β): the same function of the same
parameters in eval mode, 21–28% less time per product on a CIFAR ResNet-18 (float rounding aside).

One operator serves the raw Hessian H (:meth:`HessianOperator.matvec`) and, as a view over the
same graphs, the filter-normalized S H S (:meth:`HessianOperator.filter_normalized`). A product
reads nothing back to the host (no ``.item()``, no boolean indexing): on a GPU the solvers'
products queue without stalls.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import nn

from ..models import eval_mode
from ..models.batchnorm import fold_batchnorm_differentiable
from .checks import (
    ParameterSelector,
    SharpnessInputError,
    at_least_fp32,
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
# The graph budget on the CPU (and any device without a memory query): kept graphs above it are recomputed.
CPU_GRAPH_BUDGET_BYTES = 2 << 30
# On CUDA the budget is the free memory less this margin (the larger of the two), left for the
# products' own temporaries, the solvers' vectors and the caching allocator's fragmentation.
CUDA_MARGIN_BYTES = 4 << 30
CUDA_MARGIN_FRACTION = 0.10

Matvec = Callable[[torch.Tensor], torch.Tensor]


def graph_budget_bytes(device: torch.device | str) -> int:
    """How many bytes of first-backward graphs a Hessian may keep on ``device``.

    CUDA: the free memory now (``torch.cuda.mem_get_info``) less max(4 GiB, 10% of the card), at
    least 0 — a width-64 ResNet-18 at batch 512 needs ~2.5 GB, which an 80–141 GB card holds.
    Other devices: :data:`CPU_GRAPH_BUDGET_BYTES`.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return CPU_GRAPH_BUDGET_BYTES
    free, total = torch.cuda.mem_get_info(device)
    return max(0, int(free - max(CUDA_MARGIN_BYTES, CUDA_MARGIN_FRACTION * total)))


@dataclass(frozen=True)
class HessianSettings:
    """How a :class:`HessianOperator` builds its products.

    ``params``: which parameters (see :func:`~contrastlab.analysis.checks.parameter_mask`);
    ``batch_size``: samples per forward/backward batch; ``precision`` "fp32" | "bf16" (bf16
    autocast of the forward pass; products accumulate in float32); ``keep_graph``: True keeps
    the first-backward graphs of all batches across products, False recomputes them per
    product, None decides by ``graph_budget_bytes`` (None: :func:`graph_budget_bytes` of the
    model's device); ``fold_bn=False`` runs the forward pass through the unfolded model.
    """

    params: ParameterSelector = "all"
    batch_size: int = 256
    precision: str = "fp32"
    keep_graph: bool | None = None
    graph_budget_bytes: int | None = None
    fold_bn: bool = True


@dataclass(frozen=True)
class LinearOperator:
    """A symmetric linear map on flat vectors (dim,) of ``dtype`` on ``device``: what the solvers take."""

    matvec: Matvec
    dim: int
    dtype: torch.dtype = torch.float32
    device: torch.device | str = "cpu"


def check_normalizations(normalizations: str | Sequence[str]) -> tuple[str, ...]:
    """The requested normalizations as a tuple: one name or a non-empty sequence of distinct names."""
    names = (normalizations,) if isinstance(normalizations, str) else tuple(normalizations)
    for name in names:
        check_choice(name, "normalization", SHARPNESS_NORMALIZATIONS, error=SharpnessInputError)
    if not names or len(set(names)) != len(names):
        raise SharpnessInputError(f"normalizations must be distinct names from {', '.join(map(repr, SHARPNESS_NORMALIZATIONS))}, "
                                  f"at least one, got {normalizations!r}")
    return names


def _saved_bytes() -> tuple[contextlib.AbstractContextManager, Callable[[], int]]:
    """A saved-tensors hook context that counts the distinct storage bytes autograd keeps."""
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    return torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor), lambda: sum(seen.values())


def _check_keep_graph(keep_graph) -> None:
    if keep_graph not in (None, True, False):
        raise SharpnessInputError(f"keep_graph must be True, False or None (decide by graph_budget_bytes), got {keep_graph!r}")


_ONLY_1D = "params={params!r} selects only parameters with <= 1 dim, whose filter scale is 0; use normalization='none'"

# (index into the operator's parameters, one batch's gradient with its graph) pairs.
GradientGraph = list[tuple[int, torch.Tensor]]


class HessianOperator:
    """H of L(θ) = (1/N) Σ_n CE(f_θ(images_n), labels_n) over the selected parameters, as a context manager.

    ``images`` (N, ...) and ``labels`` (N,) are moved to the model's device batch by batch.
    Vectors are flat (:attr:`dim`,), in the order of the operator's parameters (the selected
    ``list(model.parameters())``; with ``filter_only`` only those with ≥ 2 dims, for an
    operator used only through its filter-normalized view), on the model's device, float64
    for a float64 model and float32 otherwise. Inside ``with`` the model is in eval mode and only
    the operator's parameters require grad; both are restored on exit and the kept graphs freed.
    """

    def __init__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 settings: HessianSettings = HessianSettings(), *, filter_only: bool = False):
        check_batch(images, labels, error=SharpnessInputError)
        self.batch_size = check_positive_int(settings.batch_size, "batch_size", error=SharpnessInputError)
        check_precision(settings.precision, error=SharpnessInputError)
        _check_keep_graph(settings.keep_graph)
        self.model, self.images, self.labels, self.settings = model, images, labels, settings
        self._all_parameters = list(model.parameters())
        mask = parameter_mask(model, settings.params, error=SharpnessInputError)
        if filter_only:  # the filter view alone: its graph needs no 1-D parameter
            mask = [keep and p.ndim >= 2 for p, keep in zip(self._all_parameters, mask)]
            if not any(mask):
                raise SharpnessInputError(_ONLY_1D.format(params=settings.params))
        self.parameters = [p for p, keep in zip(self._all_parameters, mask) if keep]
        self._mask = mask
        self.device = model_device(model, error=SharpnessInputError)
        self._starts = range(0, images.shape[0], self.batch_size)
        self._forward = fold_batchnorm_differentiable(model) if settings.fold_bn else model
        self._graphs: list[GradientGraph] | None = None
        self._decided = settings.keep_graph is False
        self._labels_checked = False
        self._exit = contextlib.ExitStack()

    # ------------------------------------------------------------------ context

    def __enter__(self) -> HessianOperator:
        flags = [p.requires_grad for p in self._all_parameters]

        def restore() -> None:
            self._graphs, self._decided = None, self.settings.keep_graph is False
            for p, flag in zip(self._all_parameters, flags):
                p.requires_grad_(flag)

        self._exit.callback(restore)
        for p, keep in zip(self._all_parameters, self._mask):
            p.requires_grad_(keep)
        self._exit.enter_context(eval_mode(self.model))
        return self

    def __exit__(self, *exc: object) -> None:
        self._exit.close()

    # ------------------------------------------------------------------ the raw operator

    @property
    def dim(self) -> int:
        return sum(p.numel() for p in self.parameters)

    @property
    def dtype(self) -> torch.dtype:
        return torch.float64 if all(p.dtype == torch.float64 for p in self.parameters) else torch.float32

    @property
    def graphs_kept(self) -> bool:
        """Whether the first-backward graphs are kept (decided by the first product)."""
        return self._graphs is not None

    def matvec(self, vector: torch.Tensor) -> torch.Tensor:
        """H·v: (dim,) -> (dim,)."""
        return self._product(list(range(len(self.parameters))), None, vector)

    # ------------------------------------------------------------------ the filter-normalized view

    @cached_property
    def _filter_indices(self) -> list[int]:
        indices = [i for i, p in enumerate(self.parameters) if p.ndim >= 2]
        if not indices:
            raise SharpnessInputError(_ONLY_1D.format(params=self.settings.params))
        return indices

    def filter_normalized(self) -> LinearOperator:
        """S H S restricted to the parameters with ≥ 2 dims (S: each filter's norm), over the same graphs.

        S H S·v = S·(H·(S v)): a product through this operator's graphs with v zero on the 1-D
        parameters. Vectors hold the ≥ 2-dim parameters only, in order.
        """
        indices = self._filter_indices
        scales = filter_scales([self.parameters[i] for i in indices])
        dtype = torch.float64 if all(self.parameters[i].dtype == torch.float64 for i in indices) else torch.float32
        return LinearOperator(lambda vector: self._product(indices, scales, vector),
                              sum(self.parameters[i].numel() for i in indices), dtype, self.device)

    def view(self, normalization: str) -> LinearOperator:
        """The operator of one normalization: "none" (H itself) or "filter" (:meth:`filter_normalized`)."""
        check_choice(normalization, "normalization", SHARPNESS_NORMALIZATIONS, error=SharpnessInputError)
        if normalization == "filter":
            return self.filter_normalized()
        return LinearOperator(self.matvec, self.dim, self.dtype, self.device)

    def filter_weights(self) -> torch.Tensor:
        """S² as a flat vector in the raw operator's layout: the squared filter norm on each element of a
        parameter with ≥ 2 dims, 0 on the others, so that tr(S H S) = tr(diag(S²)·H) (float64, on the device)."""
        return torch.cat([scale.double().reshape(-1) for scale in filter_scales(self.parameters)]).square()

    # ------------------------------------------------------------------ products

    def _product(self, indices: list[int], scales: list[torch.Tensor] | None, vector: torch.Tensor) -> torch.Tensor:
        """(S)H(S)·v over ``self.parameters[indices]`` (``scales``: S per parameter, None for H)."""
        sizes = [self.parameters[i].numel() for i in indices]
        if vector.shape != (sum(sizes),):
            raise SharpnessInputError(f"expected a vector of shape ({sum(sizes)},), got {tuple(vector.shape)}")
        parts = {i: chunk.view_as(self.parameters[i]).to(self.parameters[i].dtype)
                 for i, chunk in zip(indices, vector.to(self.device).split(sizes))}
        if scales is not None:
            parts = {i: part * scale for (i, part), scale in zip(parts.items(), scales)}
        product = {i: torch.zeros_like(self.parameters[i]) for i in indices}
        with torch.enable_grad():
            if not self._decided:
                self._graphs, self._decided = self._build_graphs(), True
            if self._graphs is not None:
                for pairs in self._graphs:
                    self._second_backward(pairs, parts, product, retain=True)
            else:
                for start in self._starts:
                    self._second_backward(self._first_backward(start, indices), parts, product, retain=False)
        totals = list(product.values())
        if scales is not None:
            totals = [total * scale for total, scale in zip(totals, scales)]
        dtype = torch.float64 if all(self.parameters[i].dtype == torch.float64 for i in indices) else torch.float32
        return torch.cat([t.reshape(-1) for t in totals]).to(dtype)

    def _first_backward(self, start: int, indices: Sequence[int]) -> GradientGraph:
        """The batch's share of ∂L/∂θ for parameters[indices], with its graph."""
        # contiguous: torch 2.13's CPU double backward through a convolution corrupts the
        # heap on some channels_last-strided batches (e.g. 125 images on 2 threads).
        x = self.images[start : start + self.batch_size].to(self.device).contiguous()
        y = self.labels[start : start + self.batch_size].to(self.device)
        with autocast(self.settings.precision, self.device):
            logits = self._forward(x)
        if not self._labels_checked:  # once: the check reads the labels back to the host
            check_label_range(self.labels.to(self.device), logits.shape[1], error=SharpnessInputError)
            self._labels_checked = True
        loss = F.cross_entropy(at_least_fp32(logits), y, reduction="sum") / self.images.shape[0]  # this batch's share of the mean
        grads = torch.autograd.grad(loss, [self.parameters[i] for i in indices], create_graph=True, allow_unused=True)
        # A gradient without a graph is constant: the loss is linear in that parameter.
        return [(i, g) for i, g in zip(indices, grads) if g is not None and g.requires_grad]

    def _second_backward(self, pairs: GradientGraph, parts: dict[int, torch.Tensor], product: dict[int, torch.Tensor], retain: bool) -> None:
        """product += ∂/∂θ ⟨g, v⟩ for one batch's gradient g, over the view's parameters (the keys of parts)."""
        pairs = [(i, g) for i, g in pairs if i in parts]  # v is 0 on the other parameters
        if not pairs:
            return
        vectors = [parts[i].to(g.dtype) for i, g in pairs]
        second = torch.autograd.grad([g for _, g in pairs], [self.parameters[i] for i in parts], grad_outputs=vectors,
                                     retain_graph=retain, allow_unused=True)
        for i, s in zip(parts, second):
            if s is not None:
                product[i] += s.detach()

    def _build_graphs(self) -> list[GradientGraph] | None:
        """The first-backward graphs of all batches over all parameters, or None when they should not be kept."""
        everything = range(len(self.parameters))
        if self.settings.keep_graph is True:
            return [self._first_backward(start, everything) for start in self._starts]
        counting, counted = _saved_bytes()
        with counting:
            first = self._first_backward(self._starts[0], everything)
        per_batch = counted() + sum(g.numel() * g.element_size() for _, g in first)
        budget = self.settings.graph_budget_bytes
        budget = graph_budget_bytes(self.device) if budget is None else budget
        if per_batch * len(self._starts) > budget:
            log.debug("Hessian: graphs of %d batches need ~%d bytes > %d; recomputing per product", len(self._starts),
                      per_batch * len(self._starts), budget)
            return None
        return [first, *(self._first_backward(start, everything) for start in self._starts[1:])]
