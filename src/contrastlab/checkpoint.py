"""Checkpoints: weights as safetensors, a JSON sidecar that describes them.

A checkpoint ``X.safetensors`` holds flat tensors under prefixes (``encoder.``, ``head.``,
``probe.``, ``optimizer.``, ``rng.``); ``X.json`` holds what produced them (stage, method,
config, seed, epoch, package version, normalization, architecture). The sidecar is written
after the weights, both atomically, so a checkpoint is complete exactly when its sidecar exists.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save as serialize
from torch import nn

from . import __version__
from .errors import CheckpointError, CorruptFileError
from .models import build_encoder, stem_of, stem_options
from .utils.io import first_line, read_json_object, write_with_sidecar

log = logging.getLogger(__name__)


def _flatten(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v.detach().cpu().contiguous() for k, v in tensors.items()}


def subset(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors saved under ``prefix.`` with the prefix removed."""
    start = prefix + "."
    return {k[len(start):]: v for k, v in tensors.items() if k.startswith(start)}


def save_checkpoint(path: str | Path, parts: dict[str, dict[str, torch.Tensor]], meta: dict[str, Any]) -> Path:
    """Save ``parts`` (e.g. ``{"encoder": sd, "head": sd}``) to ``path`` (.safetensors) and its sidecar.

    A failed write (permission, read-only file system, full disk) is a one-line StorageError;
    neither a temporary nor a weights file without its sidecar is left behind.
    """
    path = Path(path).with_suffix(".safetensors")
    flat: dict[str, torch.Tensor] = {}
    for name, tensors in parts.items():
        flat.update(_flatten(name, tensors))
    data = serialize(flat)  # bytes, written by atomic_path (safetensors' own writer makes 0600 files)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    return write_with_sidecar(path, write, {"package_version": __version__, **meta})


def first_non_finite(tensors: dict[str, torch.Tensor]) -> str | None:
    """The name of the first floating tensor holding NaN or inf (one pass per tensor); None if none."""
    for name, tensor in tensors.items():
        if (tensor.is_floating_point() or tensor.is_complex()) and not bool(torch.isfinite(tensor).all()):
            return name
    return None


def read_checkpoint(path: str | Path, check_finite: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load all tensors and the sidecar of a checkpoint; clear errors when missing or broken.

    Every problem is a one-line CheckpointError: no file, no sidecar, a sidecar that is not a JSON
    object, an unparsable or truncated weights file, and (with ``check_finite``) NaN/inf in any
    floating tensor, named.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    sidecar = path.with_suffix(".json")
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not sidecar.exists():
        raise CheckpointError(f"checkpoint {path} has no sidecar {sidecar.name}: it is incomplete; rerun the stage that writes it")
    try:
        meta = read_json_object(sidecar, "checkpoint sidecar")
    except CorruptFileError as exc:  # names the sidecar and what is wrong with it
        raise CheckpointError(str(exc)) from None
    except OSError as exc:
        raise CheckpointError(f"checkpoint sidecar {sidecar} is unreadable ({first_line(exc)}); rerun the stage that writes it") from None
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt ({first_line(exc)}); rerun the stage that writes it") from None
    if check_finite:
        bad = first_non_finite(tensors)
        if bad is not None:
            raise CheckpointError(
                f"checkpoint {path} holds NaN/inf in tensor {bad}; the file is corrupt or the run diverged: delete it to recompute")
    return tensors, meta


def describe_architecture(arch: dict[str, Any]) -> str:
    stem = stem_of(arch)
    what = "" if stem == stem_of({}) else f", {stem['stem']} stem" + (f" padding {stem['stem_padding']}" if stem["stem_padding"] != 1 else "")
    return f"{arch.get('encoder')} (width {arch.get('width')}, {arch.get('in_channels')} input channels{what})"


def check_architecture(found: dict[str, Any], expected: dict[str, Any], path: str | Path) -> None:
    keys = ("encoder", "width", "in_channels")
    if any(found.get(k) != expected.get(k) for k in keys) or stem_of(found) != stem_of(expected):
        raise CheckpointError(
            f"checkpoint {path} holds a {describe_architecture(found)} encoder, "
            f"but the model is a {describe_architecture(expected)}; use a checkpoint of the same architecture"
        )


def encoder_from_checkpoint(path: str | Path, expected_architecture: dict[str, Any] | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the encoder described by a checkpoint's sidecar and load its weights.

    With ``expected_architecture``, a checkpoint of another architecture is a CheckpointError
    that names both.
    """
    tensors, meta = read_checkpoint(path)
    arch = meta.get("architecture")
    if not arch:
        raise CheckpointError(f"checkpoint {path} does not describe its architecture; it was not written by contrastlab")
    if expected_architecture is not None:
        check_architecture(arch, expected_architecture, path)
    norm = meta.get("normalization", {})
    encoder = build_encoder(arch["encoder"], width=arch["width"], in_channels=arch["in_channels"], mean=norm.get("mean"), std=norm.get("std"),
                            **stem_options(arch))
    load_state(encoder, subset(tensors, "encoder"), path, arch)
    return encoder, meta


def load_state(module: nn.Module, state: dict[str, torch.Tensor], path: str | Path, arch: dict[str, Any] | None = None) -> None:
    """``module.load_state_dict(state)`` with a one-line error on any mismatch."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        what = describe_architecture(arch) if arch else "another model"
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"checkpoint {path} (from {what}) does not fit this model: {first}") from None

