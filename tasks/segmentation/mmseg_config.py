"""mmseg config generation from a task definition and profile settings (no hand-written config files).

:func:`build_config` returns plain dicts (model, data loaders, optimiser, schedule, loops, hooks) that
mmengine's ``Config`` / ``Runner`` accept; :func:`backbone_config` maps a torchvision-structured ResNet
to the mmseg backbone with the same parameter names.  See ``docs/segmentation.md`` for the protocols.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from core.errors import ConfigError
from core.hardware import precision_for
from pretrain.backbones import IMAGENET_MEAN, IMAGENET_STD

if TYPE_CHECKING:
    from tasks.segmentation.protocols import SegDataset, SegSettings

#: mmseg registry name of the CIFAR-stem ResNet (``mmseg_parts.CIFAR_STEM_RESNET``, kept in sync by a test).
CIFAR_STEM = "AugbenchCifarStemResNet"
#: Input normalisation of our backbones (ImageNet mean/std) in 0-255 units; mmcv loads BGR -> RGB first.
PIXEL_MEAN = [round(m * 255, 3) for m in IMAGENET_MEAN]
PIXEL_STD = [round(s * 255, 3) for s in IMAGENET_STD]


def backbone_config(net: ResNet, model: str, norm_cfg: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
    """mmseg backbone config equivalent to the torchvision-structured ``net`` and its stage widths.

    Standard stem (7x7 stride 2 + max-pool) -> mmseg ``ResNet`` (the V1b layout, torchvision keys); CIFAR
    stem (3x3 stride 1, no max-pool) -> ``AugbenchCifarStemResNet``.  FCN needs output stride 8: the
    standard stem dilates stages 3-4 (strides 1,2,1,1, dilations 1,1,2,4: "D8"); the CIFAR stem does not
    downsample, so its undilated stages already end at stride 8.  UPerNet keeps strides 1,2,2,2 (its
    pyramid levels are chosen by :func:`upernet_levels`).
    """
    block = type(net.layer1[0])
    counts = tuple(len(getattr(net, f"layer{i}")) for i in range(1, 5))
    depths: dict[tuple[type, tuple[int, ...]], int] = {
        (BasicBlock, (2, 2, 2, 2)): 18,
        (BasicBlock, (3, 4, 6, 3)): 34,
        (Bottleneck, (3, 4, 6, 3)): 50,
        (Bottleneck, (3, 4, 23, 3)): 101,
        (Bottleneck, (3, 8, 36, 3)): 152,
    }
    depth = depths.get((block, counts))
    conv1 = net.conv1
    if depth is None or not isinstance(conv1, torch.nn.Conv2d):
        raise ConfigError(
            f"segmentation needs a ResNet-18/34/50/101/152 backbone, got {block.__name__} x {counts}"
        )
    if conv1.kernel_size == (7, 7) and conv1.stride == (2, 2) and isinstance(net.maxpool, torch.nn.MaxPool2d):
        kind, cifar = "ResNet", False
    elif (
        conv1.kernel_size == (3, 3) and conv1.stride == (1, 1) and isinstance(net.maxpool, torch.nn.Identity)
    ):
        kind, cifar = CIFAR_STEM, True
    else:
        raise ConfigError(f"backbone stem {conv1} with {net.maxpool} has no mmseg equivalent")
    base = net.layer1[0].conv1.out_channels
    expansion = 4 if block is Bottleneck else 1
    if model == "fcn" and not cifar:
        strides, dilations = (1, 2, 1, 1), (1, 1, 2, 4)
    else:
        strides, dilations = (1, 2, 2, 2), (1, 1, 1, 1)
    cfg = dict(
        type=kind,
        depth=depth,
        in_channels=3,
        stem_channels=conv1.out_channels,
        base_channels=base,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        strides=strides,
        dilations=dilations,
        norm_cfg=norm_cfg,
        norm_eval=False,
        style="pytorch",
        contract_dilation=True,
    )
    return cfg, [base * 2**i * expansion for i in range(4)]


def upernet_levels(cifar_stem: bool) -> list[int]:
    """Stages UPerNet's pyramid reads: all four on a standard stem (strides 4-32); on the CIFAR stem, whose
    stage 1 is at full resolution (stride 1), stages 2-4 (strides 2-8), so the head's finest level is not
    finer than half the input, as with a standard stem's stride-4 level on 512-pixel crops (and the fused
    3x3 convolution at full resolution would cost more than the backbone at smoke scale)."""
    return [1, 2, 3] if cifar_stem else [0, 1, 2, 3]


def _head(kind: str, init_std: float, **kwargs: Any) -> dict[str, Any]:
    init = dict(type="Normal", std=init_std, override=dict(name="conv_seg"))
    return dict(type=kind, dropout_ratio=0.1, init_cfg=init, **kwargs)


def _loss(weight: float) -> dict[str, Any]:
    return dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=weight)


def _optimizer(settings: SegSettings) -> dict[str, Any]:
    if settings.optimizer == "adamw":
        return dict(type="AdamW", lr=settings.lr, betas=(0.9, 0.999), weight_decay=settings.weight_decay)
    return dict(type="SGD", lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay)


def seg_uses_bf16(precision: str) -> bool:
    """Whether training runs under bf16 autocast: ``"bf16"``, or ``"auto"`` where
    :func:`core.hardware.auto_precision` picks bf16 on the device mmseg will use."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return precision_for(precision, device) == "bf16"


def build_config(
    ds: SegDataset,
    settings: SegSettings,
    net: ResNet,
    data_dir: Path,
    weights: Path,
    world_size: int = 1,
) -> dict[str, Any]:
    """The mmseg config (plain dicts: model, data loaders, optimiser, schedule, loops) of one task."""
    norm_cfg = dict(type="SyncBN" if world_size > 1 else "BN", requires_grad=True)
    backbone, channels = backbone_config(net, settings.model, norm_cfg)
    backbone["init_cfg"] = dict(type="Pretrained", checkpoint=str(weights))
    common = dict(num_classes=ds.num_classes, norm_cfg=norm_cfg, align_corners=settings.align_corners)
    if settings.model == "fcn":
        decode = _head(
            "FCNHead", settings.classifier_init_std, in_channels=channels[3], in_index=3,
            channels=settings.head_channels, num_convs=2, concat_input=True, loss_decode=_loss(1.0), **common,
        )  # fmt: skip
    else:
        levels = upernet_levels(backbone["type"] == CIFAR_STEM)
        decode = _head(
            "UPerHead", settings.classifier_init_std, in_channels=[channels[i] for i in levels],
            in_index=levels, pool_scales=(1, 2, 3, 6), channels=settings.head_channels,
            loss_decode=_loss(1.0), **common,
        )  # fmt: skip
    aux = _head(
        "FCNHead", settings.classifier_init_std, in_channels=channels[2], in_index=2,
        channels=settings.aux_channels, num_convs=1, concat_input=False, loss_decode=_loss(0.4), **common,
    )  # fmt: skip
    if settings.test_mode == "slide":
        test_cfg: dict[str, Any] = dict(
            mode="slide", crop_size=settings.crop_size, stride=settings.slide_stride
        )
    else:
        test_cfg = dict(mode="whole")
    model = dict(
        type="EncoderDecoder",
        data_preprocessor=dict(
            type="SegDataPreProcessor", mean=PIXEL_MEAN, std=PIXEL_STD, bgr_to_rgb=True, pad_val=0,
            seg_pad_val=255, size=settings.crop_size,
        ),
        backbone=backbone,
        decode_head=decode,
        auxiliary_head=aux,
        train_cfg=dict(),
        test_cfg=test_cfg,
    )  # fmt: skip
    train_pipeline: list[dict[str, Any]] = [
        dict(type="LoadImageFromFile"),
        dict(type="LoadAnnotations"),
        dict(type="RandomResize", scale=settings.scale, ratio_range=settings.ratio_range, keep_ratio=True),
        dict(type="RandomCrop", crop_size=settings.crop_size, cat_max_ratio=settings.cat_max_ratio),
        dict(type="RandomFlip", prob=0.5),
        dict(type="PhotoMetricDistortion"),
        dict(type="PackSegInputs"),
    ]
    test_pipeline: list[dict[str, Any]] = [
        dict(type="LoadImageFromFile"),
        dict(type="Resize", scale=settings.scale, keep_ratio=True),
        dict(type="LoadAnnotations"),
        dict(type="PackSegInputs"),
    ]

    def dataset(part: tuple[str, str, str | None], pipeline: list[dict[str, Any]]) -> dict[str, Any]:
        image_dir, label_dir, ann_file = part
        cfg = dict(
            type=ds.mmseg_type,
            data_root=str(data_dir),
            data_prefix=dict(img_path=image_dir, seg_map_path=label_dir),
            reduce_zero_label=ds.reduce_zero_label,
            pipeline=pipeline,
        )
        if ann_file is not None:
            cfg["ann_file"] = ann_file
        return cfg

    parts = [dataset(part, train_pipeline) for part in ds.train_parts]
    train_set = parts[0] if len(parts) == 1 else dict(type="ConcatDataset", datasets=parts)
    workers = settings.num_workers
    return dict(
        model=model,
        train_dataloader=dict(
            batch_size=settings.batch_size, num_workers=workers, persistent_workers=workers > 0,
            sampler=dict(type="InfiniteSampler", shuffle=True), dataset=train_set,
        ),
        test_dataloader=dict(
            batch_size=1, num_workers=workers, persistent_workers=False,
            sampler=dict(type="DefaultSampler", shuffle=False), dataset=dataset(ds.test_part, test_pipeline),
        ),
        train_cfg=dict(
            type="IterBasedTrainLoop", max_iters=settings.iterations, val_interval=settings.iterations,
        ),
        test_cfg=dict(type="TestLoop"),
        optim_wrapper=dict(
            type="AugbenchBf16OptimWrapper" if seg_uses_bf16(settings.precision) else "OptimWrapper",
            clip_grad=None,
            optimizer=_optimizer(settings),
        ),
        param_scheduler=[
            dict(type="PolyLR", eta_min=settings.min_lr, power=settings.poly_power, begin=0,
                 end=settings.iterations, by_epoch=False),
        ],
        default_hooks=dict(
            timer=dict(type="IterTimerHook"),
            logger=dict(type="LoggerHook", interval=50, log_metric_by_epoch=False),
            param_scheduler=dict(type="ParamSchedulerHook"),
            sampler_seed=dict(type="DistSamplerSeedHook"),
            checkpoint=None,
        ),
        log_processor=dict(by_epoch=False),
        env_cfg=dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
                     dist_cfg=dict(backend="nccl")),
        default_scope="mmseg",
    )  # fmt: skip
