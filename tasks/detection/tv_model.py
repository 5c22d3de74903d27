"""torchvision detectors for the detection protocols (the ``torchvision`` backend's models).

* **C4** (Faster / Mask R-CNN, as detectron2 assembles it): the ResNet's stem and ``layer1..3`` (detectron2's
  ``res2..res4``) are the backbone, one feature map at the stride of ``layer3``; the RPN and a single-level
  RoIAlign read it; ``layer4`` (``res5``) runs per region as the ROI head, followed by MoCo's extra norm
  (``Res5ROIHeadsExtraNorm``), then spatial mean -> ``FastRCNNPredictor``.  Mask R-CNN C4 applies the same
  ``res5`` + norm module (shared weights) to the positive regions and predicts masks with a 2x deconvolution
  (``MaskRCNNPredictor``), as detectron2's ``MaskRCNNConvUpsampleHead`` with no convolutions does.
* **FPN** (Mask R-CNN): torchvision's ``BackboneWithFPN`` over the protocol's ResNet stages with norm layers
  in the FPN, a 4conv1fc box head and a 4-conv mask head, all with norms (the SyncBN Mask R-CNN recipe).

Norms are ``BatchNorm2d`` (SyncBN on one process is plain BN); nothing is frozen (FREEZE_AT 0).  The
backbone architecture is the registry backbone's own (any stem: the CIFAR stem of the smoke backbone keeps
its stride 1), rebuilt from :func:`pretrain.backbones.build_backbone`, and the pretrained tensors are loaded
by name with a completeness check (:func:`load_backbone`).  Inputs are RGB in [0, 1], normalised with
ImageNet's mean/std inside the model (``GeneralizedRCNNTransform``), like ``Backbone.forward``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import partial

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import AnchorGenerator
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.models.resnet import ResNet
from torchvision.ops import MultiScaleRoIAlign, roi_align
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from pretrain.backbones import IMAGENET_MEAN, IMAGENET_STD, build_backbone
from tasks.detection.convert import check_complete
from tasks.detection.protocol import DetProtocol


def stage_channels(net: ResNet) -> list[int]:
    """Output channels of ``layer1..layer4``."""
    out = []
    for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
        last = layer[-1]
        out.append(last.bn3.num_features if hasattr(last, "bn3") else last.bn2.num_features)
    return out


def stem_stride(net: ResNet) -> int:
    """Stride of the stem (conv1 + max-pool): 4 for torchvision's, 1 for the CIFAR stem."""
    conv_stride = net.conv1.stride[0]
    return conv_stride * (1 if isinstance(net.maxpool, nn.Identity) else 2)


class C4Trunk(nn.Module):
    """Stem + ``layer1..3`` of a torchvision ResNet -> ``{"0": res4 features}``."""

    def __init__(self, net: ResNet) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3 = net.layer1, net.layer2, net.layer3
        self.out_channels = stage_channels(net)[2]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return {"0": self.layer3(self.layer2(self.layer1(x)))}


class Res5Head(nn.Module):
    """``layer4`` applied per region, then the extra norm: ``[R, C4, S, S] -> [R, C5, S/2, S/2]``."""

    def __init__(self, layer4: nn.Module, channels: int, extra_norm: bool) -> None:
        super().__init__()
        self.layer4 = layer4
        self.norm: nn.Module = nn.BatchNorm2d(channels) if extra_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self.norm(self.layer4(x)))


class C4BoxHead(nn.Module):
    """Region features for the box predictor: ``res5`` + norm, then spatial mean -> ``[R, C5]``."""

    def __init__(self, head: Res5Head) -> None:
        super().__init__()
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x).mean(dim=(2, 3))


class C4MaskHead(nn.Module):
    """Region features for the mask predictor: the box head's ``res5`` + norm (shared weights)."""

    def __init__(self, head: Res5Head) -> None:
        super().__init__()
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self.head(x))


class AlignedRoIPool(MultiScaleRoIAlign):
    """detectron2's ``ROIAlignV2`` pooler: RoIAlign with ``aligned=True`` (half-pixel offset) on feature
    maps of known ``strides``; with several levels each box is pooled from level
    ``floor(4 + log2(sqrt(area) / 224))`` clamped to the available ones (detectron2's
    ``assign_boxes_to_levels``).  A ``MultiScaleRoIAlign`` subclass only so torchvision's detectors take
    it."""

    def __init__(self, featmap_names: list[str], output_size: int, strides: list[int]) -> None:
        super().__init__(featmap_names, output_size, 0)
        self.strides = strides

    def forward(
        self, x: dict[str, torch.Tensor], boxes: list[torch.Tensor], image_shapes: list[tuple[int, int]]
    ) -> torch.Tensor:
        feats = [x[name] for name in self.featmap_names]
        index = [torch.full((len(b), 1), i, dtype=b.dtype, device=b.device) for i, b in enumerate(boxes)]
        rois = torch.cat([torch.cat(index), torch.cat(boxes)], dim=1)
        size = self.output_size
        if len(feats) == 1:
            return roi_align(feats[0], rois, size, 1.0 / self.strides[0], 0, aligned=True)
        log2s = [int(math.log2(s)) for s in self.strides]
        side = torch.sqrt((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2]))
        level = torch.floor(4 + torch.log2(side / 224 + 1e-8)).clamp(log2s[0], log2s[-1]).long()
        out = feats[0].new_zeros((len(rois), feats[0].shape[1], *size))
        for feat, stride, lv in zip(feats, self.strides, log2s, strict=True):
            idx = torch.nonzero(level == lv).squeeze(1)
            out[idx] = roi_align(feat, rois[idx], size, 1.0 / stride, 0, aligned=True)
        return out


def _init_predictors(box: FastRCNNPredictor, mask: MaskRCNNPredictor | None) -> None:
    """detectron2's initialisation of the output layers: N(0, 0.01) class scores, N(0, 0.001) box deltas and
    mask logits, zero biases (torchvision's defaults start much larger)."""
    for layer, std in ((box.cls_score, 0.01), (box.bbox_pred, 0.001)):
        nn.init.normal_(layer.weight, std=std)
        nn.init.zeros_(layer.bias)
    if mask is not None:
        nn.init.normal_(mask.mask_fcn_logits.weight, std=0.001)
        nn.init.zeros_(mask.mask_fcn_logits.bias)


def _transform(p: DetProtocol, size_divisible: int) -> GeneralizedRCNNTransform:
    return GeneralizedRCNNTransform(
        p.min_size_train,
        p.max_size_train,
        list(IMAGENET_MEAN),
        list(IMAGENET_STD),
        size_divisible=size_divisible,
    )


def build_tv_detector(p: DetProtocol, backbone_name: str, num_classes: int) -> GeneralizedRCNN:
    """A randomly initialised detector of protocol ``p`` on the registry backbone ``backbone_name`` with
    ``num_classes`` object classes (see the module docstring)."""
    net = build_backbone(backbone_name).net
    channels = stage_channels(net)
    res5_stride = stem_stride(net) * 8
    common = dict(
        rpn_pre_nms_top_n_train=p.rpn_pre_nms_train,
        rpn_post_nms_top_n_train=p.rpn_post_nms_train,
        rpn_pre_nms_top_n_test=p.rpn_pre_nms_test,
        rpn_post_nms_top_n_test=p.rpn_post_nms_test,
        rpn_batch_size_per_image=p.rpn_batch_per_image,
        box_batch_size_per_image=p.roi_batch_per_image,
        box_positive_fraction=p.roi_positive_fraction,
        box_score_thresh=p.score_thresh_test,
        box_nms_thresh=p.nms_thresh_test,
        box_detections_per_img=p.detections_per_image,
        min_size=p.min_size_train,
        max_size=p.max_size_train,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
    )
    model: GeneralizedRCNN
    mask_predictor = None
    if p.arch == "c4":
        trunk = C4Trunk(net)
        anchors = AnchorGenerator((p.anchor_sizes[0],), (p.aspect_ratios,))
        head = Res5Head(net.layer4, channels[3], p.extra_norm_after_res5)
        res4_stride = stem_stride(net) * 4
        box_predictor = FastRCNNPredictor(channels[3], num_classes + 1)
        kwargs = dict(
            common,
            rpn_anchor_generator=anchors,
            box_roi_pool=AlignedRoIPool(["0"], p.pooler_resolution, [res4_stride]),
            box_head=C4BoxHead(head),
            box_predictor=box_predictor,
        )
        if p.mask:
            mask_predictor = MaskRCNNPredictor(channels[3], p.mask_head_conv_dim, num_classes + 1)
            model = MaskRCNN(
                trunk,
                mask_roi_pool=AlignedRoIPool(["0"], p.mask_pooler_resolution, [res4_stride]),
                mask_head=C4MaskHead(head),
                mask_predictor=mask_predictor,
                **kwargs,
            )
        else:
            model = FasterRCNN(trunk, **kwargs)
        _init_predictors(box_predictor, mask_predictor)
        model.transform = _transform(p, 1)
        return model
    levels = [int(f.removeprefix("res")) - 2 for f in p.fpn_in_features]  # res3 -> layer2 (index 1)
    norm = partial(nn.BatchNorm2d)
    fpn = BackboneWithFPN(
        net,
        return_layers={f"layer{i + 1}": str(k) for k, i in enumerate(levels)},
        in_channels_list=[channels[i] for i in levels],
        out_channels=p.fpn_channels,
        extra_blocks=LastLevelMaxPool(),
        norm_layer=norm,
    )
    names = [str(k) for k in range(len(levels))]
    strides = [stem_stride(net) * 2**i for i in levels]
    anchors = AnchorGenerator(tuple(p.anchor_sizes), (p.aspect_ratios,) * len(p.anchor_sizes))
    pool_size = p.pooler_resolution
    box_head = FastRCNNConvFCHead(
        (p.fpn_channels, pool_size, pool_size),
        [p.box_head_conv_dim] * p.box_head_convs,
        [p.box_head_fc_dim],
        norm_layer=norm,
    )
    box_predictor = FastRCNNPredictor(p.box_head_fc_dim, num_classes + 1)
    mask_predictor = MaskRCNNPredictor(p.mask_head_conv_dim, p.mask_head_conv_dim, num_classes + 1)
    mask_convs = [p.mask_head_conv_dim] * p.mask_head_convs
    model = MaskRCNN(
        fpn,
        rpn_anchor_generator=anchors,
        box_roi_pool=AlignedRoIPool(names, pool_size, strides),
        box_head=box_head,
        box_predictor=box_predictor,
        mask_roi_pool=AlignedRoIPool(names, p.mask_pooler_resolution, strides),
        mask_head=MaskRCNNHeads(p.fpn_channels, mask_convs, 1, norm_layer=norm),
        mask_predictor=mask_predictor,
        **common,
    )
    _init_predictors(box_predictor, mask_predictor)
    model.transform = _transform(p, res5_stride)
    return model


def backbone_key_map(p: DetProtocol, keys: list[str]) -> dict[str, str]:
    """Where each torchvision backbone key lives in :func:`build_tv_detector`'s model."""
    out = {}
    for key in keys:
        if p.arch == "c4":
            out[key] = f"roi_heads.box_head.head.{key}" if key.startswith("layer4.") else f"backbone.{key}"
        else:
            out[key] = f"backbone.body.{key}"
    return out


def load_backbone(
    model: GeneralizedRCNN, p: DetProtocol, backbone_name: str, tensors: Mapping[str, torch.Tensor]
) -> int:
    """Copy the pretrained ``tensors`` (torchvision ResNet keys) into ``model``; every tensor of the registry
    backbone's trunk must be given and land in the model (else :class:`CheckpointError`).  Returns the number
    of tensors loaded.  FPN on ``res3..res5`` still loads (and fine-tunes) ``layer1`` as part of the trunk."""
    expected = set(build_backbone(backbone_name).net.state_dict())
    given = set(tensors)
    mapping = backbone_key_map(p, sorted(given & expected))
    state = model.state_dict()
    wrong = [
        k for k, target in mapping.items() if target in state and state[target].shape != tensors[k].shape
    ]
    check_complete(
        f"loading the {backbone_name} backbone into the {p.arch.upper()} detector",
        not_loaded=sorted((given - expected) | {k for k, t in mapping.items() if t not in state}),
        wrong_shape=wrong,
        uncovered=sorted(expected - given),
    )
    with torch.no_grad():
        for key, target in mapping.items():
            state[target].copy_(tensors[key])
    return len(mapping)
