"""The augmentation policy of a recipe: the per-view pipelines, composed into a :class:`ViewBatch`.

Contract: ``policy(images, labels, generator) -> ViewBatch``.  ``images`` is the collated uint8 batch
[B, 3, H, W] already on the training device; all random parameters are drawn per sample from
``generator`` (seeded per step by the trainer, which makes runs reproducible and resumable).
Batch-level stages (masking, mixing; a later issue) plug in after the views.
"""

from __future__ import annotations

import torch

from pretrain.augment.views import ViewPipeline
from pretrain.config import AugmentConfig
from pretrain.methods.base import ViewBatch


class AugmentPolicy:
    """Two independent per-sample view pipelines (see :class:`pretrain.config.ViewConfig`)."""

    def __init__(self, cfg: AugmentConfig) -> None:
        self.cfg = cfg
        self.view_pipelines = tuple(ViewPipeline(v) for v in cfg.views)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> ViewBatch:
        v1, v2 = (pipe(images, generator) for pipe in self.view_pipelines)
        return ViewBatch(views=(v1, v2), labels=labels)
