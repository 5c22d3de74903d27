"""Run a segmentation task with mmsegmentation: config generation, the Runner, evaluation in that Runner.

Flow of :func:`run_segmentation` (one task, one process):

1. check the data the task reads: every label map decodes, has its image's size and only valid ids
   (:func:`check_data`; mmseg itself would misalign or crash mid-run);
2. write the backbone's weights (torchvision keys) to ``<work>/backbone_init.pth`` (a plain state dict);
3. generate the mmseg config from the task definition and profile (:func:`build_config`; written to
   ``<work>/mmseg_config.py`` for the record); the backbone is mmseg's ``ResNet`` (standard stem) or
   :class:`~tasks.segmentation.mmseg_parts.CifarStemResNet` (CIFAR stem), loaded through
   ``init_cfg=dict(type='Pretrained')``, and :class:`~tasks.segmentation.mmseg_parts.WeightCheckHook`
   verifies that every tensor arrived;
4. train with mmengine's ``Runner`` (work dir inside the task's work dir), then ``runner.test()`` in the
   same Runner.  mmengine 0.10.7 reloads its own pickled checkpoints only with ``weights_only=False``
   under torch >= 2.6, so it never saves them here: resumable state is plain tensors
   (:class:`~tasks.segmentation.mmseg_parts.PlainStateCheckpointHook`), loaded with
   ``weights_only=True``.  A finished state is evaluated again without retraining.

The Runner gets a unique experiment name, and its logger / message hub / visualizer / scope instances
are released afterwards, so several tasks (or tests) can run in one process.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import tempfile
import time
import warnings
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from bench.errors import ConfigError, DatasetError
from bench.results import atomic_write_text
from pretrain.backbones import IMAGENET_MEAN, IMAGENET_STD, Backbone
from tasks.base import TaskContext, TaskOutput
from tasks.datasets.registry import DATASETS
from tasks.datasets.segmaps import check_samples, missing_files
from tasks.segmentation import mmcv_compat

if TYPE_CHECKING:
    from tasks.segmentation.protocols import SegDataset, SegmentationTask, SegSettings

EXTRA = "seg"
#: Label checks show a progress bar from this many maps on (the real datasets, not the stand-ins).
PROGRESS_FROM = 2000
#: mmseg's warnings about its own defaults/deprecations, emitted on every run (not about the user's input).
MMSEG_NOISE = (
    r"Default ``avg_non_ignore`` is False",
    r"``build_loss`` would be deprecated",
    r"When align_corners=True, the output would more aligned",
)
#: mmseg registry name of the CIFAR-stem ResNet (``mmseg_parts.CIFAR_STEM_RESNET``, kept in sync by a test).
CIFAR_STEM = "AugbenchCifarStemResNet"
_RUNNER_COUNT = itertools.count()
#: Resizing of the stage outputs: mean/std in 0-255 units, images loaded BGR by mmcv -> RGB.
PIXEL_MEAN = [round(m * 255, 3) for m in IMAGENET_MEAN]
PIXEL_STD = [round(s * 255, 3) for s in IMAGENET_STD]


def load_mmseg(what: str) -> None:
    """Import mmsegmentation (after installing the ``mmcv.ops`` stand-in when only mmcv-lite is present)
    and register augbench's backbone in mmseg's MODELS registry once; raises ``MissingExtraError``."""
    from pretrain.generative.base import MissingExtraError

    for module in ("mmengine", "mmcv"):
        try:
            __import__(module)
        except ImportError:
            raise MissingExtraError(what, EXTRA, module) from None
    mmcv_compat.install()
    try:
        with warnings.catch_warnings():  # mmcv-lite lacks the compiled deformable attention: expected
            warnings.filterwarnings("ignore", message=".*MultiScaleDeformableAttention.*")
            import mmseg.models  # noqa: F401
        from mmseg.registry import MODELS
        from mmseg.utils import register_all_modules
    except ImportError:
        raise MissingExtraError(what, EXTRA, "mmsegmentation") from None
    from mmseg.registry import OPTIM_WRAPPERS

    from tasks.segmentation.mmseg_parts import (
        BF16_OPTIM_WRAPPER,
        CIFAR_STEM_RESNET,
        Bf16OptimWrapper,
        CifarStemResNet,
    )

    register_all_modules(init_default_scope=False)
    entries: list[tuple[Any, str, type]] = [
        (MODELS, CIFAR_STEM_RESNET, CifarStemResNet),
        (OPTIM_WRAPPERS, BF16_OPTIM_WRAPPER, Bf16OptimWrapper),
    ]
    for registry, name, cls in entries:
        if name not in registry.module_dict:  # registries are process-global: register once
            registry.register_module(name=name, module=cls)


# ------------------------------------------------------------------------------------------ config


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
            type="AugbenchBf16OptimWrapper" if settings.precision == "bf16" else "OptimWrapper",
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


# --------------------------------------------------------------------------------------------- run


def check_data(task: SegmentationTask, data_root: Path, progress: bool) -> dict[str, int]:
    """Check every split the task reads (files present, label maps valid); one-line ``DatasetError``.

    Returns the number of images per split.
    """
    ds = task.dataset_def
    counts, problems = {}, []
    for split in (*ds.train_splits, ds.test_split):
        samples = ds.samples(data_root, split)
        counts[split] = len(samples)
        missing = missing_files(samples, limit=3)
        if not samples:
            problems.append(f"{ds.name} {split} has no images")
        elif missing:
            problems.append(f"{ds.name} {split} lists files that do not exist: {', '.join(missing)}")
        else:
            show = progress and len(samples) >= PROGRESS_FROM
            problems += check_samples(samples, ds.valid_ids, progress=show, desc=f"check {ds.name} {split}")
        if problems:
            more = f" ({len(problems)} problems; see `bench data verify {ds.name} --root {data_root}`)"
            raise DatasetError(f"{task.name}: {problems[0]}{more if len(problems) > 1 else ''}")
    return counts


def fingerprint(task: SegmentationTask, settings: SegSettings, ctx: TaskContext, backbone: Backbone) -> str:
    """Identity of a training run: task, version, settings, backbone weights, seed, data root."""
    key = {
        "task": task.name,
        "version": task.version,
        "settings": asdict(settings),
        "backbone": backbone.name,
        "weights": ctx.weights_digest,
        "seed": ctx.seed,
        "data_root": str(ctx.data_root),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _release(name: str) -> None:
    """Close and forget the mmengine singletons a Runner created under ``name``."""
    from mmengine.logging import MessageHub, MMLogger
    from mmengine.registry import DefaultScope
    from mmengine.visualization import Visualizer

    for cls in (MMLogger, MessageHub, Visualizer, DefaultScope):
        instance = cls._instance_dict.pop(name, None)
        for handler in list(getattr(instance, "handlers", [])):
            handler.close()
            instance.removeHandler(handler)


def run_segmentation(
    task: SegmentationTask, backbone: Backbone, ctx: TaskContext, extra_hooks: Sequence[Any] = ()
) -> TaskOutput:
    """Fine-tune and evaluate (see the module docstring); metrics mIoU / mAcc / aAcc in %.

    ``extra_hooks``: further mmengine hook instances for the Runner (benchmarks use it to time the loop).
    """
    settings = task.settings_for(ctx.profile)
    ds = task.dataset_def
    data_dir = DATASETS.get(ds.name).path(ctx.data_root)
    counts = check_data(task, ctx.data_root, ctx.progress)
    load_mmseg(task.name)
    from mmengine.config import Config
    from mmengine.runner import Runner

    from tasks.segmentation.mmseg_parts import (
        PerClassIoUMetric,
        PlainStateCheckpointHook,
        ProgressHook,
        WeightCheckHook,
        read_state,
    )

    fp = fingerprint(task, settings, ctx, backbone)
    with ExitStack() as stack:
        stack.enter_context(warnings.catch_warnings())
        for message in MMSEG_NOISE:
            warnings.filterwarnings("ignore", message=message, category=UserWarning)
        if ctx.work_dir is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="augbench-seg-")))
        else:
            root = ctx.work_dir
        work = root / task.name.replace("/", "-") / fp[:16]
        work.mkdir(parents=True, exist_ok=True)
        weights = work / "backbone_init.pth"
        expected = {k: v.detach().cpu().clone() for k, v in backbone.net.state_dict().items()}
        tmp = weights.with_name(f".{weights.name}.tmp-{os.getpid()}")
        torch.save(expected, tmp)
        os.replace(tmp, weights)
        cfg = build_config(ds, settings, backbone.net, data_dir, weights)
        atomic_write_text(work / "mmseg_config.py", Config(cfg).pretty_text)
        state_path = work / "state.pt"
        finished = None
        if state_path.is_file():
            state = read_state(state_path, fp)
            finished = state if state["iter"] == settings.iterations else None
        check = WeightCheckHook(expected, str(weights))
        resume = PlainStateCheckpointHook(state_path, settings.checkpoint_every, fp)
        progress = ProgressHook(task.name, ctx.progress)
        metric = PerClassIoUMetric(output_dir=str(work / "predictions"))
        name = f"augbench-{task.name.replace('/', '-')}-{os.getpid()}-{next(_RUNNER_COUNT)}"
        config = Config(copy.deepcopy(cfg))  # ConfigDicts: mmseg reads e.g. test_cfg.mode as attributes
        runner = Runner(
            work_dir=str(work / "mmengine"),
            cfg=config,
            custom_hooks=[check, resume, progress, *extra_hooks],
            test_evaluator=[metric],
            launcher="none",
            log_level="WARNING",
            randomness=dict(seed=ctx.seed),
            experiment_name=name,
            **{key: config[key] for key in cfg},
        )
        name = runner.experiment_name
        stack.callback(_release, name)
        t0 = time.perf_counter()
        if finished is None:
            runner.train()
        else:
            runner.model.load_state_dict(finished["model"])
        t1 = time.perf_counter()
        metrics = runner.test()
        t2 = time.perf_counter()
    trained = settings.iterations - resume.resumed_from if finished is None else 0
    details: dict[str, Any] = {
        **metric.last,
        "images": counts,
        "iterations": settings.iterations,
        "trained_iterations": trained,
        "resumed_from": resume.resumed_from if finished is None else settings.iterations,
        "train_seconds": round(t1 - t0, 3),
        "test_seconds": round(t2 - t1, 3),
        "iterations_per_second": round(trained / (progress.end - progress.start), 3) if trained else None,
        "data_wait_seconds": round(progress.data_seconds, 3),
        "step_seconds": round(progress.step_seconds, 3),
        "loss_curve": progress.losses,
        "weights_check": check.report or {"skipped": "evaluated a finished state"},
        "mmseg_backbone": {k: v for k, v in cfg["model"]["backbone"].items() if k != "init_cfg"},
        "work_dir": str(work) if ctx.work_dir is not None else None,
        "predictions_dir": str(work / "predictions") if ctx.work_dir is not None else None,
        "predictions_format": "PNG per val image, ids as in the annotation files (ADE20K: 1..150)",
        "libraries": _versions(),
    }
    return TaskOutput({k: float(metrics[f"seg/{k}"]) for k in ("mIoU", "mAcc", "aAcc")}, details)


def _versions() -> dict[str, str]:
    import mmcv
    import mmengine
    import mmseg

    return {
        "mmsegmentation": mmseg.__version__,
        "mmengine": mmengine.__version__,
        "mmcv": mmcv.__version__,
        "mmcv_ops": "augbench pure-PyTorch stand-in" if mmcv_compat.install() else "mmcv",
    }
