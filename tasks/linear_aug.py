"""The paper-faithful, augmented linear evaluation (``linear-aug/<dataset>``, protocol ``linear-augmented``).

The usual SSL linear evaluation trains a linear classifier on a *frozen* backbone with *augmented* inputs
for many epochs; features cannot be cached because every epoch sees new crops.  It is opt-in (not in the
``all`` group): on a GPU it is the number papers report, on CPU it is only run briefly (tests, smoke).

Protocol (per epoch, for ``epochs`` epochs; Places365 uses 45 instead of 100, as in arXiv 2403.05966):

* train images: the dataset's train split decoded at ``resize x resize`` (shorter side resized to
  ``resize``, centre square), then per sample a random resized crop (scale ``U(0.08, 1)`` of the area,
  log-uniform aspect ``[3/4, 4/3]``) to ``size x size`` and a horizontal flip with p = 0.5
  (:func:`pretrain.augment.ops.sample_crop_boxes` / :func:`~pretrain.augment.ops.resized_crop`, batched on
  the device).  Deviation: torchvision crops from the full-resolution image; here from the centre
  ``resize``-square, which loses the borders of non-square images;
* the backbone runs in eval mode (BatchNorm statistics frozen) without gradients; the head is one
  ``nn.Linear(D, C)`` on the pooled features (zero-initialised bias, default weight init);
* optimiser: SGD, momentum 0.9, no weight decay, lr = ``lr * batch_size / 256`` with cosine decay to 0
  over all steps, cross-entropy loss.  These are the common ResNet linear-eval values (MoCo / SimCLR
  code bases); we could not consult 2403.05966's exact optimiser offline, so treat them as ours and
  override in :class:`AugLinearConfig` if needed;
* no model selection (the hyper-parameters are fixed), so the test split is used exactly once: top-1 /
  top-5 (%) of the final head on the cached eval-transform features of the test split.

Resumable: with ``ctx.work_dir`` set, the head, optimiser and epoch are saved atomically after every
epoch (``weights_only``-loadable) and a restarted run continues from the last finished epoch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from pretrain.augment.ops import resized_crop, sample_crop_boxes
from pretrain.backbones import Backbone
from pretrain.checkpoint import load_state, save_state
from tasks.base import Metric, TaskContext, TaskOutput
from tasks.datasets.registry import DATASETS
from tasks.features import resolve_precision
from tasks.frozen import EvalResolution, load_split, split_feature_set
from tasks.linear import topk_accuracy


@dataclass(frozen=True)
class AugLinearConfig:
    """Hyper-parameters of the augmented linear evaluation (see module docstring)."""

    epochs: int = 100
    batch_size: int = 256
    lr: float = 0.1  # for a batch of 256, scaled linearly
    momentum: float = 0.9
    weight_decay: float = 0.0
    crop_scale: tuple[float, float] = (0.08, 1.0)
    flip_p: float = 0.5
    seed: int = 0


PAPER = AugLinearConfig()
PAPER_EPOCHS = {"places365": 45}
SMOKE = AugLinearConfig(epochs=2)


@dataclass(frozen=True)
class AugmentedLinearTask:
    """Augmented linear evaluation on ``dataset`` (protocol ``linear-augmented``)."""

    dataset: str
    resolutions: dict[str, EvalResolution]
    version: int = 1
    family: str = "linear-aug"
    primary: str = "top1"
    metrics: tuple[Metric, ...] = (Metric("top1"), Metric("top5"))

    @property
    def name(self) -> str:
        return f"linear-aug/{self.dataset}"

    @property
    def datasets(self) -> tuple[str, ...]:
        return (self.dataset,)

    @property
    def description(self) -> str:
        return f"augmented linear eval (crop+flip, SGD, frozen backbone) on {self.dataset}; opt-in"

    def config(self, profile: str) -> AugLinearConfig:
        if profile != "paper":
            return SMOKE
        return dataclasses.replace(PAPER, epochs=PAPER_EPOCHS.get(self.dataset, PAPER.epochs))

    def protocol(self, profile: str) -> dict[str, Any]:
        info = DATASETS.get(self.dataset)
        res = self.resolutions[profile]
        return {
            "name": "linear-augmented",
            "train_split": info.train_split,
            "test_split": info.test_split,
            "train_transform": f"resize{res.resize}-square, random-resized-crop{res.size}, hflip",
            "eval_transform": res.transform,
            "optim": asdict(self.config(profile)),
        }

    def run(self, backbone: Backbone, ctx: TaskContext) -> TaskOutput:
        cfg, res = self.config(ctx.profile), self.resolutions[ctx.profile]
        info = DATASETS.get(self.dataset)
        t0 = time.perf_counter()
        source = EvalResolution(res.resize, res.resize)
        train = load_split(self.dataset, info.train_split, source, ctx)
        # test: the cached eval-transform features (shared with linear/ and knn/); train: images only
        test, test_ds = split_feature_set(backbone, self.dataset, info.test_split, res, ctx)
        num_classes = len(train.classes)
        ckpt = None
        if ctx.work_dir is not None:
            key = json.dumps([asdict(cfg), asdict(res), ctx.weights_digest, self.dataset, str(ctx.data_root)])
            ckpt = ctx.work_dir / f"linear-aug-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"
        head, epochs_run = _train_head(backbone, train, num_classes, test.dim, cfg, res, ctx, ckpt)
        with torch.no_grad():  # streamed: the test features stay memory-mapped
            rows = test.features
            logits = torch.cat(
                [
                    head(
                        torch.from_numpy(np.array(rows[i : i + 8192], dtype=np.float32)).to(ctx.device)
                    ).cpu()
                    for i in range(0, len(rows), 8192)
                ]
            )
        acc = topk_accuracy(logits, test.labels)
        return TaskOutput(
            metrics={"top1": acc[1], "top5": acc[5]},
            details={
                "epochs": cfg.epochs,
                "epochs_run_this_call": epochs_run,
                "n_train": len(train),
                "n_test": len(test),
                "num_classes": num_classes,
                "seconds": time.perf_counter() - t0,
                "skipped_images": {
                    info.train_split: len(getattr(train, "skipped", ())),
                    info.test_split: len(getattr(test_ds, "skipped", ())),
                },
            },
        )


def _train_head(
    backbone: Backbone,
    train: torch.utils.data.Dataset[tuple[torch.Tensor, int]],
    num_classes: int,
    dim: int,
    cfg: AugLinearConfig,
    res: EvalResolution,
    ctx: TaskContext,
    ckpt: Path | None,
) -> tuple[nn.Linear, int]:
    """Train the linear head for ``cfg.epochs`` epochs, resuming from / saving to ``ckpt`` if given."""
    device = ctx.device
    torch.manual_seed(cfg.seed)
    head = nn.Linear(dim, num_classes).to(device)
    nn.init.zeros_(head.bias)
    lr = cfg.lr * cfg.batch_size / 256
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    loader_gen = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(
        train,
        batch_size=cfg.batch_size,
        shuffle=True,
        drop_last=False,
        generator=loader_gen,
        num_workers=ctx.num_workers,
        pin_memory=device.type == "cuda",
    )
    total = cfg.epochs * len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: 0.5 * (1 + float(np.cos(np.pi * min(step, total) / total)))
    )
    aug_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    start_epoch = 0
    if ckpt is not None and ckpt.is_file():
        state = load_state(ckpt)
        head.load_state_dict(state["head"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        loader_gen.set_state(state["loader_gen"])
        aug_gen.set_state(state["aug_gen"])
        start_epoch = int(state["epoch"])
    prec = resolve_precision("auto", device)
    backbone.eval()
    bar = tqdm(range(start_epoch, cfg.epochs), desc="linear-aug", unit="epoch", disable=not ctx.progress)
    for epoch in bar:
        for images, labels in loader:
            x = images.to(device, non_blocking=True).float().div_(255.0)
            boxes = sample_crop_boxes(aug_gen, x.shape[0], x.shape[2], x.shape[3], cfg.crop_scale)
            flip = torch.rand(x.shape[0], generator=aug_gen, device=device) < cfg.flip_p
            x = resized_crop(x, boxes, res.size, flip).contiguous(memory_format=torch.channels_last)
            with (
                torch.no_grad(),
                torch.autocast(device.type, dtype=torch.bfloat16, enabled=prec == "bf16"),
            ):
                feats = backbone(x).float()
            loss = nn.functional.cross_entropy(head(feats), labels.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if ckpt is not None:
            save_state(
                ckpt,
                {
                    "head": head.state_dict(),
                    "opt": opt.state_dict(),
                    "sched": sched.state_dict(),
                    "loader_gen": loader_gen.get_state(),
                    "aug_gen": aug_gen.get_state(),
                    "epoch": epoch + 1,
                },
            )
    return head, cfg.epochs - start_epoch
