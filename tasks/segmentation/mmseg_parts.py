"""The pieces augbench plugs into mmsegmentation / mmengine: a CIFAR-stem backbone, an IoU metric that keeps
per-class IoU, and hooks (weight check, plain-state checkpoints for resume, progress).

Import only through :func:`tasks.segmentation.mmseg_backend.load_mmseg` (it installs the ``mmcv.ops``
stand-in first and registers :class:`CifarStemResNet` once).  Hooks and the metric are passed to the Runner
as instances, so they need no registry entry.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mmcv.cnn import build_conv_layer, build_norm_layer
from mmengine.hooks import Hook
from mmengine.optim import OptimWrapper
from mmseg.evaluation import IoUMetric
from mmseg.models.backbones import ResNet
from torch import nn
from tqdm import tqdm

from core.errors import CheckpointError

#: Names of :class:`CifarStemResNet` (MODELS) and :class:`Bf16OptimWrapper` (OPTIM_WRAPPERS) in mmseg's
#: registries (unique to augbench).
CIFAR_STEM_RESNET = "AugbenchCifarStemResNet"
BF16_OPTIM_WRAPPER = "AugbenchBf16OptimWrapper"
STATE_FORMAT = "augbench-seg-state/1"


class CifarStemResNet(ResNet):
    """mmseg's ``ResNet`` with the CIFAR stem (3x3 stride-1 ``conv1`` + ``bn1`` + ReLU, no max-pool).

    The stem of augbench's ``cifar_resnet*`` / ``narrow_resnet18`` backbones (He et al. 2016, CIFAR setup);
    parameter names are torchvision's (``conv1.weight``, ``bn1.*``, ``layer1.0.conv1.weight``, ...), so an
    exported ``backbone.safetensors`` state dict loads without renaming.  Shapes: ``[B, 3, H, W] ->`` the
    stage outputs at strides 1, 2, 4, 8 (with ``strides=(1, 2, 2, 2)``).
    """

    def __init__(self, **kwargs: Any) -> None:
        if kwargs.get("deep_stem"):
            raise ValueError(f"{CIFAR_STEM_RESNET} has the CIFAR stem; deep_stem is not supported")
        super().__init__(**kwargs)

    def _make_stem_layer(self, in_channels: int, stem_channels: int) -> None:
        self.conv1 = build_conv_layer(
            self.conv_cfg, in_channels, stem_channels, kernel_size=3, stride=1, padding=1, bias=False
        )
        self.norm1_name, norm1 = build_norm_layer(self.norm_cfg, stem_channels, postfix=1)
        self.add_module(self.norm1_name, norm1)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity()


class Bf16OptimWrapper(OptimWrapper):
    """``OptimWrapper`` whose forward pass (model and losses) runs under ``torch.autocast`` in bfloat16 on
    the model's device type.  mmengine's ``AmpOptimWrapper`` requires CUDA; this is for CPU runs, where bf16
    autocast speeds up small ResNets (see the stack notes).  Gradients and the optimiser stay fp32."""

    @contextmanager
    def optim_context(self, model: nn.Module) -> Iterator[None]:
        device = next(model.parameters()).device.type
        with super().optim_context(model), torch.autocast(device_type=device, dtype=torch.bfloat16):
            yield


class PerClassIoUMetric(IoUMetric):
    """mmseg's ``IoUMetric`` (mIoU, mAcc, aAcc, rounded to 0.01 as mmseg reports them) that also keeps the
    unrounded per-class IoU / accuracy and pixel counts of its last evaluation in ``last``."""

    default_prefix = "seg"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(iou_metrics=["mIoU"], **kwargs)
        self.last: dict[str, Any] = {}

    def compute_metrics(self, results: list) -> dict[str, float]:
        intersect, union, _, label_area = (
            torch.stack(list(column)).sum(0).double().numpy() for column in zip(*results, strict=True)
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            iou, acc = intersect / union, intersect / label_area
        names = [str(c).strip() for c in self.dataset_meta["classes"]]
        self.last = {
            "per_class_iou": {
                n: (None if np.isnan(v) else round(float(v) * 100, 4))
                for n, v in zip(names, iou, strict=True)
            },
            "per_class_acc": {
                n: (None if np.isnan(v) else round(float(v) * 100, 4))
                for n, v in zip(names, acc, strict=True)
            },
            "pixels_per_class": {n: int(v) for n, v in zip(names, label_area, strict=True)},
            "images": len(results),
        }
        metrics: dict[str, float] = super().compute_metrics(results)
        return {k: float(v) for k, v in metrics.items()}


def _percent(value: float) -> float | None:
    return None if np.isnan(value) else round(float(value) * 100, 4)


class WeightCheckHook(Hook):
    """Before training: every tensor of ``expected`` (the file given to the backbone's ``Pretrained`` init)
    must be in the model's backbone with the same shape and value, and the backbone must have no tensor
    the file lacks.  mmengine only logs missing keys; this raises :class:`CheckpointError` naming them."""

    priority = "VERY_HIGH"  # before the resume hook replaces the weights

    def __init__(self, expected: dict[str, torch.Tensor], source: str) -> None:
        self.expected, self.source = expected, source
        self.report: dict[str, Any] = {}

    def before_train(self, runner: Any) -> None:
        state = runner.model.backbone.state_dict()
        missing = sorted(set(state) - set(self.expected))
        unexpected = sorted(set(self.expected) - set(state))
        wrong = sorted(
            k for k in set(state) & set(self.expected) if not torch.equal(state[k].cpu(), self.expected[k])
        )
        if missing or unexpected or wrong:
            parts = [
                f"{what}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''} ({len(keys)})"
                for what, keys in (
                    ("not in the file", missing),
                    ("not in the model", unexpected),
                    ("not loaded (shape or value differs)", wrong),
                )
                if keys
            ]
            raise CheckpointError(
                f"backbone weights {self.source} did not load completely: {'; '.join(parts)}"
            )
        self.report = {"backbone_tensors_loaded": len(state), "source": self.source}


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state(legacy=False)
    assert isinstance(np_state, dict)
    return {
        "torch": torch.get_rng_state(),
        "numpy_key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
        "numpy_rest": [int(np_state["state"]["pos"]), int(np_state["has_gauss"]), float(np_state["gauss"])],
        "python": list(random.getstate()[1]),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    pos, has_gauss, gauss = state["numpy_rest"]
    key = state["numpy_key"].numpy().astype(np.uint32)
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": key, "pos": pos},
            "has_gauss": has_gauss,
            "gauss": gauss,
        }
    )
    random.setstate((3, tuple(state["python"]), None))


def read_state(path: Path, fingerprint: str) -> dict[str, Any]:
    """Load a state file written by :class:`PlainStateCheckpointHook` (``weights_only=True``) and check
    that it belongs to ``fingerprint``; anything else raises :class:`CheckpointError`."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot load segmentation state {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path} is not an augbench segmentation state; delete it to start over")
    if state.get("fingerprint") != fingerprint:
        raise CheckpointError(
            f"{path} belongs to another task configuration or backbone; delete it to start over"
        )
    return state


class PlainStateCheckpointHook(Hook):
    """Resumable training without mmengine's pickled Runner checkpoints.

    Every ``every`` iterations and at the end it writes ``path`` atomically with ``torch.save`` of plain
    containers: model and optimizer state dicts, parameter-scheduler states, the iteration, RNG states and
    ``fingerprint`` (what the state belongs to).  Before training, an existing file is loaded with
    ``torch.load(weights_only=True)``; a different fingerprint raises :class:`CheckpointError`.  The loop
    then continues at the saved iteration (mmengine's ``IterBasedTrainLoop`` replays the data sampler up to
    it) and the RNG states are restored before the first resumed step.
    """

    priority = "VERY_LOW"  # after the parameter schedulers stepped

    def __init__(self, path: Path, every: int, fingerprint: str) -> None:
        self.path, self.every, self.fingerprint = path, every, fingerprint
        self.resumed_from = 0
        self._pending_rng: dict[str, Any] | None = None

    def before_train(self, runner: Any) -> None:
        if not self.path.is_file():
            return
        state = read_state(self.path, self.fingerprint)
        runner.model.load_state_dict(state["model"])
        runner.optim_wrapper.load_state_dict(state["optimizer"])
        for scheduler, sched_state in zip(runner.param_schedulers, state["schedulers"], strict=True):
            scheduler.load_state_dict(sched_state)
        runner.train_loop._iter = self.resumed_from = int(state["iter"])
        self._pending_rng = state["rng"]

    def before_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
        if self._pending_rng is not None:
            _set_rng_state(self._pending_rng)
            self._pending_rng = None

    def after_train_iter(
        self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        done = runner.iter + 1
        if done % self.every and done != runner.max_iters:
            return
        state = {
            "format": STATE_FORMAT,
            "fingerprint": self.fingerprint,
            "iter": done,
            "model": runner.model.state_dict(),
            "optimizer": runner.optim_wrapper.state_dict(),
            "schedulers": [s.state_dict() for s in runner.param_schedulers],
            "rng": _rng_state(),
        }
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        torch.save(state, tmp)
        os.replace(tmp, self.path)


class ProgressHook(Hook):
    """A tqdm bar over training iterations (loss in the postfix); records timings and the loss curve."""

    priority = "LOW"

    def __init__(self, desc: str, enabled: bool) -> None:
        self.desc, self.enabled = desc, enabled
        self.bar: tqdm | None = None
        self.losses: list[tuple[int, float]] = []
        self.start = self.end = 0.0
        self.first_iter = 0
        self._last_data = 0.0
        self.data_seconds = self.step_seconds = 0.0

    def before_train(self, runner: Any) -> None:
        self.bar = tqdm(total=runner.max_iters, desc=self.desc, unit="it", disable=not self.enabled)

    def before_train_epoch(self, runner: Any) -> None:
        self.first_iter = runner.iter
        if self.bar is not None:
            self.bar.update(runner.iter)
        self.start = self._last_data = time.perf_counter()

    def before_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
        now = time.perf_counter()
        self.data_seconds += now - self._last_data
        self._step_start = now

    def after_train_iter(
        self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        now = time.perf_counter()
        self.step_seconds += now - self._step_start
        self._last_data = now
        value = (outputs or {}).get("loss")
        loss = float(value.detach()) if isinstance(value, torch.Tensor) else float("nan")
        if runner.iter % 10 == 0 or runner.iter + 1 == runner.max_iters:
            self.losses.append((runner.iter + 1, round(loss, 4)))
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

    def after_train(self, runner: Any) -> None:
        self.end = time.perf_counter()
        if self.bar is not None:
            self.bar.close()
