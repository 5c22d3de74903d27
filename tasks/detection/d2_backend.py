"""The ``detectron2`` backend: detectron2's own trainer, DatasetCatalog, checkpointer and evaluators.

* Data and config: :mod:`tasks.detection.d2_config` (``DatasetCatalog`` registration with detectron2's
  readers; the config generated from the protocol); augbench's backbone and ROI heads
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
import io
import logging
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from detectron2.config import CfgNode
from detectron2.data import build_detection_train_loader
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

from core.errors import BenchError, DatasetError
from pretrain.backbones import Backbone
from tasks.base import TaskContext
from tasks.datasets.detection import DetSplit
from tasks.detection.convert import check_complete, convert_state_dict
from tasks.detection.d2_config import build_cfg, register_datasets
from tasks.detection.d2_model import register
from tasks.detection.protocol import DetProtocol

KEY_FILE = "augbench-key.txt"


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
