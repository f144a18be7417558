"""Encoders not trained by contrastlab, loaded so that every analysis can run on them.

A spec is one of

* a solo-learn checkpoint (PyTorch Lightning ``.ckpt`` with ``"state_dict"``, backbone keys in
  torchvision's ResNet naming under ``backbone.``: ``backbone.conv1.weight``,
  ``backbone.layer2.0.downsample.0.weight``, ...);
* a lightly checkpoint: a backbone ``nn.Sequential`` of a ResNet's children (numbered keys,
  ``backbone.0.weight`` is conv1), from torchvision's resnet18 or lightly's CIFAR
  ``ResNetGenerator("resnet-18")``, or a ``ResNetGenerator`` model's own state dict
  (``conv1``/``bn1``/``layerK.B.shortcut``/``linear``), as a Lightning checkpoint or a bare state dict;
* a plain torchvision-style ResNet-18 state dict (``conv1.weight``, ``layer1.0.conv1.weight``, ...);
* ``"module:function"``: ``function()`` returns an ``nn.Module`` mapping images (B, C, H, W) to
  features (B, D).

Checkpoints are mapped onto contrastlab's ResNet-18 with the stem the source model computes:
the CIFAR stem (3×3 stride 1, no max-pool; padding 2 for solo-learn, whose CIFAR stem is
``Conv2d(3, 64, 3, 1, padding=2)``), torchvision's ImageNet stem (7×7 stride 2 + max-pool) when
the stem conv is 7×7, and no stem ReLU for the ``nn.Sequential`` children of lightly's
``ResNetGenerator`` (whose ReLU is a function call of ``forward``, not a child). The stem is
recorded in the encoder's architecture. Loading is strict: a missing or unexpected backbone key
or a shape mismatch is a one-line :class:`~contrastlab.errors.CheckpointError`. Heads
(projector, predictor, classifier, ``fc``, ``linear``) and momentum copies are ignored. Files are
read with ``torch.load(weights_only=True)`` (or safetensors): no arbitrary Python object is
unpickled. The key tables are in docs/encoders.md.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import logging
import pickle
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError
from . import Normalize, architecture, build_encoder, eval_mode
from .normalization import has_normalization, set_input_normalization

log = logging.getLogger(__name__)

FORMATS = ("auto", "solo-learn", "lightly", "torchvision", "module")

MODULE_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")  # an encoder given as module:function
# Keys of a torchvision ResNet (fc) or a lightly ResNetGenerator (linear) that are not part of the feature extractor.
_HEAD_PREFIXES = ("fc.", "linear.")
_BLOCK_KEY = re.compile(r"^layer([1-9])\.(\d+)\.(conv1|bn1|conv2|bn2|downsample\.[01]|shortcut\.[01])\.(\w+)$")
_SEQ_LAYER_KEY = re.compile(r"^(\d+)\.(\d+)\.(.+)$")
_SEQ_STEM_KEY = re.compile(r"^(\d+)\.(\w+)$")
# solo-learn replaces torchvision's stem for CIFAR by Conv2d(3, 64, kernel_size=3, stride=1, padding=2) (solo/methods/base.py).
SOLO_LEARN_CIFAR_PADDING = 2


# ---------------------------------------------------------------- reading files


def export_command(path: Path) -> str:
    """A command that writes the tensors of any torch file (a Lightning checkpoint, a pickled whole
    module, a dict) as a plain state dict beside it; run it only on a file you trust."""
    out = path.with_name(path.stem + ".state_dict.pth")
    code = (f"import torch; c = torch.load(r'{path}', map_location='cpu', weights_only=False); "
            "s = c.state_dict() if isinstance(c, torch.nn.Module) else c.get('state_dict', c); "
            f"torch.save({{k: v for k, v in s.items() if isinstance(v, torch.Tensor)}}, r'{out}')")
    return f'python -c "{code}"'


def _export_hint(path: Path) -> str:
    return f"export its weights once (only for a file you trust): {export_command(path)}"


def _is_text(head: bytes) -> bool:
    """Whether the first bytes of a file are text (UTF-8 without NUL): torch and safetensors files are not."""
    if not head or b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3  # a character cut by the end of the sample
    return True


def _torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)`` with every failure a one-line CheckpointError."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        if found is None:
            raise CheckpointError(f"cannot read {path}: not a torch checkpoint, or a corrupt one") from None
        # Lightning checkpoints may pickle hyper-parameters (Namespace, DictConfig, ...), a whole model its classes:
        # never unpickle those here
        raise CheckpointError(
            f"{path} holds Python objects besides tensors ({found.group(1)}), which contrastlab does not unpickle; {_export_hint(path)}"
        ) from None
    except Exception as exc:  # noqa: BLE001 - torch.load raises many types on foreign bytes (KeyError, RuntimeError, ...)
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"cannot read {path} as a torch checkpoint ({detail}); it is not one, or a corrupt one") from None


def _read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """All tensors of a checkpoint file and its container ("lightning", "state_dict" or "safetensors")."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if not head:
        raise CheckpointError(f"{path} is an empty file, not a checkpoint")
    if _is_text(head):
        raise CheckpointError(f"{path} is a text file, not a checkpoint; give a .ckpt/.pth/.pt/.safetensors file or 'package.module:function'")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path)), "safetensors"
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(f"cannot read {path} ({str(exc).splitlines()[0]})") from None
    obj = _torch_load(path)
    container = "state_dict"
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj, container = obj["state_dict"], "lightning"
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        nested = [k for k, v in obj.items() if isinstance(v, dict) and any(isinstance(t, torch.Tensor) for t in v.values())] \
            if isinstance(obj, dict) else []
        where = f" (its tensors are under '{nested[0]}')" if nested else ""
        raise CheckpointError(f"{path} holds a {type(obj).__name__}{where}, not a state dict (a mapping of names to tensors, "
                              f"or a Lightning checkpoint with 'state_dict'); save the backbone's state_dict() instead")
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


def _sequential_to_torchvision(keys: Sequence[str]) -> tuple[dict[str, str], list[str], bool]:
    """Map numbered children (lightly) to torchvision names: (key -> torchvision key, unmapped keys,
    whether a child sits between bn1 and layer1, i.e. the stem has its ReLU).

    The first child with a weight but no BN buffers is conv1, the next child with BN buffers is bn1, and the
    children that hold residual blocks are layer1, layer2, ... in order. torchvision's children are
    conv1 bn1 relu maxpool layer1..4 (a backbone may drop the max-pool, shifting the numbers); those of
    lightly's ``ResNetGenerator`` are conv1 bn1 layer1..4 linear: its stem ReLU is ``F.relu`` in
    ``ResNet.forward``, so ``nn.Sequential(*children)`` computes the stem without it.
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
    relu = bn is None or not layers or min(layers) - bn > 1
    return mapping, unmapped, relu


def _map_state(backbone: dict[str, torch.Tensor], naming: str) -> tuple[dict[str, torch.Tensor], dict[str, str], list[str], bool]:
    """(contrastlab state dict, contrastlab key -> original key, unmappable original keys, stem ReLU)."""
    relu = True
    if naming == "sequential":
        to_tv, unmapped, relu = _sequential_to_torchvision(list(backbone))
    else:
        to_tv, unmapped = {k: k for k in backbone if not k.startswith(_HEAD_PREFIXES)}, []
    state, origin = {}, {}
    for original, tv in to_tv.items():
        target = _torchvision_target(tv)
        if target is None:
            unmapped.append(original)
            continue
        state[target], origin[target] = backbone[original], original
    return state, origin, unmapped, relu


def _shape_problem(key: str, found: torch.Tensor, own: torch.Tensor) -> str:
    if key == "stem.0.weight" and found.ndim == 4 and found.shape[-1] not in (3, 7):
        return (f"a {found.shape[-2]}x{found.shape[-1]} stem conv, neither the CIFAR (3x3) nor the ImageNet (7x7) stem "
                "of a ResNet-18; wrap the model with 'module:function'")
    return f"shape {tuple(found.shape)}, expected {tuple(own.shape)}; use a ResNet-18 checkpoint of matching width and input channels"


def _load_strict(encoder: nn.Module, state: dict[str, torch.Tensor], origin: dict[str, str], unmapped: list[str], path: Path) -> None:
    """Copy ``state`` into ``encoder``; any missing, unexpected or mis-shaped key is a one-line error."""
    if unmapped:
        raise CheckpointError(
            f"{path}: backbone key '{unmapped[0]}' has no counterpart in contrastlab's ResNet-18 "
            f"({len(unmapped)} such keys; is it another architecture?); wrap the model with 'module:function' instead"
        )
    own = {k: v for k, v in encoder.state_dict().items() if not k.startswith("normalize.")}
    for key, value in state.items():
        if key not in own:
            raise CheckpointError(f"{path}: unexpected backbone key '{origin[key]}' (no '{key}' in contrastlab's ResNet-18)")
        if value.shape != own[key].shape:
            raise CheckpointError(f"{path}: backbone key '{origin[key]}' has {_shape_problem(key, value, own[key])}")
    for key, target in own.items():
        if key in state:
            continue
        if key.endswith("num_batches_tracked"):  # some exporters drop it; it only matters for momentum=None BN
            state[key] = torch.zeros_like(target)
            continue
        raise CheckpointError(f"{path} lacks the backbone key for contrastlab's '{key}'; export the whole backbone (all conv and BN tensors)")
    encoder.load_state_dict({**state, **{k: v for k, v in encoder.state_dict().items() if k.startswith("normalize.")}}, strict=True)


def _source(fmt: str, naming: str, prefixed: bool, keys: Sequence[str], path: Path) -> str:
    """The toolkit a checkpoint's keys come from (checked against a forced ``fmt``)."""
    shortcut = any(".shortcut." in k for k in keys)  # lightly's ResNetGenerator names its projection shortcut so
    detected = "lightly" if naming == "sequential" or shortcut else ("solo-learn" if prefixed else "torchvision")
    if fmt == "auto" or fmt == detected:
        return detected
    if fmt == "lightly" or detected == "lightly":
        found = "numbered nn.Sequential children (lightly)" if naming == "sequential" else (
            "lightly ResNetGenerator names (shortcut)" if shortcut else "torchvision ResNet names")
        raise CheckpointError(f"{path} was forced to format '{fmt}' but its backbone keys are {found}; use format='auto'")
    if fmt == "solo-learn" and not prefixed:
        raise CheckpointError(f"{path} has no 'backbone.' keys, which a solo-learn checkpoint has; use format='torchvision' or 'auto'")
    return fmt


def _stem(source: str, conv1: torch.Tensor, relu: bool, stem_padding: int | None) -> dict[str, Any]:
    """The stem the source model computes, as ``build_encoder`` options (only what differs from the CIFAR stem)."""
    options: dict[str, Any] = {}
    if conv1.shape[-1] == 7:
        options["stem"] = "imagenet"
    elif stem_padding is not None:
        options["stem_padding"] = int(stem_padding)
    elif source == "solo-learn":
        options["stem_padding"] = SOLO_LEARN_CIFAR_PADDING
    if not relu:
        options["stem_relu"] = False
    return {k: v for k, v in options.items() if not (k == "stem_padding" and v == 1)}


def _from_checkpoint(path: Path, fmt: str, mean, std, in_channels: int, stem_padding: int | None) -> tuple[nn.Module, dict[str, Any]]:
    tensors, container = _read_tensors(path)
    backbone, prefixed = _backbone_keys(tensors)
    naming = _naming(list(backbone))
    if naming is None:
        first = ", ".join(list(tensors)[:3])
        raise CheckpointError(f"{path}: no ResNet backbone keys recognized (first keys: {first}); see docs/encoders.md or use 'module:function'")
    source = _source(fmt, naming, prefixed, list(backbone), path)
    state, origin, unmapped, relu = _map_state(backbone, naming)
    conv1 = state.get("stem.0.weight")
    if conv1 is None or conv1.ndim != 4:
        raise CheckpointError(f"{path} lacks the stem conv weight ('conv1.weight' or 'backbone.0.weight'); export the whole backbone")
    width = int(conv1.shape[0])
    stem = _stem(source, conv1, relu, stem_padding)
    encoder = build_encoder("resnet18", width=width, in_channels=in_channels, mean=mean, std=std, **stem)
    _load_strict(encoder, state, origin, unmapped, path)
    info = {
        "source": source,
        "path": str(path),
        "format": container,
        "mapped_keys": len(origin),
        "ignored_keys": len(tensors) - len(origin),
        "architecture": architecture("resnet18", width, in_channels, encoder.feature_dim, encoder.stem_architecture),
        "normalization": {"mean": encoder.normalize.mean.flatten().tolist(), "std": encoder.normalize.std.flatten().tolist()},
    }
    return encoder, info


# ---------------------------------------------------------------- module:function


class ModuleEncoder(nn.Module):
    """A ``module:function`` encoder behind contrastlab's input normalization: pixels (B, C, H, W) in
    [0, 1] -> ``normalize`` -> the module -> features (B, feature_dim)."""

    def __init__(self, net: nn.Module, normalize: Normalize, feature_dim: int):
        super().__init__()
        self.normalize = normalize
        self.net = net
        self.feature_dim = feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


# spec -> the module its function returned (checked to return the same weights twice): every stage of a
# process, and each of its units, reads this one encoder instead of calling the function again.
_MODULES: dict[str, nn.Module] = {}


def _factory(spec: str) -> Any:
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
        raise CheckpointError(f"{spec} is a {type(factory).__name__}, not a function; it must be a function that returns an nn.Module")
    try:
        required = [p.name for p in inspect.signature(factory).parameters.values()
                    if p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    except (TypeError, ValueError):  # builtins without a signature: the call below tells
        required = []
    if required:
        raise CheckpointError(f"{spec} needs arguments ({', '.join(required)}); give a function that takes none and returns the encoder")
    return factory


def _call(spec: str, factory: Any) -> nn.Module:
    try:
        made = factory()
    except TypeError as exc:
        raise CheckpointError(f"{spec} cannot be called without arguments ({str(exc).splitlines()[0]}); "
                              "give a function that takes none and returns the encoder") from None
    except Exception as exc:  # noqa: BLE001 - the user's code: its failure, in one line
        raise CheckpointError(f"calling {spec} failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    if not isinstance(made, nn.Module):
        raise CheckpointError(f"{spec} returned a {type(made).__name__}, not an nn.Module encoder mapping (B, C, H, W) to (B, D)")
    return made


def _first_difference(a: nn.Module, b: nn.Module) -> str | None:
    """The first state-dict entry in which two modules differ (None: same keys, shapes and values)."""
    sa, sb = a.state_dict(), b.state_dict()
    if list(sa) != list(sb):
        return next((k for k in sa if k not in sb), "the list of tensors")
    return next((k for k in sa if sa[k].shape != sb[k].shape or not torch.equal(sa[k], sb[k])), None)


def _module(spec: str, in_channels: int, image_size: int) -> nn.Module:
    """The module ``spec`` returns, loaded once per process: checked to map images to features, and
    refused when a second call gives different weights (each stage would see another encoder)."""
    if spec not in _MODULES:
        factory = _factory(spec)
        first = _call(spec, factory)
        _feature_dim(spec, _normalized(first, None, None, in_channels), first, in_channels, image_size)
        differs = _first_difference(first, _call(spec, factory))
        if differs is not None:
            raise CheckpointError(f"{spec} returned different weights on two calls ('{differs}' differs); make it deterministic "
                                  "(seed it, or load saved weights) so that every stage sees the same encoder")
        _MODULES[spec] = first
    return copy.deepcopy(_MODULES[spec])


def _normalized(net: nn.Module, mean, std, in_channels: int) -> nn.Module:
    """``net`` with its own ``normalize`` buffers (replaced by ``mean``/``std`` when given), else behind a Normalize."""
    if has_normalization(net):
        if mean is not None and std is not None:
            set_input_normalization(net, mean, std)
        return net
    return ModuleEncoder(net, Normalize(mean, std, in_channels), 0)


def _feature_dim(spec: str, encoder: nn.Module, net: nn.Module, in_channels: int, image_size: int) -> int:
    """D of an encoder mapping (B, C, H, W) to (B, D), from two dummy images (eval mode, no gradients)."""
    device = next((p.device for p in net.parameters()), torch.device("cpu"))
    shape = (2, in_channels, image_size, image_size)
    problem = None
    try:
        with eval_mode(encoder), torch.no_grad():  # eval: BN in train mode rejects a batch of one
            out = encoder.to(device)(torch.full(shape, 0.5, device=device))
    except Exception as exc:  # noqa: BLE001 - any failure of a foreign forward, reported in one line
        problem = f"images {shape} raised {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    else:
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != shape[0]:
            problem = f"images {shape} gave {tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}"
    if problem is not None:
        raise CheckpointError(f"{spec} returned a {type(net).__name__}, not an encoder mapping (B, C, H, W) to (B, D) ({problem})")
    return int(out.shape[1])


def _from_module(spec: str, in_channels: int, image_size: int, mean, std) -> tuple[nn.Module, dict[str, Any]]:
    """The module of ``spec`` with its input normalization: its own ``normalize`` buffers (replaced by
    ``mean``/``std`` when given), else a :class:`ModuleEncoder` normalizing with ``mean``/``std``."""
    net = _module(spec, in_channels, image_size)
    encoder = _normalized(net, mean, std, in_channels)
    declared = getattr(net, "feature_dim", None)
    feature_dim = _feature_dim(spec, encoder, net, in_channels, image_size)
    if isinstance(declared, int) and declared != feature_dim:
        raise CheckpointError(f"{spec} says feature_dim={declared} but returns {feature_dim} features per image")
    encoder.feature_dim = feature_dim  # every consumer reads encoder.feature_dim
    normalization = {"mean": encoder.normalize.mean.flatten().tolist(), "std": encoder.normalize.std.flatten().tolist()}
    info = {"source": "module", "path": spec, "format": "module", "mapped_keys": 0, "feature_dim": feature_dim,
            "architecture": None, "normalization": normalization}
    return encoder.cpu(), info


# ---------------------------------------------------------------- entry point


def load_foreign_encoder(
    spec: str | Path,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    in_channels: int = 3,
    format: str = "auto",  # noqa: A002 - the word users know
    image_size: int = 32,
    stem_padding: int | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Load an encoder trained elsewhere; it maps pixels (B, C, H, W) in [0, 1] to features (B, D).

    spec: a checkpoint path (solo-learn, lightly, torchvision state dict; .ckpt/.pth/.pt or
        .safetensors) or ``"module:function"``.
    mean, std: the input normalization the foreign model was trained with, stored in the
        encoder's Normalize buffers (None: identity; the stages pass the downstream data's when
        the user gives none). A ``module:function`` module receives its pixels normalized so,
        unless it holds its own ``normalize`` buffers (which ``mean``/``std`` then replace).
    in_channels: image channels. image_size: side of the dummy images that check a module's output.
    format: "auto" (detect) or one of "solo-learn", "lightly", "torchvision", "module".
    stem_padding: the CIFAR stem conv's padding when the file does not tell (None: 2 for
        solo-learn, 1 otherwise).
    Returns (encoder on the CPU in eval mode, info) with info = {"source", "path", "format"
    (file container: "lightning", "state_dict", "safetensors" or "module"), "mapped_keys",
    "architecture", "normalization", ...}.
    """
    if format not in FORMATS:
        raise CheckpointError(f"unknown encoder format '{format}'; valid: {', '.join(FORMATS)}")
    text = str(spec)
    path = Path(text).expanduser()
    if format == "module" or (format == "auto" and not path.exists() and MODULE_SPEC.match(text)):
        if not MODULE_SPEC.match(text):
            raise CheckpointError(f"encoder '{text}' is not of the form 'package.module:function'")
        encoder, info = _from_module(text, in_channels, image_size, mean, std)
    else:
        if not path.is_file():
            what = f"{path} is a directory, not a checkpoint" if path.is_dir() else f"encoder checkpoint not found: {path}"
            raise CheckpointError(f"{what} (for a Python encoder write 'package.module:function')")
        encoder, info = _from_checkpoint(path, format, mean, std, in_channels, stem_padding)
    encoder.eval()
    log.info("loaded %s encoder from %s (%d keys mapped)", info["source"], info["path"], info["mapped_keys"])
    return encoder, info
