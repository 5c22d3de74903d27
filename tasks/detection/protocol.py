"""The detection / instance-segmentation protocols: one typed definition per (task, variant, profile).

Both backends read the same :class:`DetProtocol`: detectron2's config is generated from it
(:func:`tasks.detection.d2_config.build_cfg`) and the torchvision models are built from it
(:mod:`tasks.detection.tv_model`).

Paper profile = the MoCo detection protocols (He et al. 2020, arXiv 1911.05722, Appendix A; configs of
facebookresearch/moco ``detection/configs``), which every SSL anchor (solo-learn, VISSL, MMSelfSup) reuses:

* ``det/voc07``: Faster R-CNN R50-C4, ``Res5ROIHeadsExtraNorm`` (a norm after res5), FREEZE_AT 0, SyncBN in
  backbone and head, PRECISE_BN, RGB input with torchvision's mean/std, STRIDE_IN_1X1 False; VOC 07+12
  trainval -> VOC07 test; 24k iterations, batch 16, lr 0.02, steps (18k, 22k), warm-up 100; train shorter
  side 480..800 (step 32), test 800.  MoCo v2 200 ep (MoCo README, mean of 5 trials): 82.4 AP50, 57.0 AP,
  63.6 AP75.
* ``instseg/coco:c4_2x`` (default): Mask R-CNN R50-C4, same backbone/head settings, COCO train2017 -> val2017,
  180k iterations, steps (120k, 160k), train 640..800, test 800.  ``c4_1x``: 90k, steps (60k, 80k).
  ``fpn_1x``: Mask R-CNN R50-FPN with SyncBN in backbone, FPN and heads (4conv1fc box head), 90k.

Smoke profile = the same architecture family on the narrow CIFAR-stem ResNet-18 (``narrow_resnet18``), on the
synthetic stand-ins (1-3 objects of 18-36 px in 56-80 px images), batch 4, 100-200 iterations (lr 0.04 with
gradient clipping: short CPU runs), few proposals and ROIs (16 per image), an 8 x 8 ROI pooler, anchors at
sqrt(2) steps matching the object sizes; each task <= ~60 s on 2 cores.  The smoke schedules keep the
paper's step fractions (VOC 0.75/0.92, COCO 0.67/0.89) and 1x = half of 2x.  Docs: docs/detection.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from core.errors import ConfigError

#: torchvision's ImageNet mean/std on a 0-255 scale (MoCo's detectron2 configs: INPUT.FORMAT RGB).
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)

VARIANTS: dict[str, tuple[str, ...]] = {
    "det/voc07": ("c4_24k",),
    "instseg/coco": ("c4_2x", "c4_1x", "fpn_1x"),
}
DEFAULT_VARIANT = {"det/voc07": "c4_24k", "instseg/coco": "c4_2x"}
#: Smoke-profile iterations per variant (1x = half of 2x; about 40 s of training each on one idle core).
SMOKE_ITERATIONS = {"c4_24k": 200, "c4_2x": 200, "c4_1x": 100, "fpn_1x": 100}


@dataclass(frozen=True)
class DetProtocol:
    """Everything that defines one detection fine-tuning protocol (recorded in results).

    Sizes are pixels of the resized input; ``min_size_train`` is the set the shorter side is drawn from per
    image (multi-scale training); schedules are in iterations of ``batch`` images.
    """

    task: str
    variant: str
    dataset: str
    train_split: str
    test_split: str
    arch: str  # "c4" | "fpn"
    mask: bool
    iterations: int
    batch: int
    base_lr: float
    steps: tuple[int, ...]
    warmup_iters: int
    min_size_train: tuple[int, ...]
    max_size_train: int
    min_size_test: int
    max_size_test: int
    anchor_sizes: tuple[tuple[int, ...], ...]
    rpn_pre_nms_train: int
    rpn_post_nms_train: int
    rpn_pre_nms_test: int
    rpn_post_nms_test: int
    roi_batch_per_image: int
    pooler_resolution: int
    mask_pooler_resolution: int
    precise_bn_iters: int
    checkpoint_period: int
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    rpn_batch_per_image: int = 256
    roi_positive_fraction: float = 0.25
    gamma: float = 0.1
    warmup_factor: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 1e-4
    weight_decay_norm: float = 0.0
    grad_clip: float | None = None  # max L2 norm of all gradients (None: no clipping)
    norm: str = "SyncBN"  # SyncBN across processes; plain BN on one process
    freeze_at: int = 0
    extra_norm_after_res5: bool = True  # MoCo's Res5ROIHeadsExtraNorm (C4)
    stride_in_1x1: bool = False
    pixel_mean: tuple[float, float, float] = PIXEL_MEAN
    pixel_std: tuple[float, float, float] = PIXEL_STD
    input_format: str = "RGB"
    fpn_in_features: tuple[str, ...] = ("res2", "res3", "res4", "res5")
    fpn_channels: int = 256
    box_head_convs: int = 4  # FPN: 4conv1fc (the SyncBN Mask R-CNN head)
    box_head_conv_dim: int = 256
    box_head_fc_dim: int = 1024
    mask_head_convs: int = 4  # FPN mask head; C4 has none (res5 features -> deconv)
    mask_head_conv_dim: int = 256
    score_thresh_test: float = 0.05
    nms_thresh_test: float = 0.5
    detections_per_image: int = 100
    flip_train: bool = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _paper(task: str, variant: str) -> DetProtocol:
    common: dict[str, Any] = dict(
        task=task,
        variant=variant,
        batch=16,
        base_lr=0.02,
        max_size_train=1333,
        min_size_test=800,
        max_size_test=1333,
        rpn_pre_nms_train=12000,
        rpn_post_nms_train=2000,
        rpn_pre_nms_test=6000,
        rpn_post_nms_test=1000,
        roi_batch_per_image=512,
        pooler_resolution=14,
        mask_pooler_resolution=14,
        precise_bn_iters=200,
        checkpoint_period=5000,
        anchor_sizes=((32, 64, 128, 256, 512),),
    )
    if task == "det/voc07":
        return DetProtocol(
            **common,
            dataset="voc",
            train_split="trainval",
            test_split="test",
            arch="c4",
            mask=False,
            iterations=24000,
            steps=(18000, 22000),
            warmup_iters=100,
            min_size_train=tuple(range(480, 801, 32)),
        )
    iters = 180000 if variant == "c4_2x" else 90000
    coco = dict(common, dataset="coco", train_split="train2017", test_split="val2017", mask=True)
    coco.update(
        iterations=iters,
        steps=(iters * 2 // 3, iters * 8 // 9),
        warmup_iters=1000,
        min_size_train=(640, 672, 704, 736, 768, 800),
    )
    if variant.startswith("c4"):
        return DetProtocol(**coco, arch="c4")
    coco.update(
        anchor_sizes=((32,), (64,), (128,), (256,), (512,)),
        rpn_pre_nms_train=2000,
        rpn_post_nms_train=1000,
        rpn_pre_nms_test=1000,
        rpn_post_nms_test=1000,
        pooler_resolution=7,
    )
    return DetProtocol(**coco, arch="fpn", extra_norm_after_res5=False)


def _smoke(task: str, variant: str) -> DetProtocol:
    common: dict[str, Any] = dict(
        task=task,
        variant=variant,
        batch=4,
        base_lr=0.04,
        warmup_iters=20,
        min_size_train=(56, 64, 72),
        max_size_train=112,
        min_size_test=64,
        max_size_test=112,
        anchor_sizes=((12, 17, 24, 34, 48),),
        rpn_pre_nms_train=600,
        rpn_post_nms_train=100,
        rpn_pre_nms_test=300,
        rpn_post_nms_test=50,
        roi_batch_per_image=16,
        pooler_resolution=8,
        mask_pooler_resolution=8,  # C4: the mask branch reads the box branch's res5 features
        precise_bn_iters=10,
        checkpoint_period=50,
        grad_clip=5.0,
        mask_head_conv_dim=64,
    )
    if task == "det/voc07":
        iters = SMOKE_ITERATIONS["c4_24k"]
        return DetProtocol(
            **common,
            dataset="voc",
            train_split="trainval",
            test_split="test",
            arch="c4",
            mask=False,
            iterations=iters,
            steps=(iters * 3 // 4, iters * 11 // 12),
        )
    iters = SMOKE_ITERATIONS[variant]
    coco = dict(common, dataset="coco", train_split="train2017", test_split="val2017", mask=True)
    coco.update(iterations=iters, steps=(iters * 2 // 3, iters * 8 // 9))
    if variant.startswith("c4"):
        return DetProtocol(**coco, arch="c4")
    coco.update(
        anchor_sizes=((8, 11), (16, 23), (32, 45), (64, 90)),
        pooler_resolution=7,
        mask_pooler_resolution=14,
        fpn_in_features=("res3", "res4", "res5"),
        fpn_channels=64,
        box_head_conv_dim=32,
        box_head_fc_dim=128,
        mask_head_conv_dim=32,
    )
    return DetProtocol(**coco, arch="fpn", extra_norm_after_res5=False)


def build_protocol(task: str, variant: str | None, profile: str) -> DetProtocol:
    """The protocol of ``task`` (``det/voc07`` or ``instseg/coco``), ``variant`` (``None``: the default) and
    ``profile`` (``smoke`` or ``paper``)."""
    if task not in VARIANTS:
        raise ConfigError(f"no detection protocol for task {task!r}")
    variant = variant or DEFAULT_VARIANT[task]
    if variant not in VARIANTS[task]:
        raise ConfigError(f"{task} has variants {', '.join(VARIANTS[task])}; got {variant!r}")
    if profile == "paper":
        return _paper(task, variant)
    if profile == "smoke":
        return _smoke(task, variant)
    raise ConfigError(f"unknown profile {profile!r} for {task}; choose smoke or paper")


def with_overrides(protocol: DetProtocol, **changes: Any) -> DetProtocol:
    """A copy with ``changes`` (tests and benchmarks: shorter schedules, fewer test images)."""
    return replace(protocol, **changes)
