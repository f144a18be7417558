"""The benchmarks' one call into the Pretrainer recipe, with the keyword settings they vary.

``pretrain(data, out, method=..., width=..., lr=0.3, ...)``: model fields (``encoder``, ``width``,
``projection_dim``) go to the model section, ``lr`` / ``temperature`` (numbers) become this method's
entries, every other keyword is a ``pretrain`` field. Returns the final encoder's path.

``method_head`` and ``method_loss``: a method's head and one step's loss, for the benchmarks that
mirror the loop step by step."""

from __future__ import annotations

import torch
from torch import nn

from contrastlab.config import ModelConfig, PretrainConfig
from contrastlab.train.methods import HeadSpec, MethodState, StepBatch, get_method
from contrastlab.train.pretrain import Pretrainer, RunSpec


def pretrain(data, out, *, method: str, seed: int = 0, device="cpu", precision: str = "fp32", compile: bool = False, **fields):
    model = ModelConfig(**{k: fields.pop(k) for k in ("encoder", "width", "projection_dim") if k in fields})
    settings = PretrainConfig(compile=compile, checkpoint_every=0)  # as the former pretrain() defaulted
    for name in ("lr", "temperature"):
        if name in fields:
            setattr(settings, name, {**getattr(settings, name), method: fields.pop(name)})
    for name, value in fields.items():
        setattr(settings, name, value)
    return Pretrainer(settings, model, device, precision).run(data, out, RunSpec(method, seed))


def method_head(method: str, feature_dim: int, num_classes: int) -> nn.Module:
    """The head ``method`` trains after the encoder, at the default settings."""
    return get_method(method).build_head(HeadSpec(feature_dim, num_classes, ModelConfig().projection_dim, PretrainConfig(), method))


def method_loss(method: str, outputs: torch.Tensor, views: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """The loss of one step of ``method`` (SimCLR, SupCon, SupCE): network ``outputs`` (B·V, D) of
    ``views`` (B, V, ...) with ``labels`` (B,), at ``temperature``."""
    settings = PretrainConfig()
    settings.temperature = {**settings.temperature, method: temperature}
    return get_method(method).loss(outputs, StepBatch(views, labels, views.shape[1]), MethodState(), settings)[0]
