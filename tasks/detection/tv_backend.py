"""The ``torchvision`` backend: fine-tune a torchvision detector (:mod:`tasks.detection.tv_model`) with the
protocol's schedule, then evaluate it (:mod:`tasks.detection.metrics`).

Training follows detectron2's defaults where the protocol does not say otherwise: SGD (momentum 0.9,
weight decay 1e-4, none on norm parameters), linear warm-up from ``warmup_factor`` over ``warmup_iters``,
x``gamma`` at each of ``steps``, optional gradient clipping (L2 norm of all gradients, the smoke profile's
guard against divergence), horizontal flips, a random shorter side from ``min_size_train`` per image,
crowd regions left out, difficult VOC objects kept.  After training, PRECISE_BN re-estimates every
BatchNorm's statistics as the plain average over ``precise_bn_iters`` training batches.

Determinism and resumption: the image order is a pure function of ``(seed, position)`` (a fresh permutation
per pass over the data) and torch's generator is re-seeded from ``(seed, iteration)`` before every step
(scale choice, RPN/ROI sampling), so a run resumed from ``checkpoint.pt`` (model, optimizer, iteration;
saved atomically every ``checkpoint_period`` iterations, loadable with ``weights_only=True``) continues
exactly as the uninterrupted run would.  ``final.pt`` (after PRECISE_BN) makes a finished run evaluate only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from tqdm import tqdm

from core.errors import BenchError, DatasetError
from pretrain.backbones import Backbone
from pretrain.checkpoint import load_state, save_state
from tasks.base import TaskContext
from tasks.datasets.detection import DetRecord, DetSplit
from tasks.detection.metrics import ImageDetections, coco_metrics, voc_metrics
from tasks.detection.protocol import DetProtocol
from tasks.detection.tv_model import build_tv_detector, load_backbone

NORM_TYPES = (nn.BatchNorm2d, nn.SyncBatchNorm, nn.GroupNorm, nn.LayerNorm)


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)[0] >> np.uint64(1))


class SampleStream:
    """The training stream: position ``k`` -> (record index, flip), a pure function of ``(seed, k)``."""

    def __init__(self, count: int, seed: int, flip: bool) -> None:
        self.count, self.seed, self.flip = count, seed, flip
        self._perm: tuple[int, np.ndarray] | None = None

    def __getitem__(self, position: int) -> tuple[int, bool]:
        epoch, offset = divmod(position, self.count)
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.count))
        flip = self.flip and bool(np.random.default_rng([self.seed, 1 << 20, position]).random() < 0.5)
        return int(self._perm[1][offset]), flip


def decode_masks(record: DetRecord, keep: np.ndarray) -> torch.Tensor:
    """Binary masks ``uint8 [N, H, W]`` of the kept objects, rasterised from their COCO segmentations."""
    from pycocotools import mask as mask_utils

    assert record.segmentations is not None
    masks = []
    for segm in (s for s, k in zip(record.segmentations, keep, strict=True) if k):
        if isinstance(segm, list):
            rle = mask_utils.merge(mask_utils.frPyObjects(segm, record.height, record.width))
        elif isinstance(segm.get("counts"), list):
            rle = mask_utils.frPyObjects(segm, record.height, record.width)
        else:
            rle = segm
        masks.append(mask_utils.decode(rle))
    return (
        torch.from_numpy(np.stack(masks))
        if masks
        else torch.zeros((0, record.height, record.width), dtype=torch.uint8)
    )


def load_image(record: DetRecord) -> torch.Tensor:
    """The image as float ``[3, H, W]`` in [0, 1] (RGB)."""
    try:
        with Image.open(record.file_name) as im:
            array = np.asarray(im.convert("RGB"))
    except OSError as exc:
        raise BenchError(f"cannot read image {record.file_name}: {exc}") from None
    if array.shape[:2] != (record.height, record.width):
        raise BenchError(
            f"{record.file_name} is {array.shape[1]}x{array.shape[0]} pixels; "
            f"its annotation says {record.width}x{record.height}"
        )
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255)


def training_sample(
    record: DetRecord, flip: bool, masks: bool
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Image and target (boxes, 1-based labels, masks) of one record, crowd regions dropped."""
    image = load_image(record)
    keep = ~record.crowd
    boxes = torch.from_numpy(record.boxes[keep]).float()
    target = {"boxes": boxes, "labels": torch.from_numpy(record.labels[keep] + 1)}
    if masks:
        target["masks"] = decode_masks(record, keep)
    if flip:
        image = image.flip(-1)
        target["boxes"] = torch.stack(
            [record.width - boxes[:, 2], boxes[:, 1], record.width - boxes[:, 0], boxes[:, 3]], 1
        )
        if masks:
            target["masks"] = target["masks"].flip(-1)
    return image, target


def lr_factor(p: DetProtocol, iteration: int) -> float:
    """detectron2's WarmupMultiStepLR: linear warm-up from ``warmup_factor``, x``gamma`` per passed step."""
    factor = p.gamma ** sum(iteration >= s for s in p.steps)
    if iteration < p.warmup_iters:
        alpha = iteration / p.warmup_iters
        factor *= p.warmup_factor * (1 - alpha) + alpha
    return factor


def build_optimizer(model: nn.Module, p: DetProtocol) -> torch.optim.SGD:
    """SGD with ``weight_decay_norm`` on norm parameters and ``weight_decay`` on all others."""
    norm: list[nn.Parameter] = []
    other: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in model.modules():
        for param in module.parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            (norm if isinstance(module, NORM_TYPES) else other).append(param)
    groups = [
        {"params": other, "weight_decay": p.weight_decay},
        {"params": norm, "weight_decay": p.weight_decay_norm},
    ]
    return torch.optim.SGD(groups, lr=p.base_lr, momentum=p.momentum)


class Timer:
    """Accumulated wall time per phase (``data``, ``model``, ...)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, phase: str, start: float) -> float:
        now = time.perf_counter()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + now - start
        return now


def _batches(
    stream: SampleStream, records: tuple[DetRecord, ...], p: DetProtocol, start: int, stop: int
) -> Iterator[tuple[int, list[torch.Tensor], list[dict[str, torch.Tensor]]]]:
    for iteration in range(start, stop):
        samples = [
            training_sample(records[i], flip, p.mask)
            for i, flip in (stream[iteration * p.batch + j] for j in range(p.batch))
        ]
        yield iteration, [s[0] for s in samples], [s[1] for s in samples]


@torch.no_grad()
def precise_bn(model: GeneralizedRCNN, batches: Iterator[Any], device: torch.device) -> None:
    """Replace every BatchNorm's running statistics by their plain average over ``batches``."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    model.train()
    for _, images, targets in batches:
        model([i.to(device) for i in images], [{k: v.to(device) for k, v in t.items()} for t in targets])
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum


def train(
    model: GeneralizedRCNN,
    p: DetProtocol,
    train_split: DetSplit,
    work_dir: Path,
    key: str,
    seed: int,
    device: torch.device,
    progress: bool,
    timer: Timer,
) -> dict[str, Any]:
    """Fine-tune ``model`` (resuming from ``work_dir``); returns what the result records about training."""
    final, ckpt = work_dir / "final.pt", work_dir / "checkpoint.pt"
    if final.is_file():
        state = load_state(final)
        if state.get("key") == key:
            model.load_state_dict(state["model"])
            return {"resumed_from": p.iterations, "final_loss": state.get("final_loss")}
    records = train_split.trainable()
    stream = SampleStream(len(records), seed, p.flip_train)
    optimizer = build_optimizer(model, p)
    start = 0
    if ckpt.is_file():
        state = load_state(ckpt)
        if state.get("key") == key:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            start = int(state["iteration"])
    model.to(device).train()
    params = [q for g in optimizer.param_groups for q in g["params"]]
    losses: list[float] = []
    bar = tqdm(total=p.iterations, initial=start, desc=f"{p.task} (torchvision)", disable=not progress)
    t = time.perf_counter()
    for iteration, images, targets in _batches(stream, records, p, start, p.iterations):
        t = timer.add("data", t)
        torch.manual_seed(_seed(seed, iteration))
        for group in optimizer.param_groups:
            group["lr"] = p.base_lr * lr_factor(p, iteration)
        loss_dict = model(
            [i.to(device) for i in images], [{k: v.to(device) for k, v in d.items()} for d in targets]
        )
        loss = torch.stack(list(loss_dict.values())).sum()
        if not math.isfinite(loss.item()):
            raise BenchError(
                f"{p.task}: training diverged at iteration {iteration} (loss {loss.item()}); "
                f"lower the learning rate or enable gradient clipping"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if p.grad_clip is not None:
            nn.utils.clip_grad_norm_(params, p.grad_clip)
        optimizer.step()
        losses.append(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        done = iteration + 1
        if done % p.checkpoint_period == 0 and done < p.iterations:
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "iteration": done,
                "key": key,
            }
            save_state(ckpt, state)
        t = timer.add("model", t)
    bar.close()
    if p.precise_bn_iters > 0 and p.iterations > 0:
        stop = p.iterations + p.precise_bn_iters
        precise_bn(model, _batches(stream, records, p, p.iterations, stop), device)
        t = timer.add("precise_bn", t)
    final_loss = float(np.mean(losses[-20:])) if losses else None
    save_state(final, {"model": model.state_dict(), "key": key, "final_loss": final_loss})
    ckpt.unlink(missing_ok=True)
    return {"resumed_from": start, "final_loss": final_loss}


@torch.no_grad()
def infer(
    model: GeneralizedRCNN,
    p: DetProtocol,
    split: DetSplit,
    device: torch.device,
    progress: bool,
    timer: Timer,
) -> dict[str | int, ImageDetections]:
    """Detections on every image of ``split`` at the test size."""
    from pycocotools import mask as mask_utils

    model.to(device).eval()
    model.transform.min_size = (p.min_size_test,)
    model.transform.max_size = p.max_size_test
    out: dict[str | int, ImageDetections] = {}
    t = time.perf_counter()
    for record in tqdm(split.records, desc=f"{p.task} eval", disable=not progress):
        image = load_image(record)
        t = timer.add("eval_data", t)
        result = model([image.to(device)])[0]
        rles = None
        if "masks" in result:
            binary = (result["masks"][:, 0] > 0.5).cpu().numpy().astype(np.uint8)
            rles = [mask_utils.encode(np.asfortranarray(m)) for m in binary]
        out[record.image_id] = ImageDetections(
            boxes=result["boxes"].cpu().numpy(),
            scores=result["scores"].cpu().numpy(),
            labels=result["labels"].cpu().numpy() - 1,
            masks=rles,
        )
        t = timer.add("eval_model", t)
    model.transform.min_size = p.min_size_train
    model.transform.max_size = p.max_size_train
    return out


def run(
    p: DetProtocol,
    backbone: Backbone,
    train_split: DetSplit,
    test_split: DetSplit,
    work_dir: Path,
    key: str,
    ctx: TaskContext,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Fine-tune and evaluate (the backend entry point used by :mod:`tasks.detection.tasks`)."""
    try:
        import pycocotools  # noqa: F401
    except ImportError:
        raise BenchError(f"{p.task} needs pycocotools: pip install 'augbench[det]'") from None
    if train_split.classes != test_split.classes:
        raise DatasetError(f"{p.dataset}: the train and test splits define different classes")
    timer = Timer()
    t = time.perf_counter()
    torch.manual_seed(ctx.seed)  # the heads' initialisation
    model = build_tv_detector(p, backbone.name, len(train_split.classes))
    tensors = {k: v.detach().cpu() for k, v in backbone.net.state_dict().items()}
    loaded = load_backbone(model, p, backbone.name, tensors)
    timer.add("build", t)
    info = train(model, p, train_split, work_dir, key, ctx.seed, ctx.device, ctx.progress, timer)
    detections = infer(model, p, test_split, ctx.device, ctx.progress, timer)
    t = time.perf_counter()
    if p.dataset == "voc":
        metrics = voc_metrics(test_split, detections, use_07_metric=True)
    else:
        metrics = coco_metrics(test_split, detections, ("bbox", "segm") if p.mask else ("bbox",))
    timer.add("eval_metric", t)
    return metrics, {"loaded_backbone_tensors": loaded, **info, "seconds": timer.seconds}
