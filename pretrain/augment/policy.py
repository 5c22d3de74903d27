"""The augmentation policy of a recipe: source stages, the per-view pipelines, then batch-level stages.

Contract: ``policy(images, labels, generator) -> ViewBatch``.  ``images`` is the collated uint8 batch
[B, 3, H, W] already on the training device; all random parameters are drawn per sample from
``generator`` (seeded per step by the trainer, which makes runs reproducible and resumable).  Order of
application, which is also the order of the random draws:

1. the generative source stage (``augment.sources``, arXiv 2403.05966) runs in the pretraining stream,
   where the images are loaded (:mod:`pretrain.generative.swap`): it hands the policy per-view sources
   ``[B, 2, 3, H, W]`` instead of one source batch ``[B, 3, H, W]`` (its draws are a counter-based
   function of (seed, step, sample), not of ``generator``);
2. view 0, then view 1 (:class:`~pretrain.augment.views.ViewPipeline`), ``[B, 3, S, S]`` float in [0, 1];
3. the recipe's ``augment.stages`` in the listed order (:mod:`pretrain.augment.stages`), on the views.

Where each stage acts (the full table, with configuration examples: ``docs/augmentations.md``):

=============  =========================================  =======================================
stage (kind)   views                                      probability
=============  =========================================  =======================================
generative     the source of each view in ``views``       ``p`` per sample and view (default 0.5)
erasing        each view in ``views`` (default 0, 1)      ``p`` per sample and view (default 0.5)
cutout         each view in ``views`` (default 0, 1)      ``p`` per sample and view (default 0.5)
mixup          exactly one view (default 0)               ``p`` per sample (default 1.0), MixInfo
cutmix         exactly one view (default 0)               ``p`` per sample (default 1.0), MixInfo
=============  =========================================  =======================================

Each view of a masking stage gets independently drawn parameters.  At most one mixing stage per recipe
(:class:`~pretrain.config.AugmentConfig`); its :class:`~pretrain.methods.base.MixInfo` is returned as
``ViewBatch.mix`` (``None`` without a mixing stage).
"""

from __future__ import annotations

import torch

from pretrain.augment.stages import MixingStage, Stage, build_stage
from pretrain.augment.views import ViewPipeline
from pretrain.config import AugmentConfig
from pretrain.methods.base import MixInfo, ViewBatch


class AugmentPolicy:
    """Two independent per-sample view pipelines -> batch-level stages (module docstring).

    Args:
        cfg: the recipe's augmentation config; ``cfg.stages`` are built with
            :func:`pretrain.augment.stages.build_stage` (a mixing stage with other than one view raises
            ``ValueError`` here).
    """

    def __init__(self, cfg: AugmentConfig) -> None:
        self.cfg = cfg
        self.view_pipelines = tuple(ViewPipeline(v) for v in cfg.views)
        self.stages: tuple[Stage, ...] = tuple(build_stage(s) for s in cfg.stages)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> ViewBatch:
        """Augment one batch.

        Args:
            images: ``[B, 3, H, W]`` uint8 on the training device (the source of both views), or per-view
                sources ``[B, 2, 3, H, W]`` (after the generative swap: view ``v`` from ``images[:, v]``).
            labels: ``[B]`` int64, passed through.
            generator: source of all randomness (see the module docstring for the order of draws).

        Returns:
            :class:`ViewBatch` with two ``[B, 3, S, S]`` float views and ``mix`` from the mixing stage.
        """
        sources = images.unbind(1) if images.dim() == 5 else (images, images)
        v1, v2 = (pipe(src, generator) for pipe, src in zip(self.view_pipelines, sources, strict=True))
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
