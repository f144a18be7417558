"""BatchNorm folding: each conv→BatchNorm pair of a module as one convolution (eval mode).

In eval mode BN is an affine map per channel with fixed statistics, so conv→BN equals one
convolution with W' = W·s, b' = (b − μ)·s + β, s = γ/√(σ² + ε). Evaluating the folded module
skips one pass over every activation map (the landscape evaluates a model hundreds of times).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable

import torch
import torch.fx as fx
from torch import nn

log = logging.getLogger(__name__)


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


def folded_to_channels_last(module: nn.Module) -> None:
    """Store the folded (module-owned) 4-D conv weights channels_last; shared weights stay as they are."""
    for name, child in module.named_children():
        if name.startswith("_folded_conv_") and child.weight.ndim == 4:
            child.weight.data = child.weight.data.contiguous(memory_format=torch.channels_last)
