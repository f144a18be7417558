"""The benchmarks' one call into the Pretrainer recipe, with the keyword settings they vary.

``pretrain(data, out, method=..., width=..., lr=0.3, ...)``: model fields (``encoder``, ``width``,
``projection_dim``) go to the model section, ``lr`` / ``temperature`` (numbers) become this method's
entries, every other keyword is a ``pretrain`` field. Returns the final encoder's path."""

from __future__ import annotations

from contrastlab.config import ModelConfig, PretrainConfig
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
