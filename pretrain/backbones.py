"""Backbones: torchvision ResNets, the CIFAR variant and a narrow ResNet for CPU smoke runs.

Every backbone is wrapped in :class:`Backbone`, whose ``forward`` maps float images in [0, 1] of shape
[B, 3, H, W] to pooled features [B, feature_dim]: it normalises with the ImageNet mean/std first (as
torchvision's pretrained models expect), so checkpoints stay interchangeable with torchvision-style
state dicts (the normalisation has no state).  ``Backbone.net`` is the torchvision-structured ResNet
(``conv1, bn1, layer1..4`` keys, ``fc`` replaced by identity) and is what gets exported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from core.registry import Registry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Backbone(nn.Module):
    """Input normalisation + a ResNet trunk with global average pooling.

    Shapes: ``forward(x: [B, 3, H, W] float in [0, 1]) -> [B, feature_dim]``.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, net: ResNet, feature_dim: int, name: str) -> None:
        super().__init__()
        net.fc = nn.Identity()
        self.net = net
        self.feature_dim = feature_dim
        self.name = name
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def _cifar_stem(net: ResNet, width: int) -> ResNet:
    """3x3 stride-1 first convolution and no max-pool (He et al. 2016's CIFAR stem, SimCLR's CIFAR setup)."""
    net.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


def _narrow_resnet(block: type[BasicBlock | Bottleneck], layers: list[int], width: int) -> ResNet:
    """A torchvision ResNet whose stage widths are ``width * (1, 2, 4, 8)`` instead of 64 * (...).

    Built through torchvision's own ``ResNet`` class (same module names and state-dict keys), by
    rebuilding the stem and stages with the reduced width.
    """
    net = ResNet(block, layers)
    net.inplanes = width
    net.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    net.bn1 = nn.BatchNorm2d(width)
    net.layer1 = net._make_layer(block, width, layers[0])
    net.layer2 = net._make_layer(block, width * 2, layers[1], stride=2)
    net.layer3 = net._make_layer(block, width * 4, layers[2], stride=2)
    net.layer4 = net._make_layer(block, width * 8, layers[3], stride=2)
    for m in net.modules():  # torchvision's init, re-applied to the rebuilt modules
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
    return net


@dataclass(frozen=True)
class BackboneSpec:
    """A registered backbone: how to build it and its pooled feature dimension."""

    build: Callable[[], ResNet]
    feature_dim: int
    description: str
    stem_width: int = 64


def build_backbone_registry() -> Registry[BackboneSpec]:
    reg: Registry[BackboneSpec] = Registry("backbone")
    reg.register(
        "resnet18",
        BackboneSpec(lambda: torchvision.models.resnet18(weights=None), 512, "torchvision ResNet-18"),
    )
    reg.register(
        "resnet50",
        BackboneSpec(lambda: torchvision.models.resnet50(weights=None), 2048, "torchvision ResNet-50"),
    )
    reg.register(
        "cifar_resnet18",
        BackboneSpec(
            lambda: _cifar_stem(torchvision.models.resnet18(weights=None), 64),
            512,
            "ResNet-18 with the CIFAR stem (3x3 conv, stride 1, no max-pool)",
        ),
    )
    reg.register(
        "cifar_resnet50",
        BackboneSpec(
            lambda: _cifar_stem(torchvision.models.resnet50(weights=None), 64),
            2048,
            "ResNet-50 with the CIFAR stem (3x3 conv, stride 1, no max-pool)",
        ),
    )
    reg.register(
        "narrow_resnet18",
        BackboneSpec(
            lambda: _cifar_stem(_narrow_resnet(BasicBlock, [2, 2, 2, 2], 16), 16),
            128,
            "width-16 ResNet-18 with the CIFAR stem (0.7M parameters; CPU smoke runs)",
            stem_width=16,
        ),
    )
    return reg


BACKBONES = build_backbone_registry()


def build_backbone(name: str) -> Backbone:
    """Instantiate the registered backbone ``name`` (randomly initialised)."""
    spec = BACKBONES.get(name)
    return Backbone(spec.build(), spec.feature_dim, name)
