"""Reference models of other toolkits, written by hand from their published layouts, and their
checkpoint formats: what a foreign encoder's features must equal once contrastlab loads it.

torchvision is not installed here, and solo-learn and lightly are not dependencies: these classes
restate the parts of their code that decide the state dict's keys and the forward pass.

* torchvision ``resnet18`` (torchvision/models/resnet.py): conv1 (7x7 stride 2 pad 3), bn1, relu,
  maxpool (3/2/1), layer1..4 of BasicBlocks (conv1 bn1 relu conv2 bn2, ``downsample`` = 1x1 conv +
  BN), avgpool (adaptive, 1), fc.
* solo-learn (solo/methods/base.py) keeps it as ``backbone`` and, for CIFAR, sets
  ``conv1 = Conv2d(3, 64, kernel_size=3, stride=1, padding=2, bias=False)``, ``maxpool = Identity()``
  and ``fc = Identity()``; a Lightning ``.ckpt`` holds ``{"state_dict": {"backbone.<key>": ...}}``.
* lightly's ``ResNetGenerator("resnet-18")`` (lightly/models/resnet.py): conv1 (3x3 stride 1 pad 1),
  bn1, layer1..4 of BasicBlocks whose projection is named ``shortcut``, ``linear``; ``forward``
  applies ``F.relu`` after bn1 and ``F.avg_pool2d(out, 4)`` after layer4. lightly's CIFAR-10
  benchmark uses ``nn.Sequential(*list(resnet.children())[:-1], nn.AdaptiveAvgPool2d(1))`` as the
  backbone: conv1 bn1 layer1..4 pool, without that ReLU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TorchvisionBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class TorchvisionResNet18(nn.Module):
    """torchvision's resnet18 at ``width`` (64 there); ``cifar_padding``: solo-learn's CIFAR stem
    (3x3 stride 1 with that padding, max-pool Identity) instead of the ImageNet stem."""

    def __init__(self, width: int = 64, in_channels: int = 3, cifar_padding: int | None = None, num_classes: int | None = 10):
        super().__init__()
        if cifar_padding is None:
            self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(3, 2, 1)
        else:
            self.conv1 = nn.Conv2d(in_channels, width, 3, 1, cifar_padding, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        in_planes = width
        for i, stride in enumerate((1, 2, 2, 2)):
            planes = width * 2**i
            setattr(self, f"layer{i + 1}", nn.Sequential(TorchvisionBlock(in_planes, planes, stride), TorchvisionBlock(planes, planes, 1)))
            in_planes = planes
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc: nn.Module = nn.Linear(in_planes, num_classes) if num_classes else nn.Identity()

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class LightlyBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class LightlyResNet18(nn.Module):
    """lightly's ``ResNetGenerator("resnet-18")`` with ``base`` = int(64 * width) channels."""

    def __init__(self, base: int = 64, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, base, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        in_planes = base
        for i, stride in enumerate((1, 2, 2, 2)):
            planes = base * 2**i
            setattr(self, f"layer{i + 1}", nn.Sequential(LightlyBlock(in_planes, planes, stride), LightlyBlock(planes, planes, 1)))
            in_planes = planes
        self.linear = nn.Linear(in_planes, num_classes)

    def features(self, x):
        """What ``forward`` computes before ``linear`` (32x32 inputs: layer4 is 4x4)."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return F.avg_pool2d(out, 4).view(out.size(0), -1)

    def forward(self, x):
        return self.linear(self.features(x))


def lightly_backbone(resnet: nn.Module) -> nn.Sequential:
    """lightly's benchmark backbone: the children but the last, then a global average pool."""
    return nn.Sequential(*list(resnet.children())[:-1], nn.AdaptiveAvgPool2d(1))


def randomize(model: nn.Module, seed: int) -> nn.Module:
    """Random weights and non-trivial BN statistics (so that every BN tensor matters), in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=generator) * (2 / fan_in) ** 0.5)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=generator) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=generator) * 0.4 - 0.2)
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=generator) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=generator) * 1.5 + 0.5)
                m.num_batches_tracked.fill_(7)
    return model.eval()


def solo_learn_checkpoint(backbone: nn.Module) -> dict:
    """A solo-learn Lightning checkpoint: the backbone under ``backbone.``, heads and a momentum copy beside it."""
    state = {f"backbone.{k}": v.clone() for k, v in backbone.state_dict().items()}
    dim = 8 * backbone.bn1.num_features
    heads = {"projector.0.weight": torch.randn(16, dim), "projector.0.bias": torch.zeros(16),
             "classifier.weight": torch.randn(10, dim), "classifier.bias": torch.zeros(10),
             "momentum_backbone.conv1.weight": torch.randn(backbone.bn1.num_features, 3, 7, 7)}
    return {"state_dict": {**state, **heads}, "epoch": 999, "global_step": 195000, "pytorch-lightning_version": "2.0.0",
            "hyper_parameters": {"method": "byol", "backbone": {"name": "resnet18"}}}


def lightly_checkpoint(backbone: nn.Module, dim: int) -> dict:
    """A lightly LightningModule's checkpoint: ``backbone.*`` and ``projection_head.*``."""
    state = {f"backbone.{k}": v.clone() for k, v in backbone.state_dict().items()}
    state.update({"projection_head.layers.0.weight": torch.randn(16, dim), "projection_head.layers.0.bias": torch.zeros(16)})
    return {"state_dict": state, "epoch": 199, "global_step": 1000}


def max_relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| relative to max |b|."""
    return float((a - b).abs().max() / b.abs().max())
