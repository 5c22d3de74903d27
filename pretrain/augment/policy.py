"""The augmentation policy of a recipe: source stages, the per-view pipelines, then batch-level stages.

Contract: ``policy(images, labels, generator) -> ViewBatch``.  ``images`` is the collated uint8 batch
[B, 3, H, W] already on the training device; all random parameters are drawn per sample from
``generator`` (seeded per step by the trainer, which makes runs reproducible and resumable).  Order of
application, which is also the order of the random draws:

1. source stages (none implemented yet), on the uint8 source batch ``[B, 3, H, W]``, before the views:
   whatever they do reaches both views.  The planned "source swap" (replace a sample's source image by
   a pre-generated generative variant with probability p, arXiv 2403.05966) goes here;
2. view 0, then view 1 (:class:`~pretrain.augment.views.ViewPipeline`), ``[B, 3, S, S]`` float in [0, 1];
3. the recipe's ``augment.stages`` in the listed order (:mod:`pretrain.augment.stages`), on the views.

Where each stage acts (the full table, with configuration examples: ``docs/augmentations.md``):

=============  =====================================  =======================================
stage (kind)   views                                  probability
=============  =====================================  =======================================
source stages  the source image, so both views        per sample (none implemented yet)
erasing        each view in ``views`` (default 0, 1)  ``p`` per sample and view (default 0.5)
cutout         each view in ``views`` (default 0, 1)  ``p`` per sample and view (default 0.5)
mixup          exactly one view (default 0)           ``p`` per sample (default 1.0), MixInfo
cutmix         exactly one view (default 0)           ``p`` per sample (default 1.0), MixInfo
=============  =====================================  =======================================

Each view of a masking stage gets independently drawn parameters.  At most one mixing stage per recipe
(:class:`~pretrain.config.AugmentConfig`); its :class:`~pretrain.methods.base.MixInfo` is returned as
``ViewBatch.mix`` (``None`` without a mixing stage).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch

from pretrain.augment.stages import MixingStage, Stage, build_stage
from pretrain.augment.views import ViewPipeline
from pretrain.config import AugmentConfig
from pretrain.methods.base import MixInfo, ViewBatch


class SourceStage(Protocol):
    """A stage on the source batch, before the views: ``[B, 3, H, W]`` uint8 -> the same shape and dtype.

    It must draw its per-sample parameters from ``generator`` (all of them, for every sample, every call)
    and keep the batch on its device.
    """

    def __call__(self, images: torch.Tensor, generator: torch.Generator, /) -> torch.Tensor: ...


class AugmentPolicy:
    """Source stages -> two independent per-sample view pipelines -> batch-level stages (module docstring).

    Args:
        cfg: the recipe's augmentation config; ``cfg.stages`` are built with
            :func:`pretrain.augment.stages.build_stage` (a mixing stage with other than one view raises
            ``ValueError`` here).
        source_stages: stages applied, in order, to the uint8 batch before the views (the hook for the
            source-swap stage; empty by default, and the policy then draws exactly what it drew before).
    """

    def __init__(self, cfg: AugmentConfig, source_stages: Sequence[SourceStage] = ()) -> None:
        self.cfg = cfg
        self.source_stages = tuple(source_stages)
        self.view_pipelines = tuple(ViewPipeline(v) for v in cfg.views)
        self.stages: tuple[Stage, ...] = tuple(build_stage(s) for s in cfg.stages)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> ViewBatch:
        """Augment one batch.

        Args:
            images: ``[B, 3, H, W]`` uint8 on the training device.
            labels: ``[B]`` int64, passed through.
            generator: source of all randomness (see the module docstring for the order of draws).

        Returns:
            :class:`ViewBatch` with two ``[B, 3, S, S]`` float views and ``mix`` from the mixing stage.
        """
        for source in self.source_stages:
            images = source(images, generator)
        v1, v2 = (pipe(images, generator) for pipe in self.view_pipelines)
        views = (v1, v2)
        mix: MixInfo | None = None
        for stage in self.stages:
            if isinstance(stage, MixingStage):
                if mix is not None:
                    raise ValueError("at most one mixing stage per policy")
                views, mix = stage(views, generator)
            else:
                views = stage(views, generator)
        return ViewBatch(views=views, labels=labels, mix=mix)
