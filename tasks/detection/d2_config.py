"""detectron2's side of the protocol: dataset registration and the config generated from a
:class:`~tasks.detection.protocol.DetProtocol` (no YAML file per task).

* Data: each VOC image set / COCO split is registered in ``DatasetCatalog`` under a name derived from its
  path and classes (``augbench_voc_2007_test_<hash>``) with detectron2's ``load_voc_instances`` /
  ``register_coco_instances``, plus the ``MetadataCatalog`` entries ``PascalVOCDetectionEvaluator`` and
  ``COCOEvaluator`` read.  Names are unique per content, so registering twice in one process is a no-op.
* Config (:func:`build_cfg`): architecture, norms (SyncBN only across processes), input format and pixel
  statistics, anchors, RPN/ROI settings, sizes, solver, PRECISE_BN from the protocol; the backbone's block
  type, widths and stem from the registry backbone (``cfg.MODEL.AUGBENCH``, read by
  :mod:`tasks.detection.d2_model`); full-model gradient clipping as ``SOLVER.AUGBENCH_CLIP_FULL_MODEL``
  (detectron2's own CLIP_GRADIENTS clips per parameter).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from detectron2.config import CfgNode, get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.data.datasets.pascal_voc import load_voc_instances

from pretrain.backbones import Backbone
from pretrain.distributed import world_size
from tasks.base import TaskContext
from tasks.datasets.coco import annotation_file
from tasks.datasets.voc import VOC_SETS, year_dir
from tasks.detection.d2_model import BACKBONE_NAME, FPN_BACKBONE_NAME, ROI_HEADS_NAME
from tasks.detection.protocol import DetProtocol
from tasks.detection.tv_model import stage_channels, stem_stride


def _digest(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:10]


def register_datasets(p: DetProtocol, root: Path, classes: tuple[str, ...]) -> tuple[list[str], str]:
    """Register the protocol's train and test data with detectron2; ``(train names, test name)``."""
    names: dict[str, list[str]] = {}
    for split in (p.train_split, p.test_split):
        names[split] = []
        if p.dataset == "voc":
            for year, image_set in VOC_SETS[split]:
                dirname = str(year_dir(root, year))
                name = f"augbench_voc_{year}_{image_set}_{_digest(dirname, classes)}"
                if name not in DatasetCatalog.list():
                    DatasetCatalog.register(
                        name, lambda d=dirname, s=image_set: load_voc_instances(d, s, list(classes))
                    )
                    MetadataCatalog.get(name).set(
                        thing_classes=list(classes), dirname=dirname, year=int(year), split=image_set
                    )
                names[split].append(name)
        else:
            json_file, images = annotation_file(root, split), root / "coco" / split
            name = f"augbench_coco_{split}_{_digest(json_file)}"
            if name not in DatasetCatalog.list():
                register_coco_instances(name, {}, str(json_file), str(images))
            names[split].append(name)
    return names[p.train_split], names[p.test_split][0]


def _depth(blocks: list[int], bottleneck: bool) -> int:
    table: dict[tuple[int, ...], int] = {
        (2, 2, 2, 2): 18,
        (3, 4, 6, 3): 34 if not bottleneck else 50,
        (3, 4, 23, 3): 101,
        (3, 8, 36, 3): 152,
    }
    return table.get(tuple(blocks), 50 if bottleneck else 18)


def build_cfg(
    p: DetProtocol,
    backbone: Backbone,
    num_classes: int,
    train: list[str],
    test: str,
    out: Path,
    ctx: TaskContext,
) -> CfgNode:
    """detectron2's config for protocol ``p`` on ``backbone`` (see the module docstring)."""
    net = backbone.net
    bottleneck = hasattr(net.layer1[0], "conv3")
    blocks = [len(layer) for layer in (net.layer1, net.layer2, net.layer3, net.layer4)]
    channels = stage_channels(net)
    cfg = get_cfg()
    m = cfg.MODEL
    m.DEVICE = str(ctx.device)
    m.META_ARCHITECTURE = "GeneralizedRCNN"
    m.MASK_ON = p.mask
    m.PIXEL_MEAN, m.PIXEL_STD = list(p.pixel_mean), list(p.pixel_std)
    cfg.INPUT.FORMAT = p.input_format
    norm = p.norm if world_size() > 1 else "BN"  # SyncBN on one process is BN
    m.BACKBONE.NAME = BACKBONE_NAME if p.arch == "c4" else FPN_BACKBONE_NAME
    m.BACKBONE.FREEZE_AT = p.freeze_at
    r = m.RESNETS
    r.DEPTH, r.NORM, r.STRIDE_IN_1X1 = _depth(blocks, bottleneck), norm, p.stride_in_1x1
    r.STEM_OUT_CHANNELS, r.RES2_OUT_CHANNELS = net.conv1.out_channels, channels[0]
    r.WIDTH_PER_GROUP = net.layer1[0].conv1.out_channels if bottleneck else 64
    stem = "cifar" if stem_stride(net) == 1 else "standard"
    m.AUGBENCH = CfgNode(
        {"STEM": stem, "BLOCK": "bottleneck" if bottleneck else "basic", "LAYERS": blocks,
         "EXTRA_NORM": p.extra_norm_after_res5}
    )  # fmt: skip
    m.ANCHOR_GENERATOR.SIZES = [list(s) for s in p.anchor_sizes]
    m.ANCHOR_GENERATOR.ASPECT_RATIOS = [list(p.aspect_ratios)]
    if p.arch == "c4":
        r.OUT_FEATURES = ["res4"]
        m.RPN.IN_FEATURES = m.ROI_HEADS.IN_FEATURES = ["res4"]
        m.ROI_HEADS.NAME = ROI_HEADS_NAME
        m.ROI_MASK_HEAD.NUM_CONV = 0
    else:
        r.OUT_FEATURES = list(p.fpn_in_features)
        m.FPN.IN_FEATURES, m.FPN.OUT_CHANNELS, m.FPN.NORM = list(p.fpn_in_features), p.fpn_channels, norm
        strides = [stem_stride(net) * 2 ** (int(f[3]) - 2) for f in p.fpn_in_features]
        levels = [f"p{s.bit_length() - 1}" for s in strides]
        m.RPN.IN_FEATURES = [*levels, f"p{strides[-1].bit_length()}"]
        m.ROI_HEADS.NAME, m.ROI_HEADS.IN_FEATURES = "StandardROIHeads", levels
        b = m.ROI_BOX_HEAD
        b.NAME, b.NUM_CONV, b.CONV_DIM, b.NUM_FC, b.FC_DIM, b.NORM = (
            "FastRCNNConvFCHead", p.box_head_convs, p.box_head_conv_dim, 1, p.box_head_fc_dim, norm
        )  # fmt: skip
        m.ROI_MASK_HEAD.NUM_CONV, m.ROI_MASK_HEAD.NORM = p.mask_head_convs, norm
    m.ROI_MASK_HEAD.CONV_DIM = p.mask_head_conv_dim
    m.ROI_BOX_HEAD.POOLER_RESOLUTION = p.pooler_resolution
    m.ROI_MASK_HEAD.POOLER_RESOLUTION = p.mask_pooler_resolution
    m.RPN.PRE_NMS_TOPK_TRAIN, m.RPN.POST_NMS_TOPK_TRAIN = p.rpn_pre_nms_train, p.rpn_post_nms_train
    m.RPN.PRE_NMS_TOPK_TEST, m.RPN.POST_NMS_TOPK_TEST = p.rpn_pre_nms_test, p.rpn_post_nms_test
    m.RPN.BATCH_SIZE_PER_IMAGE = p.rpn_batch_per_image
    h = m.ROI_HEADS
    h.NUM_CLASSES, h.BATCH_SIZE_PER_IMAGE, h.POSITIVE_FRACTION = (
        num_classes,
        p.roi_batch_per_image,
        p.roi_positive_fraction,
    )
    h.SCORE_THRESH_TEST, h.NMS_THRESH_TEST = p.score_thresh_test, p.nms_thresh_test
    cfg.TEST.DETECTIONS_PER_IMAGE = p.detections_per_image
    i = cfg.INPUT
    i.MIN_SIZE_TRAIN, i.MIN_SIZE_TRAIN_SAMPLING, i.MAX_SIZE_TRAIN = (
        tuple(p.min_size_train),
        "choice",
        p.max_size_train,
    )
    i.MIN_SIZE_TEST, i.MAX_SIZE_TEST = p.min_size_test, p.max_size_test
    i.RANDOM_FLIP = "horizontal" if p.flip_train else "none"
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = tuple(train), (test,)
    cfg.DATALOADER.NUM_WORKERS = ctx.num_workers
    s = cfg.SOLVER
    s.IMS_PER_BATCH, s.BASE_LR, s.MAX_ITER, s.STEPS, s.GAMMA = (
        p.batch,
        p.base_lr,
        p.iterations,
        p.steps,
        p.gamma,
    )
    s.WARMUP_ITERS, s.WARMUP_FACTOR, s.WARMUP_METHOD = p.warmup_iters, p.warmup_factor, "linear"
    s.MOMENTUM, s.WEIGHT_DECAY, s.WEIGHT_DECAY_NORM = p.momentum, p.weight_decay, p.weight_decay_norm
    s.CHECKPOINT_PERIOD = p.checkpoint_period
    # detectron2's CLIP_GRADIENTS clips per parameter; the protocol clips the L2 norm of all gradients
    s.AUGBENCH_CLIP_FULL_MODEL = float(p.grad_clip or 0.0)
    cfg.TEST.PRECISE_BN.ENABLED = p.precise_bn_iters > 0
    cfg.TEST.PRECISE_BN.NUM_ITER = max(p.precise_bn_iters, 1)
    cfg.TEST.EVAL_PERIOD = 0
    cfg.OUTPUT_DIR = str(out)
    cfg.SEED = ctx.seed
    cfg.freeze()
    return cfg
