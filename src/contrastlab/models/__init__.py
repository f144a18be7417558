"""Encoders, heads and the encoder+probe classifier.

Every encoder takes pixels in [0, 1] of shape (B, C, H, W) and normalizes them inside
(``mean``/``std`` are buffers), and returns features of shape (B, ``feature_dim``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn
import torch.nn.functional as F

from ..registry import lookup


class Normalize(nn.Module):
    """(x - mean) / std per channel, with mean and std stored as buffers."""

    def __init__(self, mean: Sequence[float] | None, std: Sequence[float] | None, channels: int):
        super().__init__()
        mean = [0.0] * channels if mean is None else list(mean)
        std = [1.0] * channels if std is None else list(std)
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"mean/std need {channels} entries, got {len(mean)}/{len(std)}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class BasicBlock(nn.Module):
    """Two 3x3 convs with BN; 1x1 conv+BN shortcut when the shape changes."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def _init_weights(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


STEMS = ("cifar", "imagenet")


def resnet_stem(in_channels: int, width: int, stem: str = "cifar", padding: int = 1, relu: bool = True) -> nn.Sequential:
    """The stem: conv, BN, ReLU (Identity when ``relu`` is False), and a max-pool for the ImageNet stem.

    "cifar": 3x3 stride-1 conv with ``padding`` (1; solo-learn's CIFAR stem has 2), no max-pool.
    "imagenet": torchvision's 7x7 stride-2 pad-3 conv and 3x3 stride-2 pad-1 max-pool (``padding`` unused).
    Parameters live in children 0 (conv) and 1 (BN) in every variant: the state dict's keys are the same.
    """
    activation: nn.Module = nn.ReLU(inplace=True) if relu else nn.Identity()
    if stem == "imagenet":
        return nn.Sequential(nn.Conv2d(in_channels, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), activation,
                             nn.MaxPool2d(3, 2, 1))
    if stem != "cifar":
        raise ValueError(f"stem must be one of {', '.join(STEMS)}, got '{stem}'")
    return nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, padding, bias=False), nn.BatchNorm2d(width), activation)


class ResNet(nn.Module):
    """ResNet with BasicBlocks: a stem (CIFAR: 3x3 stride 1, no max-pool; or ImageNet), four stages, global average pool."""

    def __init__(self, blocks: Sequence[int], width: int, in_channels: int, mean, std, stem: str = "cifar",
                 stem_padding: int = 1, stem_relu: bool = True):
        super().__init__()
        self.normalize = Normalize(mean, std, in_channels)
        self.stem = resnet_stem(in_channels, width, stem, stem_padding, stem_relu)
        # Only what differs from the default CIFAR stem is recorded: older checkpoints describe the default.
        self.stem_architecture = {k: v for k, v, default in (("stem", stem, "cifar"), ("stem_padding", stem_padding, 1),
                                                              ("stem_relu", stem_relu, True))
                                  if v != default and not (k == "stem_padding" and stem == "imagenet")}
        stages, in_planes = [], width
        for i, (n_blocks, stride) in enumerate(zip(blocks, (1, 2, 2, 2))):
            planes = width * 2**i
            layers = []
            for s in [stride] + [1] * (n_blocks - 1):
                layers.append(BasicBlock(in_planes, planes, s))
                in_planes = planes
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.feature_dim = in_planes
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(self.normalize(x)))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def resnet18(width: int = 64, mean=None, std=None, in_channels: int = 3, stem: str = "cifar", stem_padding: int = 1,
             stem_relu: bool = True) -> ResNet:
    """ResNet-18; 512-d features and 11,168,832 parameters at width 64 (CIFAR stem; the ImageNet stem's 7x7 conv adds 6,272)."""
    return ResNet([2, 2, 2, 2], width, in_channels, mean, std, stem, stem_padding, stem_relu)


class TinyCNN(nn.Module):
    """Two conv+BN+ReLU layers and a global average pool: a fast stand-in for tests."""

    def __init__(self, width: int = 8, mean=None, std=None, in_channels: int = 3):
        super().__init__()
        self.normalize = Normalize(mean, std, in_channels)
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, 2, 1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(inplace=True),
        )
        self.feature_dim = 2 * width
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(F.adaptive_avg_pool2d(self.body(self.normalize(x)), 1), 1)


def tiny_cnn(width: int = 8, mean=None, std=None, in_channels: int = 3) -> TinyCNN:
    return TinyCNN(width, mean, std, in_channels)


ENCODERS = {"resnet18": resnet18, "tiny_cnn": tiny_cnn}


def build_encoder(name: str, **kwargs: Any) -> nn.Module:
    """Build an encoder by registry name, e.g. ``build_encoder("resnet18", width=16)``."""
    return lookup(ENCODERS, name, "encoder")(**kwargs)


class NormalizedProjection(nn.Module):
    """Linear -> ReLU -> Linear, output L2-normalized: (B, in_dim) -> (B, out_dim)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x), dim=1)


def projection_head(in_dim: int, hidden_dim: int | None = None, out_dim: int = 128) -> NormalizedProjection:
    """The SimCLR/SupCon head; hidden width defaults to ``in_dim`` (512 at width 64)."""
    return NormalizedProjection(in_dim, hidden_dim or in_dim, out_dim)


def linear_classifier(in_dim: int, n_classes: int) -> nn.Linear:
    """The SupCE head and the downstream probe: (B, in_dim) -> (B, n_classes) logits."""
    return nn.Linear(in_dim, n_classes)


def classifier(encoder: nn.Module, head: nn.Module) -> nn.Sequential:
    """Encoder followed by a head; ``parameters()`` lists the encoder's first, then the head's."""
    return nn.Sequential(encoder, head)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode; restore each one's own mode afterwards (mixed modes included)."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def architecture(encoder_name: str, width: int, in_channels: int, feature_dim: int, stem: dict | None = None) -> dict:
    """The description stored with every checkpoint, compared on load. ``stem``: a ResNet's
    ``stem_architecture`` (what differs from the CIFAR stem: "stem", "stem_padding", "stem_relu")."""
    return {"encoder": encoder_name, "width": int(width), "in_channels": int(in_channels), "feature_dim": int(feature_dim), **(stem or {})}


STEM_KEYS = ("stem", "stem_padding", "stem_relu")
STEM_DEFAULTS = {"stem": "cifar", "stem_padding": 1, "stem_relu": True}


def stem_options(arch: dict) -> dict:
    """The ``build_encoder`` keyword arguments of an architecture's stem: only what differs from the
    default CIFAR stem (none for it, so encoders without stem options build as before)."""
    return {k: arch[k] for k in STEM_KEYS if k in arch and arch[k] != STEM_DEFAULTS[k]}


def stem_of(arch: dict) -> dict:
    """An architecture's stem with the defaults filled in, for comparing two architectures."""
    return {k: arch.get(k, STEM_DEFAULTS[k]) for k in STEM_KEYS}
