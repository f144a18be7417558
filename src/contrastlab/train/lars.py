"""LARS (You et al., 2017): SGD with momentum whose step is rescaled per parameter tensor by a
trust ratio, with the conventions of solo-learn's CIFAR recipes.

For each parameter tensor w with gradient g, learning rate lr and weight decay λ:

    adapted  = not (exclude_bias_and_norm and w.ndim <= 1)
    r        = η·‖w‖ / (‖g‖ + λ·‖w‖ + eps)                   (the trust ratio)
    r        = min(r / lr, 1)                                   if clip_lr
    d        = (g + λ·w)·r    if adapted and ‖w‖ > 0 and ‖g‖ > 0
             = g              otherwise (no adaptation and no weight decay)
    buf      = d on the first step, else momentum·buf + d
    w       ← w − lr·buf

So with ``clip_lr`` the effective step size of an adapted tensor is min(η‖w‖/(‖g‖+λ‖w‖+eps), lr)
times the decayed gradient. Biases and normalization weights (ndim <= 1) are neither adapted
nor decayed when ``exclude_bias_and_norm``. The "‖w‖ > 0 and ‖g‖ > 0" choice is made with
``torch.where`` on device tensors, so :meth:`LARS.step` never reads a value back to the host.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor


class LARS(torch.optim.Optimizer):
    """SGD + momentum with LARS trust-ratio scaling; see the module docstring for the exact update."""

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 0.02,
        eps: float = 1e-8,
        clip_lr: bool = False,
        exclude_bias_and_norm: bool = False,
    ) -> None:
        if lr <= 0:
            raise ValueError(f"LARS lr must be positive, got {lr}")
        if not 0 <= momentum < 1:
            raise ValueError(f"LARS momentum must be in [0, 1), got {momentum}")
        if weight_decay < 0 or eta <= 0 or eps < 0:
            raise ValueError(f"LARS needs weight_decay >= 0, eta > 0 and eps >= 0, got {weight_decay}, {eta}, {eps}")
        defaults = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "eta": eta, "eps": eps,
                    "clip_lr": clip_lr, "exclude_bias_and_norm": exclude_bias_and_norm}
        super().__init__(params, defaults)

    @staticmethod
    def _direction(param: Tensor, grad: Tensor, group: dict) -> Tensor:
        """The trust-ratio-scaled, decayed gradient d of one tensor (the gradient itself when not adapted)."""
        if group["exclude_bias_and_norm"] and param.ndim <= 1:
            return grad
        weight_decay = group["weight_decay"]
        param_norm, grad_norm = torch.linalg.vector_norm(param), torch.linalg.vector_norm(grad)
        ratio = group["eta"] * param_norm / (grad_norm + weight_decay * param_norm + group["eps"])
        if group["clip_lr"]:
            ratio = torch.clamp(ratio / group["lr"], max=1.0)
        adapt = (param_norm > 0) & (grad_norm > 0)  # a 0-dim device tensor: no host read
        return torch.where(adapt, grad.add(param, alpha=weight_decay).mul_(ratio), grad)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 (torch.optim.Optimizer.step)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                direction = self._direction(param, param.grad, group)
                if group["momentum"] > 0:
                    state = self.state[param]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = torch.clone(direction).detach()
                    else:
                        state["momentum_buffer"].mul_(group["momentum"]).add_(direction)
                    direction = state["momentum_buffer"]
                param.add_(direction, alpha=-group["lr"])
        return loss
