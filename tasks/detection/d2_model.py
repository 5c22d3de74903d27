"""detectron2 components for augbench's backbones (registered once, under augbench-specific names).

detectron2's own ``build_resnet_backbone`` cannot build the smoke backbone (it asserts
``RES2_OUT_CHANNELS == 64`` for R18/R34 and only knows the 7x7 stem), and ``Res5ROIHeads`` always builds a
Bottleneck ``res5``.  So:

* ``augbench_resnet_backbone`` (BACKBONE_REGISTRY): a detectron2 ``ResNet`` assembled with
  ``ResNet.make_stage`` from ``cfg.MODEL.AUGBENCH`` (``STEM`` ``"standard"`` = detectron2's ``BasicStem`` or
  ``"cifar"`` = :class:`CifarStem`, 3x3 stride-1 conv without max-pool; ``BLOCK`` ``"basic"`` or
  ``"bottleneck"``; ``LAYERS`` blocks per stage) and the usual ``cfg.MODEL.RESNETS`` widths, norm,
  ``STRIDE_IN_1X1``, ``OUT_FEATURES`` and ``FREEZE_AT``.  Module names are detectron2's (``stem.conv1``,
  ``res2.0.conv1.norm``, ``shortcut``), so MoCo's converted keys load by name.
* ``augbench_resnet_fpn_backbone``: detectron2's ``FPN`` over that ResNet (``cfg.MODEL.FPN``), with a
  max-pool top level on the last FPN output (whatever its stride).
* ``AugbenchRes5ROIHeadsExtraNorm`` (ROI_HEADS_REGISTRY): ``Res5ROIHeads`` whose ``res5`` matches the
  backbone's block type and widths, plus MoCo's extra norm after ``res5`` (``Res5ROIHeadsExtraNorm``,
  ``cfg.MODEL.AUGBENCH.EXTRA_NORM``).

Registration is guarded (:func:`register`), because detectron2's registries are process-global.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
from detectron2.config import CfgNode
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY, ROI_HEADS_REGISTRY
from detectron2.modeling.backbone import FPN, Backbone
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem, BottleneckBlock, CNNBlockBase, ResNet
from detectron2.modeling.roi_heads import Res5ROIHeads
from fvcore.nn import weight_init
from torch import nn
from torch.nn import functional as F

BACKBONE_NAME = "augbench_resnet_backbone"
FPN_BACKBONE_NAME = "augbench_resnet_fpn_backbone"
ROI_HEADS_NAME = "AugbenchRes5ROIHeadsExtraNorm"


class CifarStem(CNNBlockBase):
    """The CIFAR stem: 3x3 stride-1 convolution + norm + ReLU, no max-pool (stride 1)."""

    def __init__(self, in_channels: int = 3, out_channels: int = 16, norm: str = "BN") -> None:
        super().__init__(in_channels, out_channels, 1)
        self.conv1 = Conv2d(
            in_channels,
            out_channels,
            kernel_size=3,
            stride=1,
            padding=1,
            bias=False,
            norm=get_norm(norm, out_channels),
        )
        weight_init.c2_msra_fill(self.conv1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu_(self.conv1(x))


def stage_channels(cfg: CfgNode) -> list[int]:
    """Output channels of res2..res5."""
    res2 = cfg.MODEL.RESNETS.RES2_OUT_CHANNELS
    return [res2 * 2**i for i in range(4)]


def _stage_kwargs(cfg: CfgNode, index: int, in_channels: int) -> dict[str, Any]:
    """``make_stage`` arguments of stage ``index`` (0 = res2) for the configured block type."""
    r = cfg.MODEL.RESNETS
    blocks = cfg.MODEL.AUGBENCH.LAYERS[index]
    stride = 1 if index == 0 else 2
    kwargs: dict[str, Any] = {
        "num_blocks": blocks,
        "stride_per_block": [stride] + [1] * (blocks - 1),
        "in_channels": in_channels,
        "out_channels": stage_channels(cfg)[index],
        "norm": r.NORM,
    }
    if cfg.MODEL.AUGBENCH.BLOCK == "basic":
        kwargs["block_class"] = BasicBlock
    else:
        kwargs.update(
            block_class=BottleneckBlock,
            bottleneck_channels=r.NUM_GROUPS * r.WIDTH_PER_GROUP * 2**index,
            stride_in_1x1=r.STRIDE_IN_1X1,
            num_groups=r.NUM_GROUPS,
        )
    return kwargs


def augbench_resnet_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> ResNet:
    """The ResNet trunk described in the module docstring."""
    r = cfg.MODEL.RESNETS
    stem: CNNBlockBase
    if cfg.MODEL.AUGBENCH.STEM == "cifar":
        stem = CifarStem(input_shape.channels, r.STEM_OUT_CHANNELS, r.NORM)
    else:
        stem = BasicStem(input_shape.channels, r.STEM_OUT_CHANNELS, r.NORM)
    stages, in_channels = [], r.STEM_OUT_CHANNELS
    for index in range(4):
        kwargs = _stage_kwargs(cfg, index, in_channels)
        stages.append(ResNet.make_stage(**kwargs))
        in_channels = kwargs["out_channels"]
    return ResNet(stem, stages, out_features=r.OUT_FEATURES, freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT)


def augbench_resnet_fpn_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> Backbone:
    bottom_up = augbench_resnet_backbone(cfg, input_shape)
    in_features = cfg.MODEL.FPN.IN_FEATURES
    top = LastLevelMaxPool()
    last_stride = bottom_up.output_shape()[in_features[-1]].stride
    top.in_feature = f"p{int(math.log2(last_stride))}"
    return FPN(
        bottom_up=bottom_up,
        in_features=in_features,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=top,
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )


class AugbenchRes5ROIHeadsExtraNorm(Res5ROIHeads):
    """``Res5ROIHeads`` with a ``res5`` of the backbone's block type and MoCo's norm after it."""

    @classmethod
    def _build_res5_block(cls, cfg: CfgNode) -> tuple[nn.Sequential, int]:
        kwargs = _stage_kwargs(cfg, 3, stage_channels(cfg)[2])
        return nn.Sequential(*ResNet.make_stage(**kwargs)), kwargs["out_channels"]

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> dict[str, Any]:
        ret: dict[str, Any] = super().from_config(cfg, input_shape)
        if cfg.MODEL.AUGBENCH.EXTRA_NORM:
            channels = stage_channels(cfg)[3]
            ret["res5"].add_module("norm", get_norm(cfg.MODEL.RESNETS.NORM, channels))
        return ret


@functools.cache
def register() -> None:
    """Register the components above once per process (detectron2's registries are global)."""
    for registry, obj in (
        (BACKBONE_REGISTRY, augbench_resnet_backbone),
        (BACKBONE_REGISTRY, augbench_resnet_fpn_backbone),
        (ROI_HEADS_REGISTRY, AugbenchRes5ROIHeadsExtraNorm),
    ):
        if obj.__name__ not in registry:
            registry.register(obj)
