"""Semantic-segmentation transfer tasks (``seg/voc12aug``, ``seg/cityscapes``, ``seg/ade20k``): definitions
and per-profile settings.

The whole network is fine-tuned from the evaluated backbone, as in the transfer evaluations of
arXiv 2310.18850 and of MMSelfSup / MMPretrain, which run them with mmsegmentation:

=================  ==========================  ============  =========  =====  ==========================
task               model                       crop          schedule   batch  test
=================  ==========================  ============  =========  =====  ==========================
seg/voc12aug       FCN, output stride 8 (D8)   512 x 512     20k iter   16     whole image, short side 512
seg/cityscapes     FCN, output stride 8 (D8)   769 x 769     40k iter   8      sliding 769 window, 513 stride
seg/ade20k         UPerNet                     512 x 512     160k iter  16     whole image, short side 512
=================  ==========================  ============  =========  =====  ==========================

Optimiser (all three): SGD, lr 0.01, momentum 0.9, weight decay 5e-4, poly decay (power 0.9) to 1e-4;
auxiliary FCN head on stage 3 (loss weight 0.4); SyncBN (plain BN on one process); training augmentation
random rescale 0.5-2.0, random crop (at most 75% of the crop one class), flip, photometric distortion.
These are mmsegmentation's ``fcn_r50-d8_4xb4-20k_voc12aug-512x512``, ``fcn_r50-d8_4xb2-40k_cityscapes-
769x769`` and ``upernet_r50_4xb4-160k_ade20k-512x512`` (MMSelfSup's VOC12aug / Cityscapes benchmarks) with
the backbone replaced by ours.  Metrics: mIoU (primary), mAcc and aAcc from mmseg's ``IoUMetric``, in %.

The smoke profile keeps the model families and the pipeline on the narrow backbone with small crops and a
few hundred iterations (see :data:`SMOKE`); its numbers compare recipes on the synthetic stand-ins only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from pretrain.backbones import Backbone
from tasks.base import Metric, TaskContext, TaskOutput
from tasks.datasets import ade20k, cityscapes, voc_seg
from tasks.datasets.segmaps import SegSample

SegModel = Literal["fcn", "upernet"]


@dataclass(frozen=True)
class SegSettings:
    """Training and evaluation settings of one task in one profile.

    Attributes:
        model: decode head family: ``"fcn"`` (FCN, output stride 8) or ``"upernet"`` (UPerNet, strides
            4-32 of a standard-stem ResNet).
        crop_size: training crop ``(height, width)``.
        scale: mmseg's ``(width, height)`` resize scale: training rescales to it times a ratio drawn from
            ``ratio_range`` (keeping the aspect ratio), testing rescales to it.
        ratio_range: training rescale ratios.
        iterations / batch_size: training length and images per iteration.
        optimizer: ``"sgd"`` (with ``momentum``) or ``"adamw"``; ``lr``, ``weight_decay``; the learning rate
            decays as ``(1 - t / T) ** poly_power`` to ``min_lr``.
        head_channels / aux_channels: widths of the decode head and the auxiliary FCN head.
        test_mode: ``"whole"`` (one pass per image) or ``"slide"`` (``crop_size`` windows every
            ``slide_stride`` pixels).
        align_corners: of the heads' resizing (mmseg sets it for the 769 px Cityscapes models).
        checkpoint_every: iterations between resumable state files.
        num_workers: data-loading worker processes.
        precision: ``"fp32"``, ``"bf16"`` (forward pass under bfloat16 autocast) or ``"auto"`` (bf16 where
            the hardware computes it natively, :func:`core.hardware.auto_precision`; smoke runs).
        classifier_init_std: std of the normal initialisation of the heads' final 1x1 convolutions
            (mmseg: 0.01).
        channels_last: run the model's convolutions in NHWC memory layout (weights converted after the
            Runner builds the model; inputs follow the weights' layout).  Same arithmetic, other kernels:
            in fp32 on an AVX2 CPU the smoke FCN trains 1.4x faster (BENCHMARKS.md); off in the paper
            profile (fp32 on a GPU, not measured here).
    """

    model: SegModel
    crop_size: tuple[int, int]
    scale: tuple[int, int]
    ratio_range: tuple[float, float]
    iterations: int
    batch_size: int
    lr: float
    head_channels: int
    aux_channels: int
    optimizer: Literal["sgd", "adamw"] = "sgd"
    test_mode: Literal["whole", "slide"] = "whole"
    slide_stride: tuple[int, int] | None = None
    align_corners: bool = False
    momentum: float = 0.9
    weight_decay: float = 5e-4
    poly_power: float = 0.9
    min_lr: float = 1e-4
    cat_max_ratio: float = 0.75
    checkpoint_every: int = 2000
    num_workers: int = 4
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    classifier_init_std: float = 0.01
    channels_last: bool = False

    def __post_init__(self) -> None:
        if self.test_mode == "slide" and self.slide_stride is None:
            raise ValueError("test_mode 'slide' needs slide_stride")
        if min(self.iterations, self.batch_size, self.checkpoint_every) < 1:
            raise ValueError("iterations, batch_size and checkpoint_every must be positive")


@dataclass(frozen=True)
class SegDataset:
    """How mmseg reads a dataset and how augbench checks it.

    ``train_parts`` / ``test_part`` are ``(image folder, label folder, id-list file or None)`` relative to
    the dataset directory; several training parts are concatenated (VOC train + SBD aug).
    """

    name: str
    mmseg_type: str
    num_classes: int
    reduce_zero_label: bool
    train_parts: tuple[tuple[str, str, str | None], ...]
    test_part: tuple[str, str, str | None]
    train_splits: tuple[str, ...]
    test_split: str
    valid_ids: frozenset[int]
    samples: Callable[[Path, str], list[SegSample]]


VOC12AUG = SegDataset(
    name="voc12aug",
    mmseg_type="PascalVOCDataset",
    num_classes=len(voc_seg.VOC_CLASSES),
    reduce_zero_label=False,
    train_parts=(
        ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation/train.txt"),
        ("JPEGImages", "SegmentationClassAug", "ImageSets/Segmentation/aug.txt"),
    ),
    test_part=("JPEGImages", "SegmentationClass", "ImageSets/Segmentation/val.txt"),
    train_splits=("train", "aug"),
    test_split="val",
    valid_ids=voc_seg.VOC_VALID_IDS,
    samples=voc_seg.voc_samples,
)
CITYSCAPES = SegDataset(
    name="cityscapes",
    mmseg_type="CityscapesDataset",
    num_classes=len(cityscapes.CITYSCAPES_CLASSES),
    reduce_zero_label=False,
    train_parts=(("leftImg8bit/train", "gtFine/train", None),),
    test_part=("leftImg8bit/val", "gtFine/val", None),
    train_splits=("train",),
    test_split="val",
    valid_ids=cityscapes.CITYSCAPES_VALID_IDS,
    samples=cityscapes.cityscapes_samples,
)
ADE20K = SegDataset(
    name="ade20k",
    mmseg_type="ADE20KDataset",
    num_classes=ade20k.ADE20K_NUM_CLASSES,
    reduce_zero_label=True,
    train_parts=(("images/training", "annotations/training", None),),
    test_part=("images/validation", "annotations/validation", None),
    train_splits=("train",),
    test_split="val",
    valid_ids=ade20k.ADE20K_VALID_IDS,
    samples=ade20k.ade20k_samples,
)

#: Paper profile: mmsegmentation's configs (see the module docstring).
PAPER: dict[str, SegSettings] = {
    "voc12aug": SegSettings(
        model="fcn", crop_size=(512, 512), scale=(2048, 512), ratio_range=(0.5, 2.0), iterations=20_000,
        batch_size=16, lr=0.01, head_channels=512, aux_channels=256,
    ),
    "cityscapes": SegSettings(
        model="fcn", crop_size=(769, 769), scale=(2049, 1025), ratio_range=(0.5, 2.0), iterations=40_000,
        batch_size=8, lr=0.01, head_channels=512, aux_channels=256, test_mode="slide",
        slide_stride=(513, 513), align_corners=True,
    ),
    "ade20k": SegSettings(
        model="upernet", crop_size=(512, 512), scale=(2048, 512), ratio_range=(0.5, 2.0),
        iterations=160_000, batch_size=16, lr=0.01, head_channels=512, aux_channels=256,
        checkpoint_every=8000,
    ),
}  # fmt: skip

_SMOKE_COMMON: dict[str, Any] = dict(
    ratio_range=(0.5, 2.0), batch_size=8, optimizer="adamw", lr=0.002, weight_decay=0.01,
    classifier_init_std=0.1, aux_channels=32, checkpoint_every=50, num_workers=1, precision="auto",
    channels_last=True,
)  # fmt: skip
#: Smoke profile: same families and pipeline on the narrow backbone, small crops of the 64 px stand-ins,
#: AdamW (SGD does not get anywhere in a few hundred steps here) and a larger initial scale of the heads'
#: classifiers (with mmseg's std 0.01 the FCN head kept predicting the majority class for 300 steps);
#: ADE20K's 150-class logits dominate its cost, hence its smaller crops.
SMOKE: dict[str, SegSettings] = {
    "voc12aug": SegSettings(
        model="fcn", crop_size=(64, 64), scale=(256, 64), iterations=300, head_channels=64, **_SMOKE_COMMON,
    ),
    "cityscapes": SegSettings(
        model="fcn", crop_size=(64, 64), scale=(128, 64), iterations=200, head_channels=64,
        test_mode="slide", slide_stride=(43, 43), align_corners=True, **_SMOKE_COMMON,
    ),
    "ade20k": SegSettings(
        model="upernet", crop_size=(48, 48), scale=(192, 48), iterations=200, head_channels=32,
        **_SMOKE_COMMON,
    ),
}  # fmt: skip

PROFILES: dict[str, dict[str, SegSettings]] = {"smoke": SMOKE, "paper": PAPER}
DATASETS: dict[str, SegDataset] = {d.name: d for d in (VOC12AUG, CITYSCAPES, ADE20K)}
DESCRIPTIONS = {
    "voc12aug": "fine-tune FCN (output stride 8) on PASCAL VOC 2012 + SBD, mIoU on val (20k iter)",
    "cityscapes": "fine-tune FCN (output stride 8) on Cityscapes fine, 769 px crops, mIoU on val (40k iter)",
    "ade20k": "fine-tune UPerNet on ADE20K, mIoU on val over 150 classes (160k iter)",
}


@dataclass(frozen=True)
class SegmentationTask:
    """``seg/<dataset>``: fine-tune backbone + head with mmsegmentation, evaluate in the same Runner."""

    dataset_def: SegDataset
    settings: dict[str, SegSettings]
    version: int = 1
    family: str = "seg"
    primary: str = "mIoU"

    @property
    def name(self) -> str:
        return f"seg/{self.dataset_def.name}"

    @property
    def datasets(self) -> tuple[str, ...]:
        return (self.dataset_def.name,)

    @property
    def metrics(self) -> tuple[Metric, ...]:
        return (Metric("mIoU"), Metric("mAcc"), Metric("aAcc"))

    @property
    def description(self) -> str:
        return DESCRIPTIONS.get(self.dataset_def.name, f"semantic segmentation on {self.dataset_def.name}")

    def settings_for(self, profile: str) -> SegSettings:
        try:
            return self.settings[profile]
        except KeyError:
            raise ValueError(f"{self.name} has no settings for profile {profile!r}") from None

    def protocol(self, profile: str) -> dict[str, Any]:
        settings = self.settings_for(profile)
        return {
            "framework": "mmsegmentation",
            "dataset": self.dataset_def.name,
            "num_classes": self.dataset_def.num_classes,
            "reduce_zero_label": self.dataset_def.reduce_zero_label,
            "norm": "SyncBN (BN on one process)",
            "schedule": "poly",
            "aux_head": "FCN on stage 3, loss weight 0.4",
            **asdict(settings),
        }

    def run(self, backbone: Backbone, ctx: TaskContext) -> TaskOutput:
        from tasks.segmentation.mmseg_backend import run_segmentation

        return run_segmentation(self, backbone, ctx)


def build_segmentation_tasks() -> tuple[SegmentationTask, ...]:
    """The three segmentation tasks, with their smoke and paper settings."""
    return tuple(
        SegmentationTask(d, {profile: table[d.name] for profile, table in PROFILES.items()})
        for d in (VOC12AUG, CITYSCAPES, ADE20K)
    )
