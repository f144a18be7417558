"""Encoders not trained by contrastlab, loaded so that every analysis can run on them.

A spec is one of

* a solo-learn checkpoint (PyTorch Lightning ``.ckpt`` with ``"state_dict"``, backbone keys in
  torchvision's ResNet naming under ``backbone.``: ``backbone.conv1.weight``,
  ``backbone.layer2.0.downsample.0.weight``, ...);
* a lightly-style checkpoint (backbone = ``nn.Sequential(*list(resnet.children())[:-1])``, so
  ``backbone.0.weight`` is conv1, ``backbone.1.*`` bn1, ``backbone.4``..``backbone.7`` layer1..4),
  as a Lightning checkpoint or a bare state dict;
* a plain torchvision-style ResNet-18 state dict (``conv1.weight``, ``layer1.0.conv1.weight``, ...);
* ``"module:function"``: ``function()`` returns an ``nn.Module`` mapping images (B, C, H, W) in
  [0, 1] to features (B, D).

Checkpoints are mapped onto contrastlab's CIFAR ResNet-18 (3×3 stride-1 stem, no max-pool) and
loaded strictly: a missing or unexpected backbone key, or a shape mismatch such as a 7×7
ImageNet stem, is a one-line :class:`~contrastlab.errors.CheckpointError`. Heads (projector,
predictor, classifier, ``fc``) and momentum copies are ignored. Files are read with
``torch.load(weights_only=True)`` (or safetensors): no arbitrary Python object is unpickled.
The key tables are in docs/encoders.md.
"""

from __future__ import annotations

import importlib
import logging
import pickle
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError
from . import architecture, build_encoder, eval_mode

log = logging.getLogger(__name__)

FORMATS = ("auto", "solo-learn", "lightly", "torchvision", "module")

_MODULE_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
# Keys of a torchvision ResNet that are not part of the feature extractor.
_HEAD_PREFIXES = ("fc.",)
_BN_PARTS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_BLOCK_KEY = re.compile(r"^layer([1-9])\.(\d+)\.(conv1|bn1|conv2|bn2|downsample\.0|downsample\.1)\.(\w+)$")
_SEQ_LAYER_KEY = re.compile(r"^(\d+)\.(\d+)\.(.+)$")
_SEQ_STEM_KEY = re.compile(r"^(\d+)\.(\w+)$")


# ---------------------------------------------------------------- reading files


def _export_hint(path: Path) -> str:
    return (
        "export its weights once (only for a file you trust): python -c \"import torch; "
        f"c = torch.load('{path}', weights_only=False); torch.save(c.get('state_dict', c), '{path.stem}.state_dict.pth')\""
    )


def _read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """All tensors of a checkpoint file and its container ("lightning", "state_dict" or "safetensors")."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path)), "safetensors"
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(f"cannot read {path} ({str(exc).splitlines()[0]})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        if found is None:
            raise CheckpointError(f"cannot read {path}: not a torch checkpoint, or a corrupt one") from None
        # Lightning checkpoints may pickle hyper-parameters (Namespace, DictConfig, ...): never unpickle those here
        raise CheckpointError(
            f"{path} holds Python objects besides tensors ({found.group(1)}), which contrastlab does not unpickle; {_export_hint(path)}"
        ) from None
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path} as a torch checkpoint ({str(exc).splitlines()[0]})") from None
    container = "state_dict"
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj, container = obj["state_dict"], "lightning"
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} holds no state dict (a mapping of names to tensors, or a Lightning checkpoint with 'state_dict'); {_export_hint(path)}")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    return tensors, container


def _backbone_keys(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], bool]:
    """The backbone's tensors with any ``module.`` and ``backbone.`` prefix removed; whether ``backbone.`` was there."""
    tensors = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in tensors.items()}
    # only "backbone." itself: "momentum_backbone." (BYOL, MoCo) is the teacher, not the encoder
    prefixed = {k[len("backbone."):]: v for k, v in tensors.items() if k.startswith("backbone.")}
    return (prefixed, True) if prefixed else (tensors, False)


def _naming(keys: Sequence[str]) -> str | None:
    """"torchvision" (conv1/bn1/layerK names), "sequential" (numbered children) or None."""
    if "conv1.weight" in keys or any(k.startswith("layer1.") for k in keys):
        return "torchvision"
    if any(_SEQ_LAYER_KEY.match(k) for k in keys) and any(_SEQ_STEM_KEY.match(k) for k in keys):
        return "sequential"
    return None


# ---------------------------------------------------------------- key mapping


def _torchvision_target(key: str) -> str | None:
    """contrastlab's name for a torchvision ResNet key, or None when it has no counterpart."""
    if key.startswith("conv1."):
        return "stem.0." + key[len("conv1."):]
    if key.startswith("bn1."):
        return "stem.1." + key[len("bn1."):]
    m = _BLOCK_KEY.match(key)
    if m is None:
        return None
    stage, block, part, leaf = m.groups()
    part = part.replace("downsample", "shortcut")
    return f"stages.{int(stage) - 1}.{block}.{part}.{leaf}"


def _sequential_to_torchvision(keys: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """Map numbered children (lightly) to torchvision names: (key -> torchvision key, unmapped keys).

    The first child with a weight but no BN buffers is conv1, the next child with BN buffers is bn1, and the
    children that hold residual blocks are layer1, layer2, ... in order; this also covers
    backbones that drop the max-pool (shifting the numbers) instead of replacing it by Identity.
    """
    stem: dict[int, set[str]] = {}
    layers: set[int] = set()
    for k in keys:
        if m := _SEQ_LAYER_KEY.match(k):
            layers.add(int(m.group(1)))
        elif m := _SEQ_STEM_KEY.match(k):
            stem.setdefault(int(m.group(1)), set()).add(m.group(2))
    stem_order = sorted(stem)
    conv = next((i for i in stem_order if "weight" in stem[i] and "running_mean" not in stem[i]), None)
    bn = next((i for i in stem_order if "running_mean" in stem[i]), None)
    names = {}
    if conv is not None:
        names[conv] = "conv1"
    if bn is not None:
        names[bn] = "bn1"
    for rank, index in enumerate(sorted(layers)):
        names[index] = f"layer{rank + 1}"
    mapping, unmapped = {}, []
    for k in keys:
        index, _, rest = k.partition(".")
        if index.isdigit() and int(index) in names:
            mapping[k] = f"{names[int(index)]}.{rest}"
        else:
            unmapped.append(k)
    return mapping, unmapped


def _map_state(backbone: dict[str, torch.Tensor], naming: str) -> tuple[dict[str, torch.Tensor], dict[str, str], list[str]]:
    """(contrastlab state dict, contrastlab key -> original key, unmappable original keys)."""
    if naming == "sequential":
        to_tv, unmapped = _sequential_to_torchvision(list(backbone))
    else:
        to_tv, unmapped = {k: k for k in backbone if not k.startswith(_HEAD_PREFIXES)}, []
    state, origin = {}, {}
    for original, tv in to_tv.items():
        target = _torchvision_target(tv)
        if target is None:
            unmapped.append(original)
            continue
        state[target], origin[target] = backbone[original], original
    return state, origin, unmapped


def _load_strict(encoder: nn.Module, state: dict[str, torch.Tensor], origin: dict[str, str], unmapped: list[str], path: Path) -> None:
    """Copy ``state`` into ``encoder``; any missing, unexpected or mis-shaped key is a one-line error."""
    if unmapped:
        raise CheckpointError(
            f"{path}: backbone key '{unmapped[0]}' has no counterpart in contrastlab's CIFAR ResNet-18 "
            f"({len(unmapped)} such keys; is it another architecture?); wrap the model with 'module:function' instead"
        )
    own = {k: v for k, v in encoder.state_dict().items() if not k.startswith("normalize.")}
    for key, value in state.items():
        if key not in own:
            raise CheckpointError(f"{path}: unexpected backbone key '{origin[key]}' (no '{key}' in contrastlab's CIFAR ResNet-18)")
        if value.shape != own[key].shape:
            stem = key == "stem.0.weight" and value.ndim == 4 and value.shape[-1] != own[key].shape[-1]
            what = (
                f"a {value.shape[-2]}x{value.shape[-1]} stem conv (ImageNet-style), but contrastlab's CIFAR ResNet-18 has a 3x3 stride-1 stem; "
                "use a CIFAR checkpoint or wrap the model with 'module:function'"
                if stem else f"shape {tuple(value.shape)}, expected {tuple(own[key].shape)}; use a ResNet-18 checkpoint of matching width and input channels"
            )
            raise CheckpointError(f"{path}: backbone key '{origin[key]}' has {what}")
    for key, target in own.items():
        if key in state:
            continue
        if key.endswith("num_batches_tracked"):  # some exporters drop it; it only matters for momentum=None BN
            state[key] = torch.zeros_like(target)
            continue
        raise CheckpointError(f"{path} lacks the backbone key for contrastlab's '{key}'; export the whole backbone (all conv and BN tensors)")
    encoder.load_state_dict({**state, **{k: v for k, v in encoder.state_dict().items() if k.startswith("normalize.")}}, strict=True)


_SOURCE_NAMING = {"solo-learn": "torchvision", "torchvision": "torchvision", "lightly": "sequential"}


def _from_checkpoint(path: Path, fmt: str, mean, std, in_channels: int) -> tuple[nn.Module, dict[str, Any]]:
    tensors, container = _read_tensors(path)
    backbone, prefixed = _backbone_keys(tensors)
    naming = _naming(list(backbone))
    if naming is None:
        first = ", ".join(list(tensors)[:3])
        raise CheckpointError(f"{path}: no ResNet backbone keys recognized (first keys: {first}); see docs/encoders.md or use 'module:function'")
    if fmt == "auto":
        source = "lightly" if naming == "sequential" else ("solo-learn" if prefixed else "torchvision")
    else:
        source = fmt
        if _SOURCE_NAMING[fmt] != naming:
            found = "numbered nn.Sequential children (lightly)" if naming == "sequential" else "torchvision ResNet names"
            raise CheckpointError(f"{path} was forced to format '{fmt}' but its backbone keys are {found}; use format='auto'")
        if fmt == "solo-learn" and not prefixed:
            raise CheckpointError(f"{path} has no 'backbone.' keys, which a solo-learn checkpoint has; use format='torchvision' or 'auto'")
    state, origin, unmapped = _map_state(backbone, naming)
    conv1 = state.get("stem.0.weight")
    if conv1 is None or conv1.ndim != 4:
        raise CheckpointError(f"{path} lacks the stem conv weight ('conv1.weight' or 'backbone.0.weight'); export the whole backbone")
    width = int(conv1.shape[0])
    encoder = build_encoder("resnet18", width=width, in_channels=in_channels, mean=mean, std=std)
    _load_strict(encoder, state, origin, unmapped, path)
    info = {
        "source": source,
        "path": str(path),
        "format": container,
        "mapped_keys": len(origin),
        "ignored_keys": len(tensors) - len(origin),
        "architecture": architecture("resnet18", width, in_channels, encoder.feature_dim),
        "normalization": {"mean": encoder.normalize.mean.flatten().tolist(), "std": encoder.normalize.std.flatten().tolist()},
    }
    return encoder, info


# ---------------------------------------------------------------- module:function


def _from_module(spec: str, in_channels: int, image_size: int) -> tuple[nn.Module, dict[str, Any]]:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CheckpointError(f"cannot import '{module_name}' for encoder '{spec}' ({exc}); put it on PYTHONPATH") from None
    factory: Any = module
    for part in attr.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise CheckpointError(f"module '{module_name}' has no '{attr}' for encoder '{spec}'")
    if not callable(factory):
        raise CheckpointError(f"'{spec}' is not callable; it must be a function that returns a torch.nn.Module")
    encoder = factory()
    if not isinstance(encoder, nn.Module):
        raise CheckpointError(f"'{spec}' returned {type(encoder).__name__}, not a torch.nn.Module")
    feature_dim = getattr(encoder, "feature_dim", None)
    if not isinstance(feature_dim, int):
        device = next((p.device for p in encoder.parameters()), torch.device("cpu"))
        with eval_mode(encoder), torch.no_grad():  # eval: BN in train mode rejects a batch of one
            out = encoder(torch.full((1, in_channels, image_size, image_size), 0.5, device=device))
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 1:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise CheckpointError(f"'{spec}' must map images (B, C, H, W) to features (B, D), but one image gave {shape}")
        feature_dim = int(out.shape[1])
        encoder.feature_dim = feature_dim  # every consumer reads encoder.feature_dim
    info = {"source": "module", "path": spec, "format": "module", "mapped_keys": 0, "feature_dim": feature_dim}
    return encoder, info


# ---------------------------------------------------------------- entry point


def load_foreign_encoder(
    spec: str | Path,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    in_channels: int = 3,
    format: str = "auto",  # noqa: A002 - the word users know
    image_size: int = 32,
) -> tuple[nn.Module, dict[str, Any]]:
    """Load an encoder trained elsewhere; it maps pixels (B, C, H, W) in [0, 1] to features (B, D).

    spec: a checkpoint path (solo-learn, lightly, torchvision state dict; .ckpt/.pth/.pt or
        .safetensors) or ``"module:function"``.
    mean, std: the input normalization the foreign model was trained with, stored in the
        encoder's Normalize buffers (None: identity; callers pass the downstream data's).
        Ignored for ``module:function``, whose module normalizes by itself.
    in_channels: image channels. image_size: side of the dummy image used to find a module's
        feature_dim when it has no ``feature_dim`` attribute.
    format: "auto" (detect) or one of "solo-learn", "lightly", "torchvision", "module".
    Returns (encoder on the CPU in eval mode, info) with info = {"source", "path", "format"
    (file container: "lightning", "state_dict", "safetensors" or "module"), "mapped_keys", ...}.
    """
    if format not in FORMATS:
        raise CheckpointError(f"unknown encoder format '{format}'; valid: {', '.join(FORMATS)}")
    text = str(spec)
    path = Path(text).expanduser()
    if format == "module" or (format == "auto" and not path.exists() and _MODULE_SPEC.match(text)):
        if not _MODULE_SPEC.match(text):
            raise CheckpointError(f"encoder '{text}' is not of the form 'package.module:function'")
        if mean is not None or std is not None:
            log.debug("encoder %s normalizes its own input; mean/std ignored", text)
        encoder, info = _from_module(text, in_channels, image_size)
    else:
        if not path.is_file():
            raise CheckpointError(f"encoder checkpoint not found: {path} (for a Python encoder write 'package.module:function')")
        encoder, info = _from_checkpoint(path, format, mean, std, in_channels)
    encoder.eval()
    log.info("loaded %s encoder from %s (%d keys mapped)", info["source"], info["path"], info["mapped_keys"])
    return encoder, info
