"""Encoders as stages read them: a contrastlab checkpoint, or one trained elsewhere.

A stage's "encoder" input is a file path. A contrastlab checkpoint (``X.safetensors`` beside its
sidecar ``X.json``) is rebuilt by :func:`contrastlab.checkpoint.encoder_from_checkpoint`; any
other file (solo-learn, lightly, torchvision state dict) or a ``package.module:function`` spec
goes through :func:`contrastlab.models.foreign.load_foreign_encoder`. A ``module:function`` spec
reaches a stage joined to the run directory like every input path (``DIR/pkg.mod:fn``): the name
of a path that does not exist is taken as the spec. Every load says where the encoder came from
(``{"source", "path", "format"}``), which the stages record in their manifests under "encoder".
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from ..checkpoint import encoder_from_checkpoint

_MODULE_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def encoder_spec(path: str | Path) -> str:
    """The spec an "encoder" input stands for: the path itself, or the ``module:function`` it was joined to."""
    path = Path(path)
    if not path.exists() and _MODULE_SPEC.match(path.name):
        return path.name
    return str(path)


def is_contrastlab_checkpoint(spec: str | Path) -> bool:
    """A ``.safetensors`` file with the JSON sidecar contrastlab writes beside its checkpoints."""
    path = Path(spec)
    return path.suffix == ".safetensors" and path.with_suffix(".json").is_file()


def load_encoder(spec: str | Path, expected_architecture: dict | None = None, *, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, in_channels: int = 3, image_size: int = 32,
                 format: str = "auto") -> tuple[nn.Module, dict[str, Any]]:  # noqa: A002 - the word users know
    """(encoder on the CPU, metadata) for an encoder input.

    Metadata: a contrastlab checkpoint's sidecar; for a foreign encoder, what its loader found
    ("method" is then its source, e.g. "solo-learn", so tables label it by where it came from).
    Either way ``meta["encoder"] = {"source", "path", "format"}``. ``expected_architecture`` is
    checked for contrastlab checkpoints only (a foreign checkpoint's width is read from the file);
    ``mean``/``std`` are the input normalization given to a foreign checkpoint's encoder.
    """
    spec = encoder_spec(spec)
    if format == "auto" and is_contrastlab_checkpoint(spec):
        encoder, meta = encoder_from_checkpoint(spec, expected_architecture)
        return encoder, {**meta, "encoder": {"source": "contrastlab", "path": str(spec), "format": "safetensors"}}
    from ..models.foreign import load_foreign_encoder

    encoder, info = load_foreign_encoder(spec, mean=mean, std=std, in_channels=in_channels, format=format, image_size=image_size)
    meta = {"method": info["source"], "seed": None, "architecture": info.get("architecture"),
            "normalization": info.get("normalization"), "foreign": info,
            "encoder": {"source": info["source"], "path": info["path"], "format": info["format"]}}
    return encoder, meta
