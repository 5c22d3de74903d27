"""The ``detectron2`` backend: detectron2's own trainer, DatasetCatalog, checkpointer and evaluators.

* Data: each VOC image set / COCO split is registered in ``DatasetCatalog`` under a name derived from its
  path (``augbench_voc_2007_test_<hash>``) with detectron2's ``load_voc_instances`` / COCO registration,
  and ``MetadataCatalog`` entries for ``PascalVOCDetectionEvaluator`` / ``COCOEvaluator``.
* Model: the config is generated from the protocol (:func:`build_cfg`); augbench's backbone and ROI heads
  (:mod:`tasks.detection.d2_model`) handle any registry ResNet.
* Weights: the backbone's torchvision state dict is converted to detectron2's naming
  (:mod:`tasks.detection.convert`) and loaded in memory through ``DetectionCheckpointer`` with
  ``matching_heuristics``; anything that did not load fails the run (:func:`load_pretrained`).
* Training: ``DefaultTrainer`` (SGD, WarmupMultiStepLR, gradient clipping from the protocol, PreciseBN
  hook, ``PeriodicCheckpointer`` every ``checkpoint_period`` iterations into ``<work_dir>/detectron2``);
  a killed run resumes from its last checkpoint (``resume_or_load``; detectron2's checkpoints hold plain
  state dicts and load with torch's default ``weights_only=True``).  The data sampler is seeded with the
  task seed.  Evaluation runs once after training with the dataset's evaluator.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_train_loader
from detectron2.data.datasets import register_coco_instances
from detectron2.data.datasets.pascal_voc import load_voc_instances
from detectron2.data.samplers import TrainingSampler
from detectron2.engine import DefaultTrainer, hooks
from detectron2.evaluation import (
    COCOEvaluator,
    DatasetEvaluator,
    PascalVOCDetectionEvaluator,
    inference_on_dataset,
)
from detectron2.utils.env import seed_all_rng
from detectron2.utils.events import JSONWriter
from tqdm import tqdm

from bench.errors import BenchError, DatasetError
from pretrain.backbones import Backbone
from pretrain.distributed import world_size
from tasks.base import TaskContext
from tasks.datasets.coco import annotation_file
from tasks.datasets.detection import DetSplit
from tasks.datasets.voc import VOC_SETS, year_dir
from tasks.detection.convert import check_complete, convert_state_dict
from tasks.detection.d2_model import BACKBONE_NAME, FPN_BACKBONE_NAME, ROI_HEADS_NAME, register
from tasks.detection.protocol import DetProtocol
from tasks.detection.tv_model import stage_channels, stem_stride

KEY_FILE = "augbench-key.txt"


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


class _TimedEvaluator(DatasetEvaluator):
    """An evaluator wrapper adding the time spent in it (outside the model) to ``seconds["eval_metric"]``."""

    def __init__(self, inner: DatasetEvaluator, seconds: dict[str, float]) -> None:
        self.inner, self.seconds = inner, seconds
        seconds.setdefault("eval_metric", 0.0)

    def reset(self) -> None:
        self.inner.reset()

    def process(self, inputs: Any, outputs: Any) -> None:
        t = time.perf_counter()
        self.inner.process(inputs, outputs)
        self.seconds["eval_metric"] += time.perf_counter() - t

    def evaluate(self) -> Any:
        t = time.perf_counter()
        result = self.inner.evaluate()
        self.seconds["eval_metric"] += time.perf_counter() - t
        return result


class _Progress(hooks.HookBase):
    def __init__(self, bar: tqdm) -> None:
        self.bar = bar

    def after_step(self) -> None:
        self.bar.update(1)


class _FullModelClip(torch.optim.Optimizer):
    """Optimizer mixin: clip the L2 norm of all gradients to ``max_norm`` before each step."""

    max_norm: float

    def step(self, closure: Any = None) -> Any:
        grads = [q for g in self.param_groups for q in g["params"] if q.grad is not None]
        torch.nn.utils.clip_grad_norm_(grads, self.max_norm)
        return super().step(closure)


class AugbenchTrainer(DefaultTrainer):
    """``DefaultTrainer`` with the dataset's evaluator, a seeded sampler, a JSON event log only and no
    periodic evaluation (evaluation runs once, after training)."""

    @classmethod
    def build_train_loader(cls, cfg: CfgNode) -> Any:
        from detectron2.data import DatasetMapper, get_detection_dataset_dicts

        dataset = get_detection_dataset_dicts(cfg.DATASETS.TRAIN, filter_empty=True)
        sampler = TrainingSampler(len(dataset), shuffle=True, seed=cfg.SEED)
        return build_detection_train_loader(
            cfg, mapper=DatasetMapper(cfg, True), dataset=dataset, sampler=sampler
        )

    @classmethod
    def build_optimizer(cls, cfg: CfgNode, model: torch.nn.Module) -> torch.optim.Optimizer:
        """detectron2's SGD and parameter groups; with ``AUGBENCH_CLIP_FULL_MODEL`` > 0, every step first
        clips the L2 norm of all gradients to it."""
        optimizer = super().build_optimizer(cfg, model)
        if cfg.SOLVER.AUGBENCH_CLIP_FULL_MODEL > 0:
            base = type(optimizer)
            optimizer.__class__ = type(f"FullModelClipped{base.__name__}", (_FullModelClip, base), {})
            optimizer.max_norm = cfg.SOLVER.AUGBENCH_CLIP_FULL_MODEL
        return optimizer

    @classmethod
    def build_evaluator(
        cls, cfg: CfgNode, dataset_name: str, output_folder: str | None = None
    ) -> DatasetEvaluator:
        if dataset_name.startswith("augbench_voc"):
            return PascalVOCDetectionEvaluator(dataset_name)
        tasks = ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)
        return COCOEvaluator(
            dataset_name, tasks, False, output_dir=output_folder or f"{cfg.OUTPUT_DIR}/inference"
        )

    def build_hooks(self) -> list[hooks.HookBase]:
        return [h for h in super().build_hooks() if not isinstance(h, hooks.EvalHook)]

    def build_writers(self) -> list[Any]:
        return [JSONWriter(f"{self.cfg.OUTPUT_DIR}/metrics.json")]


_TRUNK = re.compile(r"(^|\.)(stem|res[2-5])\.")


def load_pretrained(trainer: AugbenchTrainer, tensors: dict[str, torch.Tensor], where: str) -> int:
    """Load the converted backbone through detectron2's checkpointer with matching heuristics and fail
    unless every tensor loaded and every trunk tensor of the model was covered."""
    converted = convert_state_dict(tensors)
    checkpoint = {"model": dict(converted), "__author__": "augbench", "matching_heuristics": True}
    model_state = trainer.checkpointer.model.state_dict()
    shapes = set()
    for key, value in converted.items():  # the heuristics drop mis-shaped tensors silently: find them here
        matches = [m for m in model_state if m == key or m.endswith("." + key)]
        if matches and all(model_state[m].shape != value.shape for m in matches):
            shapes.add(key)
    incompatible = trainer.checkpointer._load_model(checkpoint)
    shapes |= {k for k, _, _ in incompatible.incorrect_shapes}
    not_loaded = set(incompatible.unexpected_keys) & set(converted)
    uncovered = [k for k in incompatible.missing_keys if _TRUNK.search(k) and ".res5.norm." not in k]
    check_complete(
        where, not_loaded=sorted(not_loaded - shapes), wrong_shape=sorted(shapes), uncovered=uncovered
    )
    return len(converted)


@contextlib.contextmanager
def _logging_to(path: Path) -> Iterator[None]:
    """detectron2's and fvcore's logs go to ``path`` (not the console) while training."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("[%(asctime)s %(name)s] %(message)s"))
    loggers = [logging.getLogger(n) for n in ("detectron2", "fvcore", "d2")]
    saved = [(lg.level, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.INFO)
        lg.propagate = False
        lg.addHandler(handler)
    try:
        yield
    finally:
        for lg, (level, propagate) in zip(loggers, saved, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)
            lg.propagate = propagate
        handler.close()


def run(
    p: DetProtocol,
    backbone: Backbone,
    train_split: DetSplit,
    test_split: DetSplit,
    work_dir: Path,
    key: str,
    ctx: TaskContext,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Fine-tune and evaluate through detectron2 (the backend entry point)."""
    if train_split.classes != test_split.classes:
        raise DatasetError(f"{p.dataset}: the train and test splits define different classes")
    register()
    out = work_dir / "detectron2"
    key_file = out / KEY_FILE
    if out.exists() and (not key_file.is_file() or key_file.read_text().strip() != key):
        shutil.rmtree(out)  # state of another protocol, backbone or seed
    out.mkdir(parents=True, exist_ok=True)
    key_file.write_text(key + "\n")
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    train_names, test_name = register_datasets(p, ctx.data_root, train_split.classes)
    seed_all_rng(ctx.seed)
    with _logging_to(out / "log.txt"):
        cfg = build_cfg(p, backbone, len(train_split.classes), train_names, test_name, out, ctx)
        trainer = AugbenchTrainer(cfg)
        resumed = trainer.checkpointer.has_checkpoint()
        loaded = 0
        if resumed:
            trainer.resume_or_load(resume=True)
        else:
            tensors = {k: v.detach().cpu() for k, v in backbone.net.state_dict().items()}
            loaded = load_pretrained(
                trainer, tensors, f"loading the {backbone.name} backbone into detectron2"
            )
        seconds["build"] = time.perf_counter() - t0
        start = trainer.start_iter
        bar = tqdm(total=p.iterations, initial=start, desc=f"{p.task} (detectron2)", disable=not ctx.progress)
        trainer.register_hooks([_Progress(bar)])
        t = time.perf_counter()
        if start < p.iterations:
            trainer.train()
        bar.close()
        seconds["train"] = time.perf_counter() - t
        data_time = trainer.storage.history("data_time").values() if start < p.iterations else []
        seconds["data"] = float(sum(v for v, _ in data_time))
        t = time.perf_counter()
        loader = AugbenchTrainer.build_test_loader(cfg, test_name)  # loading sets COCO's id mapping first
        evaluator = _TimedEvaluator(AugbenchTrainer.build_evaluator(cfg, test_name), seconds)
        with contextlib.redirect_stdout(io.StringIO()):
            results = inference_on_dataset(trainer.model, loader, evaluator)
        seconds["eval"] = time.perf_counter() - t
    metrics = _metrics(results, p)
    details = {
        "loaded_backbone_tensors": loaded,
        "resumed_from": start,
        "detectron2_config": cfg.dump(),
        "seconds": seconds,
    }
    return metrics, details


def _metrics(results: Any, p: DetProtocol) -> dict[str, float]:
    import math

    def value(section: str, name: str) -> float:
        v = float(results[section][name])
        return 0.0 if math.isnan(v) else v

    if not isinstance(results, dict) or "bbox" not in results:
        raise BenchError(f"{p.task}: detectron2 returned no evaluation results")
    if p.dataset == "voc":
        return {name: value("bbox", name) for name in ("AP", "AP50", "AP75")}
    kinds = ("bbox", "segm") if p.mask else ("bbox",)
    return {f"{k}_{name}": value(k, name) for k in kinds for name in ("AP", "AP50", "AP75")}
