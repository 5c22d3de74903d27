"""The pretraining loop: autocast, channels_last, progress, TensorBoard, checkpoints, resume, export.

One optimiser step per batch: ``views = policy(images)``, ``loss = method(views)``, backward, step,
``method.on_step_end``.  Under DDP with ``train.sync_bn`` the method's BatchNorm layers are converted to
SyncBatchNorm first (:func:`apply_sync_bn`).  The optimiser is :func:`pretrain.optim.build_optimizer`'s
(SGD, AdamW or LARS) over :meth:`SSLMethod.optimizer_groups`.  The learning rate follows a linear
warm-up then cosine decay computed from the global step (no scheduler state to restore); parameter
groups the method marks ``fixed_lr`` (see :meth:`SSLMethod.param_groups`) keep the base lr, and a
group's ``lr_scale`` (Barlow Twins' bias/BN lr, ``optim.bias_lr_scale``) multiplies its lr at every
step, so ratios between groups hold throughout the warm-up and the decay.  Every ``checkpoint_every``
steps and at the end the full state (model incl. momentum encoders and queues, optimiser, grad scaler,
step) is written atomically to ``<run>/checkpoints/last.pt``; ``resume=True`` continues from it and,
since data order and augmentation randomness are functions of (seed, step), reproduces the
uninterrupted run exactly on CPU.
The backbone is exported to ``<run>/backbone.safetensors`` at the end.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from core.config import config_hash, to_dict
from core.errors import CheckpointError, ConfigError
from core.hardware import autocast_dtype
from pretrain import distributed
from pretrain.augment.policy import AugmentPolicy
from pretrain.checkpoint import export_backbone, load_state, save_state
from pretrain.config import RecipeConfig
from pretrain.data import PretrainStream
from pretrain.methods.base import SSLMethod
from pretrain.optim import build_optimizer

CHECKPOINT_NAME = "checkpoints/last.pt"
BACKBONE_NAME = "backbone.safetensors"


@dataclass(frozen=True)
class TrainSummary:
    """What a finished (or resumed-and-finished) pretraining run reports."""

    steps: int
    total_steps: int
    epochs: float
    images_seen: int
    seconds: float  # wall time of this invocation's steps
    images_per_second: float
    final_loss: float
    resumed_from: int
    precision: str


def lr_at(step: int, total: int, base_lr: float, warmup: int, schedule: str) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 (or constant) at ``total``."""
    if warmup and step < warmup:
        return base_lr * (step + 1) / warmup
    if schedule == "constant":
        return base_lr
    progress = (step - warmup) / max(1, total - warmup)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def sync_bn_device_ok(device: torch.device) -> bool:
    """Whether torch's SyncBatchNorm can synchronise tensors on ``device`` (not on CPU)."""
    return device.type != "cpu"


def apply_sync_bn(method: SSLMethod, enabled: bool, device: torch.device) -> int:
    """``train.sync_bn``: convert the method's BatchNorm layers to SyncBatchNorm when ``enabled`` and more
    than one process runs (:meth:`SSLMethod.convert_sync_batchnorm_`, which MoCo v2 declines under its
    shuffling BN); a no-op on one process.  Returns the number of converted layers.

    torch's SyncBatchNorm synchronises only accelerator (CUDA, XPU, HPU, ...) tensors: as soon as a process
    group exists its training-mode forward raises ``ValueError`` on CPU tensors (torch 2.14).  A CPU run
    with several processes (gloo) and ``sync_bn`` therefore fails here with a :class:`ConfigError`.
    Tested here: the conversion (with a faked world size) and the CPU refusal; the CUDA/NCCL forward and
    backward of the converted layers are untested in this repository (no GPUs).
    """
    if not enabled or distributed.world_size() <= 1:
        return 0
    if not sync_bn_device_ok(device):
        raise ConfigError(
            "train.sync_bn needs accelerator devices (torch's SyncBatchNorm does not run on CPU tensors); "
            "set train.sync_bn=false for multi-process CPU runs"
        )
    return method.convert_sync_batchnorm_()


class Trainer:
    """Runs one recipe's pretraining into ``run_dir`` (see module docstring)."""

    def __init__(
        self,
        recipe: RecipeConfig,
        method: SSLMethod,
        stream: PretrainStream,
        run_dir: Path,
        device: torch.device,
        *,
        progress: bool = True,
        code_version: str = "unknown",
    ) -> None:
        self.recipe, self.method, self.stream = recipe, method.to(device), stream
        self.run_dir, self.device = run_dir, device
        self.progress, self.code_version = progress, code_version
        self.policy = AugmentPolicy(recipe.augment)
        self.amp_dtype = autocast_dtype(recipe.train.precision, device)
        self.channels_last = recipe.train.channels_last
        if self.channels_last:
            self.method.to(memory_format=torch.channels_last)
        # before the optimiser and DDP see the modules (the conversion keeps the parameter tensors)
        self.sync_bn_layers = apply_sync_bn(self.method, recipe.train.sync_bn, device)
        world = distributed.world_size()
        global_batch = recipe.train.batch_size * world
        self.base_lr = recipe.optim.lr * global_batch / recipe.optim.lr_batch_size
        spe = stream.steps_per_epoch
        self.total_steps = recipe.train.epochs * spe
        if recipe.train.max_steps is not None:
            self.total_steps = min(self.total_steps, recipe.train.max_steps)
        if self.total_steps < 1:
            raise ConfigError("train.epochs (or train.max_steps) gives zero training steps")
        self.warmup = int(recipe.optim.warmup_epochs * spe)
        groups = self.method.optimizer_groups(
            exclude_bias_and_norm=recipe.optim.splits_bias_and_norm, bias_lr_scale=recipe.optim.bias_lr_scale
        )
        self.optimizer = build_optimizer(recipe.optim, groups, self.base_lr)
        use_scaler = self.amp_dtype == torch.float16 and device.type == "cuda"
        self.scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
        self.model: nn.Module = self.method
        if distributed.is_distributed():
            self.model = nn.parallel.DistributedDataParallel(
                self.method, device_ids=[device.index] if device.type == "cuda" else None
            )
        self.config_hash = config_hash(recipe)
        self.step = 0

    # -- state -------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "format": "augbench-train-state/1",
            "step": self.step,
            "total_steps": self.total_steps,
            "config_hash": self.config_hash,
            "recipe": to_dict(self.recipe),
            "model": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_checkpoint(self, path: Path) -> None:
        state = load_state(path, map_location=self.device)
        if state.get("config_hash") != self.config_hash:
            raise CheckpointError(
                f"{path} was written by a different recipe config (hash {state.get('config_hash')} != "
                f"{self.config_hash}); use a new run directory or drop --resume"
            )
        try:
            self.method.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scaler.load_state_dict(state["scaler"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"{path} does not fit this model: {str(exc).splitlines()[0]}") from None
        self.step = int(state["step"])

    def save_checkpoint(self) -> None:
        if distributed.is_main():
            save_state(self.run_dir / CHECKPOINT_NAME, self.state_dict())

    # -- loop --------------------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _generator(self, step: int) -> torch.Generator:
        g = torch.Generator(device=self.device)
        g.manual_seed((self.recipe.train.seed * 1_000_003 + step) * 131 + distributed.rank())
        return g

    def train_step(
        self, images: torch.Tensor, labels: torch.Tensor, swapped: torch.Tensor | None = None
    ) -> dict[str, float]:
        """One optimiser step on a :class:`~pretrain.data.StreamBatch` (``swapped``: which views got a
        generated variant, logged as ``gen_swap_rate`` over the stage's views)."""
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        lr = lr_at(self.step, self.total_steps, self.base_lr, self.warmup, self.recipe.optim.schedule)
        for group in self.optimizer.param_groups:
            group_lr = self.base_lr if group.get("fixed_lr", False) else lr
            group["lr"] = group_lr * group.get("lr_scale", 1.0)
        batch = self.policy(images, labels, self._generator(self.step))
        if self.channels_last:
            batch.views = tuple(v.contiguous(memory_format=torch.channels_last) for v in batch.views)  # type: ignore[assignment]
        with self._autocast():
            out = self.model(batch)
        if not torch.isfinite(out.loss):
            raise FloatingPointError(f"non-finite loss {out.loss.item()} at step {self.step}")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(out.loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        self.method.on_step_end(self.step, self.total_steps)
        logs = {k: float(v) for k, v in out.logs.items()}
        logs["lr"] = lr
        if swapped is not None and self.recipe.augment.sources:
            views = list(self.recipe.augment.sources[0].views)
            logs["gen_swap_rate"] = float(swapped[:, views].float().mean())
        return logs

    def fit(self, resume: bool = False) -> TrainSummary:
        ckpt = self.run_dir / CHECKPOINT_NAME
        if resume and ckpt.is_file():
            self.load_checkpoint(ckpt)
        resumed_from = self.step
        writer = self._tensorboard()
        self.method.train()
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            desc=f"pretrain {self.recipe.name}",
            unit="step",
            disable=not (self.progress and distributed.is_main()),
            file=sys.stderr,
            dynamic_ncols=True,
        )
        batches = self.stream.batches(self.step)
        start = time.perf_counter()
        images_seen, loss = 0, float("nan")
        every = self.recipe.train.checkpoint_every
        while self.step < self.total_steps:
            images, labels, swapped = next(batches)
            logs = self.train_step(images, labels, swapped)
            loss = logs["loss"]
            images_seen += images.shape[0] * distributed.world_size()
            rate = images_seen / max(1e-9, time.perf_counter() - start)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", img_s=f"{rate:.0f}", refresh=False)
            if writer is not None and self.step % self.recipe.train.log_every == 0:
                for k, v in logs.items():
                    writer.add_scalar(f"train/{k}", v, self.step)
                writer.add_scalar("train/images_per_second", rate, self.step)
            if every and self.step % every == 0 and self.step < self.total_steps:
                self.save_checkpoint()
        bar.close()
        seconds = time.perf_counter() - start
        if self.step > resumed_from or not ckpt.is_file():
            self.save_checkpoint()
        self.export()
        if writer is not None:
            writer.close()
        spe = self.stream.steps_per_epoch
        return TrainSummary(
            steps=self.step,
            total_steps=self.total_steps,
            epochs=self.step / spe,
            images_seen=images_seen,
            seconds=seconds,
            images_per_second=images_seen / max(seconds, 1e-9),
            final_loss=loss,
            resumed_from=resumed_from,
            precision=str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "fp32",
        )

    def export(self) -> Path:
        path = self.run_dir / BACKBONE_NAME
        if distributed.is_main():
            export_backbone(
                path,
                self.method.backbone.net,
                {
                    "recipe": self.recipe.name,
                    "backbone": self.recipe.backbone.name,
                    "config_hash": self.config_hash,
                    "step": self.step,
                    "code_version": self.code_version,
                },
            )
        return path

    def _tensorboard(self) -> Any:
        if not distributed.is_main():
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # pragma: no cover - tensorboard is a core dependency
            return None
        return SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))
