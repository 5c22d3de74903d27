"""The augmentation policy (:mod:`pretrain.augment.policy`): source stages -> views -> batch stages."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from pretrain.augment.config import CutmixConfig, CutoutConfig, ErasingConfig, MixupConfig
from pretrain.augment.policy import AugmentPolicy
from pretrain.augment.stages import Cutout, Mixup, RandomErasing
from pretrain.augment.views import ViewPipeline
from pretrain.config import AugmentConfig, ViewConfig
from pretrain.recipes import resolve_recipe

VIEW = ViewConfig(size=16, blur_sigma=(0.1, 0.5))
B = 24


def _batch(seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (B, 3, 20, 20), generator=g, dtype=torch.uint8), torch.full((B,), -1)


def _gen(seed: int = 1) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_without_stages_equals_the_two_view_pipelines() -> None:
    images, labels = _batch()
    out = AugmentPolicy(AugmentConfig(views=(VIEW, VIEW)))(images, labels, _gen())
    g = _gen()
    ref = [ViewPipeline(VIEW)(images, g) for _ in range(2)]
    assert out.mix is None and out.labels is labels
    assert torch.equal(out.views[0], ref[0]) and torch.equal(out.views[1], ref[1])


def test_stages_run_in_order_after_the_views() -> None:
    erasing, mixup, cutout = (
        ErasingConfig(p=0.5),
        MixupConfig(views=(1,), alpha=0.5),
        CutoutConfig(views=(1,)),
    )
    cfg = AugmentConfig(views=(VIEW, VIEW), stages=(erasing, mixup, cutout))
    images, labels = _batch()
    out = AugmentPolicy(cfg)(images, labels, _gen())
    g = _gen()
    views = (ViewPipeline(VIEW)(images, g), ViewPipeline(VIEW)(images, g))
    views = RandomErasing(erasing)(views, g)
    views, info = Mixup(mixup)(views, g)
    views = Cutout(cutout)(views, g)
    assert torch.equal(out.views[0], views[0]) and torch.equal(out.views[1], views[1])
    assert out.mix is not None and out.mix.view == 1
    assert torch.equal(out.mix.lam, info.lam) and torch.equal(out.mix.perm, info.perm)
    assert out.mix.lam.shape == (B,) and out.mix.perm.dtype == torch.int64


@pytest.mark.parametrize("stage", [MixupConfig(), CutmixConfig(views=(1,))])
def test_mixing_stage_returns_mixinfo_and_touches_only_its_view(stage: MixupConfig | CutmixConfig) -> None:
    images, labels = _batch()
    plain = AugmentPolicy(AugmentConfig(views=(VIEW, VIEW)))(images, labels, _gen())
    out = AugmentPolicy(AugmentConfig(views=(VIEW, VIEW), stages=(stage,)))(images, labels, _gen())
    assert out.mix is not None and out.mix.view == stage.views[0]
    other = 1 - out.mix.view
    assert torch.equal(out.views[other], plain.views[other])
    assert not torch.equal(out.views[out.mix.view], plain.views[out.mix.view])
    assert (out.mix.lam < 1).sum() > B // 2


def test_masking_stage_touches_only_its_views() -> None:
    images, labels = _batch()
    plain = AugmentPolicy(AugmentConfig(views=(VIEW, VIEW)))(images, labels, _gen())
    cfg = AugmentConfig(views=(VIEW, VIEW), stages=(CutoutConfig(p=1.0, views=(0,)),))
    out = AugmentPolicy(cfg)(images, labels, _gen())
    assert out.mix is None
    assert torch.equal(out.views[1], plain.views[1])
    assert ((out.views[0] == 0).all(dim=1).sum(dim=(1, 2)) > 0).all()


def test_per_view_sources_feed_their_own_view() -> None:
    """The generative swap hands per-view sources [B, 2, 3, H, W]: view v is drawn from images[:, v] with
    exactly the random draws it would have had from a single source batch."""
    images, labels = _batch()
    cfg = AugmentConfig(views=(VIEW, VIEW))
    same = AugmentPolicy(cfg)(torch.stack([images, images], 1), labels, _gen())
    ref = AugmentPolicy(cfg)(images, labels, _gen())
    assert all(torch.equal(a, b) for a, b in zip(same.views, ref.views, strict=True))
    other = 255 - images
    mixed = AugmentPolicy(cfg)(torch.stack([images, other], 1), labels, _gen())
    inverted = AugmentPolicy(cfg)(other, labels, _gen())
    assert torch.equal(mixed.views[0], ref.views[0])
    assert torch.equal(mixed.views[1], inverted.views[1])


def test_invalid_stage_configs_raise() -> None:
    with pytest.raises(ValueError, match="exactly one view"):
        AugmentPolicy(AugmentConfig(stages=(MixupConfig(views=(0, 1)),)))
    with pytest.raises(ValueError, match="at most one mixing stage"):
        AugmentConfig(stages=(CutmixConfig(), MixupConfig()))


def test_recipe_with_set_overrides_builds_a_running_policy() -> None:
    recipe = resolve_recipe(
        "moco",
        "smoke",
        ["augment.stages=[{kind: mixup, alpha: 1.0}, {kind: erasing, p: 0.25, views: [1]}]"],
    )
    assert recipe.augment.stages == (MixupConfig(alpha=1.0), ErasingConfig(p=0.25, views=(1,)))
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (8, 3, 40, 40), generator=g, dtype=torch.uint8)
    batch = AugmentPolicy(recipe.augment)(images, torch.full((8,), -1), g)
    assert batch.views[0].shape == batch.views[1].shape == (8, 3, 32, 32)
    assert batch.mix is not None and batch.mix.view == 0 and batch.mix.lam.shape == (8,)
    assert all(((v >= 0) & (v <= 1)).all() for v in batch.views)
