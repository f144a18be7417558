"""Encoders as stages read them: a contrastlab checkpoint, or one trained elsewhere.

A stage's "encoder" input is a file path. A contrastlab checkpoint (``X.safetensors`` beside its
sidecar ``X.json``) is rebuilt by :func:`contrastlab.checkpoint.encoder_from_checkpoint`; any
other file (solo-learn, lightly, torchvision state dict) or a ``package.module:function`` spec
goes through :func:`contrastlab.models.foreign.load_foreign_encoder`. A ``module:function`` spec
reaches a stage joined to the run directory like every input path (``DIR/pkg.mod:fn``): the name
of a path that does not exist is taken as the spec. Every load says where the encoder came from
(``{"source", "path", "format", "sha256"}``), which the stages record in their manifests under "encoder".
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from ..checkpoint import encoder_from_checkpoint
from ..models.foreign import MODULE_SPEC
from .external import encoder_normalization, external_methods, file_sha256



def encoder_spec(path: str | Path) -> str:
    """The spec an "encoder" input stands for: the path itself, or the ``module:function`` it was joined to."""
    path = Path(path)
    if not path.exists() and MODULE_SPEC.match(path.name):
        return path.name
    return str(path)


def is_contrastlab_checkpoint(spec: str | Path) -> bool:
    """A ``.safetensors`` file with the JSON sidecar contrastlab writes beside its checkpoints."""
    path = Path(spec)
    return path.suffix == ".safetensors" and path.with_suffix(".json").is_file()


def load_encoder(spec: str | Path, expected_architecture: dict | None = None, *, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, in_channels: int = 3, image_size: int = 32,
                 format: str = "auto", stem_padding: int | None = None) -> tuple[nn.Module, dict[str, Any]]:  # noqa: A002
    """(encoder on the CPU, metadata) for an encoder input.

    Metadata: a contrastlab checkpoint's sidecar; for a foreign encoder, what its loader found
    ("method" is then its source, e.g. "solo-learn", so tables label it by where it came from).
    Either way ``meta["encoder"] = {"source", "path", "format", "sha256"}`` (sha256 None for
    ``module:function``). ``expected_architecture`` is checked for contrastlab checkpoints only (a
    foreign checkpoint's width and stem are read from the file); ``mean``/``std`` are the input
    normalization given to a foreign encoder, ``stem_padding`` a CIFAR stem's padding where the
    file does not tell (models/foreign.py).
    """
    spec = encoder_spec(spec)
    if format == "auto" and is_contrastlab_checkpoint(spec):
        encoder, meta = encoder_from_checkpoint(spec, expected_architecture)
        return encoder, {**meta, "encoder": {"source": "contrastlab", "path": str(spec), "format": "safetensors",
                                             "sha256": file_sha256(spec)}}
    from ..models.foreign import load_foreign_encoder

    encoder, info = load_foreign_encoder(spec, mean=mean, std=std, in_channels=in_channels, format=format, image_size=image_size,
                                         stem_padding=stem_padding)
    meta = {"method": info["source"], "seed": None, "architecture": info.get("architecture"),
            "normalization": info.get("normalization"), "foreign": info,
            "encoder": {"source": info["source"], "path": info["path"], "format": info["format"], "sha256": file_sha256(spec)}}
    return encoder, meta


def load_method_encoder(config, method: str | None, spec: str | Path, data, expected_architecture: dict | None = None
                        ) -> tuple[nn.Module, dict[str, Any]]:
    """The encoder of ``method`` in a study as its stages see it: an external method's (config
    ``methods`` entry) with its ``mean``/``std``, else the data's statistics for a foreign encoder;
    a contrastlab checkpoint with its own normalization (an external entry's ``mean``/``std`` replace it).
    ``data``: the ImageSet whose statistics stand in (the task's training split); ``expected_architecture``
    is checked for the study's own (built-in) methods only."""
    from ..models.normalization import set_input_normalization

    external = method in external_methods(config)
    contrastlab = is_contrastlab_checkpoint(encoder_spec(spec))
    mean, std, padding = encoder_normalization(config, method, data.mean, data.std, contrastlab)
    encoder, meta = load_encoder(spec, None if external else expected_architecture, mean=mean, std=std,
                                 in_channels=data.images.shape[-1], image_size=data.images.shape[1], stem_padding=padding)
    if contrastlab and mean is not None and std is not None:
        set_input_normalization(encoder, mean, std)
        meta = {**meta, "normalization": {"mean": list(mean), "std": list(std)}}
    return encoder, meta


def check_external_checkpoints(config, channels: int) -> None:
    """Load every checkpoint of the external methods once, as the stages will, and run it on two
    images of the study's size with ``channels`` channels: a missing, corrupt or incompatible file (another
    channel count, an output that is not (B, D)) is one ConfigError line naming the entry, before any unit runs."""
    import torch

    from ..errors import ConfigError, ContrastlabError

    d = config.data
    size = d.image_size or 32
    for ext in external_methods(config).values():
        for spec in dict.fromkeys(ext.checkpoints):
            try:
                encoder, meta = load_encoder(spec, mean=ext.mean, std=ext.std, in_channels=channels, image_size=size,
                                             stem_padding=ext.stem_padding)
            except ContrastlabError as exc:
                raise ConfigError(f"methods entry '{ext.name}': {exc}") from None
            found = (meta.get("architecture") or {}).get("in_channels", channels)
            if found != channels:
                raise ConfigError(f"methods entry '{ext.name}': {spec} takes {found}-channel images, but {d.downstream} has {channels}")
            try:
                with torch.no_grad():
                    out = encoder.eval()(torch.full((2, channels, size, size), 0.5))
            except RuntimeError as exc:
                raise ConfigError(f"methods entry '{ext.name}': {spec} cannot encode {size}x{size} images "
                                  f"({str(exc).splitlines()[0]})") from None
            if out.ndim != 2 or out.shape[0] != 2:
                raise ConfigError(f"methods entry '{ext.name}': {spec} maps images to {tuple(out.shape)}, not (B, D)")
