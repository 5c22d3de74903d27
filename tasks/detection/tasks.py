"""The dense transfer tasks: ``det/voc07`` (Faster R-CNN C4 on VOC) and ``instseg/coco[:<variant>]`` (Mask
R-CNN on COCO), each run by one of two backends.

Names: ``det/voc07[@<backend>]`` and ``instseg/coco[:c4_2x|c4_1x|fpn_1x][@<backend>]`` with ``<backend>``
``detectron2``, ``torchvision`` or ``auto`` (the default: detectron2 if it imports, else torchvision).  The
backend is resolved when the task is built and is part of the task's name in results
(``det/voc07@detectron2``, ``instseg/coco:c4_2x@torchvision``), so results of two backends never share a
leaderboard column or a result file.  Protocols: :mod:`tasks.detection.protocol`.

``run`` reads the dataset with augbench's own readers first (so bad input fails with one line before any
training), builds the protocol for the profile, fine-tunes the whole backbone with the detector and
evaluates on the test split.  Resumable state lives in ``ctx.work_dir/<task name>/`` (keyed by the
protocol, the weights digest and the seed: anything else starts over).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import json
import logging
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import BenchError, ConfigError
from pretrain.backbones import Backbone
from pretrain.distributed import world_size
from tasks.base import Metric, TaskContext, TaskOutput
from tasks.datasets.coco import load_coco
from tasks.datasets.detection import DetSplit
from tasks.datasets.voc import load_voc
from tasks.detection.protocol import DEFAULT_VARIANT, VARIANTS, DetProtocol, build_protocol

BACKENDS = ("detectron2", "torchvision")
DET_USAGE = "det/voc07[@detectron2|@torchvision]"
INSTSEG_USAGE = "instseg/coco[:c4_2x|c4_1x|fpn_1x][@detectron2|@torchvision]"
DET_DESCRIPTION = (
    "Faster R-CNN C4 fine-tuned on VOC07+12 trainval, AP/AP50/AP75 on VOC07 test (MoCo protocol); "
    "backend auto = detectron2 if installed, else torchvision"
)
INSTSEG_DESCRIPTION = (
    "Mask R-CNN (C4 2x default; C4 1x, FPN 1x) fine-tuned on COCO train2017, box and mask AP on val2017 "
    "(MoCo protocol); backend auto = detectron2 if installed, else torchvision"
)


@functools.cache
def detectron2_available() -> bool:
    """Whether detectron2 and its compiled extension import."""
    try:
        importlib.import_module("detectron2")
        importlib.import_module("detectron2._C")
    except Exception:  # an ABI mismatch raises ImportError/OSError: treat as absent
        return False
    return True


def resolve_backend(choice: str | None) -> str:
    """``auto``/``None`` -> detectron2 if importable else torchvision; explicit names are checked."""
    if choice in (None, "", "auto"):
        return "detectron2" if detectron2_available() else "torchvision"
    if choice not in BACKENDS:
        raise ConfigError(f"unknown detection backend {choice!r}; choose auto, {' or '.join(BACKENDS)}")
    return choice


@dataclass(frozen=True)
class DenseTransferTask:
    """``det/voc07`` or ``instseg/coco:<variant>`` on a resolved ``backend`` (see the module docstring)."""

    base: str
    variant: str
    backend: str
    version: int = 1

    @property
    def name(self) -> str:
        variant = f":{self.variant}" if len(VARIANTS[self.base]) > 1 else ""
        return f"{self.base}{variant}@{self.backend}"

    @property
    def family(self) -> str:
        return self.base.split("/")[0]

    @property
    def datasets(self) -> tuple[str, ...]:
        return ("voc",) if self.base == "det/voc07" else ("coco",)

    @property
    def metrics(self) -> tuple[Metric, ...]:
        if self.base == "det/voc07":
            return (Metric("AP"), Metric("AP50"), Metric("AP75"))
        return tuple(Metric(f"{kind}_{m}") for kind in ("bbox", "segm") for m in ("AP", "AP50", "AP75"))

    @property
    def primary(self) -> str:
        return "AP50" if self.base == "det/voc07" else "segm_AP"

    @property
    def description(self) -> str:
        return DET_DESCRIPTION if self.base == "det/voc07" else INSTSEG_DESCRIPTION

    def protocol(self, profile: str) -> dict[str, Any]:
        p = build_protocol(self.base, self.variant, profile)
        return {
            "name": f"moco-{self.base.replace('/', '-')}-{self.variant}",
            "backend": self.backend,
            **p.as_dict(),
        }

    def _splits(self, p: DetProtocol, root: Path) -> tuple[DetSplit, DetSplit]:
        load = load_voc if p.dataset == "voc" else load_coco
        return load(root, p.train_split), load(root, p.test_split)

    def run(self, backbone: Backbone, ctx: TaskContext) -> TaskOutput:
        p = build_protocol(self.base, self.variant, ctx.profile)
        return run_protocol(self, p, backbone, ctx)


def state_key(task: DenseTransferTask, p: DetProtocol, ctx: TaskContext, backbone: Backbone) -> str:
    """What resumable state must match: task, protocol, backend, weights, seed."""
    blob = json.dumps(
        {"task": task.name, "version": task.version, "protocol": p.as_dict(), "weights": ctx.weights_digest,
         "backbone": backbone.name, "seed": ctx.seed},
        sort_keys=True,
    )  # fmt: skip
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_protocol(task: DenseTransferTask, p: DetProtocol, backbone: Backbone, ctx: TaskContext) -> TaskOutput:
    """Train and evaluate ``task`` with protocol ``p`` (tests pass shortened protocols)."""
    t0 = time.perf_counter()
    train, test = task._splits(p, ctx.data_root)
    read_seconds = time.perf_counter() - t0
    tmp: tempfile.TemporaryDirectory[str] | None = None
    if ctx.work_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="augbench-det-")
        work_dir = Path(tmp.name)
    else:
        work_dir = ctx.work_dir / task.name.replace("/", "-").replace(":", "-")
    work_dir.mkdir(parents=True, exist_ok=True)
    key = state_key(task, p, ctx, backbone)
    try:
        with _quiet():
            metrics, details = _run_backend(task, p, backbone, train, test, work_dir, key, ctx)
    finally:
        if tmp is not None:
            tmp.cleanup()
    details = {
        "backend": task.backend,
        "norm_effective": p.norm if task.backend == "detectron2" and world_size() > 1 else "BN",
        "iterations": p.iterations,
        "batch": p.batch,
        "min_size_train": list(p.min_size_train),
        "min_size_test": p.min_size_test,
        "classes": list(train.classes),
        "train_images": len(train),
        "test_images": len(test),
        "test_objects": test.num_objects,
        **details,
    }
    details["seconds"] = {"read_annotations": read_seconds, **details.get("seconds", {})}
    return TaskOutput(metrics=metrics, details=details)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence third-party deprecation chatter (torch.jit.script, meshgrid, fx tracing) during a run."""
    fx_logger = logging.getLogger("torch.fx._symbolic_trace")
    level = fx_logger.level
    fx_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
            warnings.filterwarnings("ignore", message=r"torch\.meshgrid", category=UserWarning)
            yield
    finally:
        fx_logger.setLevel(level)


def _run_backend(
    task: DenseTransferTask,
    p: DetProtocol,
    backbone: Backbone,
    train: DetSplit,
    test: DetSplit,
    work_dir: Path,
    key: str,
    ctx: TaskContext,
) -> tuple[dict[str, float], dict[str, Any]]:
    if task.backend == "detectron2":
        if not detectron2_available():
            raise BenchError(
                f"{task.name} needs detectron2, which does not import here; install it from its "
                f"repository (README: detection) or use {task.base}@torchvision"
            )
        module = importlib.import_module("tasks.detection.d2_backend")
    else:
        module = importlib.import_module("tasks.detection.tv_backend")
    result: tuple[dict[str, float], dict[str, Any]] = module.run(p, backbone, train, test, work_dir, key, ctx)
    return result


def build_dense_task(base: str, argument: str | None) -> DenseTransferTask:
    """``<base>[:<variant>][@<backend>]`` -> task (template builder; ``argument``: what follows ``base``)."""
    arg = argument or ""
    variant, _, backend = arg.partition("@")
    variant = variant or DEFAULT_VARIANT[base]
    if variant not in VARIANTS[base]:
        usage = DET_USAGE if base == "det/voc07" else INSTSEG_USAGE
        raise ConfigError(f"{base} has variants {', '.join(VARIANTS[base])}; got {variant!r} ({usage})")
    return DenseTransferTask(base, variant, resolve_backend(backend))
