"""Run a segmentation task with mmsegmentation: the Runner, evaluation in that Runner, resumable state.

Flow of :func:`run_segmentation` (one task, one process):

1. check the data the task reads: every label map decodes, has its image's size and only valid ids
   (:func:`check_data`; mmseg itself would misalign or crash mid-run);
2. write the backbone's weights (torchvision keys) to ``<work>/backbone_init.pth`` (a plain state dict);
3. generate the mmseg config from the task definition and profile
   (:func:`~tasks.segmentation.mmseg_config.build_config`; written to
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

from core.errors import DatasetError
from core.results import atomic_write_text
from pretrain.backbones import Backbone
from tasks.base import TaskContext, TaskOutput
from tasks.datasets.registry import DATASETS
from tasks.datasets.segmaps import check_samples, missing_files
from tasks.segmentation import mmcv_compat
from tasks.segmentation.mmseg_config import build_config

if TYPE_CHECKING:
    from tasks.segmentation.protocols import SegmentationTask, SegSettings

EXTRA = "seg"
#: Label checks show a progress bar from this many maps on (the real datasets, not the stand-ins).
PROGRESS_FROM = 2000
#: mmseg's warnings about its own defaults/deprecations, emitted on every run (not about the user's input).
MMSEG_NOISE = (
    r"Default ``avg_non_ignore`` is False",
    r"``build_loss`` would be deprecated",
    r"When align_corners=True, the output would more aligned",
)
_RUNNER_COUNT = itertools.count()


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
        if settings.channels_last:  # before init_weights / optimizer: both act on these same parameters
            runner.model.to(memory_format=torch.channels_last)
        t0 = time.perf_counter()
        if finished is None:
            runner.train()
        else:
            runner.model.load_state_dict(finished["model"])
        t1 = time.perf_counter()
        metrics = runner.test()
        t2 = time.perf_counter()
        conv = next(m.weight for m in runner.model.modules() if isinstance(m, torch.nn.Conv2d))
        layout = "channels_last" if conv.is_contiguous(memory_format=torch.channels_last) else "contiguous"
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
        "conv_weight_layout": layout,  # what the model actually ran in (settings.channels_last asks for it)
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
