"""Batch-level masking and mixing stages (:mod:`pretrain.augment.stages`).

Masks are measured from the images (pixels that changed) and compared with the documented geometry:
erased rectangles within the ``scale`` / ``ratio`` bounds (up to the rounding of ``h`` and ``w`` to pixels),
CutOut squares of side ``L`` away from the borders and clipped at them, CutMix's ``lam`` equal to the kept
area.  Mixing is checked against its formula with the sampled ``perm`` / ``lam``; the Beta sampler against
scipy (KS test) or, without scipy, against its moments.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from pretrain.augment.config import CutmixConfig, CutoutConfig, ErasingConfig, MixupConfig
from pretrain.augment.stages import (
    Cutmix,
    Cutout,
    MixingStage,
    MixParams,
    Mixup,
    RandomErasing,
    Stage,
    _log_gamma,
    box_area,
    box_mask,
    build_stage,
    cutmix_boxes,
    random_bytes,
    sample_beta,
)
from pretrain.config import AugmentConfig


def _views(b: int = 64, s: int = 32, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Two random views in (0, 1] (no exact zeros, so zeroed pixels are detectable)."""
    g = torch.Generator().manual_seed(seed)
    return (
        torch.rand(b, 3, s, s, generator=g) * 0.99 + 0.01,
        torch.rand(b, 3, s, s, generator=g) * 0.99 + 0.01,
    )


def _gen(seed: int = 1) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _changed(a: Tensor, b: Tensor) -> Tensor:
    """``[B, S, S]`` bool: pixels where any channel differs."""
    return (a != b).any(dim=1)


def _bbox(mask: Tensor) -> Tensor:
    """``[B, 4]`` bounding boxes ``(top, left, bottom, right)`` of non-empty ``[B, S, S]`` masks."""
    s = mask.shape[-1]
    idx = torch.arange(s)
    rows, cols = mask.any(dim=2), mask.any(dim=1)
    top = torch.where(rows, idx, s).amin(dim=1)
    bottom = torch.where(rows, idx, -1).amax(dim=1) + 1
    left = torch.where(cols, idx, s).amin(dim=1)
    right = torch.where(cols, idx, -1).amax(dim=1) + 1
    return torch.stack((top, left, bottom, right), dim=1)


def test_box_mask_matches_slicing() -> None:
    boxes = torch.tensor([[0, 0, 3, 5], [2, 1, 2, 4], [5, 6, 8, 8], [4, 4, 2, 7]])
    mask = box_mask(boxes, 8)
    assert mask.shape == (4, 1, 8, 8)
    for i, (t, lf, b, r) in enumerate(boxes.tolist()):
        ref = torch.zeros(8, 8, dtype=torch.bool)
        ref[t:b, lf:r] = True
        assert torch.equal(mask[i, 0], ref)
    assert box_area(boxes).tolist() == [15, 0, 6, 0]


def test_erasing_rectangles_within_scale_and_ratio() -> None:
    cfg = ErasingConfig(p=1.0, views=(0,), scale=(0.05, 0.3), ratio=(0.5, 2.0), value="zero")
    s, b = 64, 1000
    x, y = _views(b, s)
    out, out_y = RandomErasing(cfg)((x, y), _gen())
    assert out_y is y
    mask = out == 0
    assert torch.equal(mask.all(dim=1), mask.any(dim=1)), "all channels erased together"
    erased = mask[:, 0]
    area = erased.sum(dim=(1, 2))
    assert (area > 0).float().mean() > 0.99, "p = 1: (nearly) every sample erased"
    top, left, bottom, right = _bbox(erased[area > 0]).unbind(1)
    h, w, a = bottom - top, right - left, area[area > 0]
    assert torch.equal(a, h * w), "the erased region is a rectangle"
    # h, w are rounded from sqrt(A r), sqrt(A / r): some real h', w' within 0.5 fit the bounds
    assert ((h - 0.5) * (w - 0.5) <= cfg.scale[1] * s * s).all()
    assert ((h + 0.5) * (w + 0.5) >= cfg.scale[0] * s * s).all()
    assert ((h - 0.5) / (w + 0.5) <= cfg.ratio[1]).all() and ((h + 0.5) / (w - 0.5) >= cfg.ratio[0]).all()
    assert torch.unique(torch.stack((top, left, h, w), 1), dim=0).shape[0] > 0.9 * len(h), "per sample"
    frac = a.float() / (s * s)
    assert frac.min() < 0.08 and frac.max() > 0.25, "the area range is covered"


def test_erasing_random_fill_and_probability() -> None:
    cfg = ErasingConfig(p=0.5, views=(0, 1), value="random")
    x, y = _views(400, 32)
    out = RandomErasing(cfg)((x, y), _gen())
    for before, after in zip((x, y), out, strict=True):
        changed = _changed(before, after)
        hit = changed.any(dim=(1, 2))
        assert 0.4 < hit.float().mean() < 0.6
        inside = after.permute(0, 2, 3, 1)[changed]
        levels = inside * 255
        assert torch.equal(levels, levels.round()), "8-bit values k / 255"
        assert inside.min() == 0 and inside.max() == 1 and abs(float(inside.mean()) - 0.5) < 0.02
    hit0, hit1 = (_changed(a, b).any(dim=(1, 2)) for a, b in zip((x, y), out, strict=True))
    assert not torch.equal(hit0, hit1), "the two views draw independently"


def test_cutout_squares_clipped_at_borders() -> None:
    stage = Cutout(CutoutConfig(p=1.0, views=(1,), size=0.25))
    s, b = 32, 2000
    x, y = _views(b, s)
    params = stage.sample_params(b, s, _gen())
    out = stage.apply(y, params)
    zero = (out == 0).all(dim=1)
    assert torch.equal(zero, box_mask(params.boxes, s)[:, 0])
    side = stage.side(s)
    assert side == 8
    area = zero.sum(dim=(1, 2))
    assert (area <= side * side).all() and (area > 0).all()
    top, left, bottom, right = _bbox(zero).unbind(1)
    inner = (top > 0) & (left > 0) & (bottom < s) & (right < s)
    assert inner.any() and (~inner).any()
    assert (area[inner] == side * side).all(), "a full L x L square away from the borders"
    assert (area[~inner] < side * side).float().mean() > 0.5, "clipped at the borders"
    assert torch.unique(params.boxes, dim=0).shape[0] > 500
    assert torch.equal(stage((x, y), _gen())[0], x), "view 0 is not configured"


def test_probability_zero_is_identity() -> None:
    x, y = _views(32, 16)
    for cfg in (
        ErasingConfig(p=0.0),
        CutoutConfig(p=0.0),
        MixupConfig(p=0.0),
        CutmixConfig(p=0.0, views=(1,)),
    ):
        stage = build_stage(cfg)
        if isinstance(stage, MixingStage):
            (ox, oy), info = stage((x, y), _gen())
            assert torch.equal(info.lam, torch.ones(32)) and info.view == cfg.views[0]
        else:
            ox, oy = stage((x, y), _gen())
        assert torch.equal(ox, x) and torch.equal(oy, y), cfg


def test_random_bytes_are_uniform() -> None:
    b = random_bytes((3, 5, 7001), _gen())
    assert b.shape == (3, 5, 7001) and b.dtype == torch.uint8
    counts = torch.bincount(b.flatten().long(), minlength=256).double()
    expected = b.numel() / 256
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 255 + 6 * math.sqrt(2 * 255), "chi-square test of 256 equiprobable levels"
    assert not torch.equal(b, random_bytes((3, 5, 7001), _gen(2)))


def test_mixup_matches_formula() -> None:
    x, y = _views(64, 16)
    stage = Mixup(MixupConfig(p=0.75, alpha=0.4))
    (ox, oy), info = stage((x, y), _gen(3))
    assert oy is y and info.view == 0
    assert torch.equal(torch.sort(info.perm).values, torch.arange(64)), "a permutation"
    fixed = info.perm == torch.arange(64)
    assert (info.lam[fixed] == 1).all()
    mixed = info.lam < 1
    assert 0.6 < mixed.float().mean() < 0.9 and len(torch.unique(info.lam[mixed])) == int(mixed.sum())
    for i in range(64):
        lam = float(info.lam[i])
        ref = (x[i] * lam + x[int(info.perm[i])] * (1 - lam)).clamp(0, 1)
        torch.testing.assert_close(ox[i], ref, atol=1e-6, rtol=0)
    assert torch.equal(ox[~mixed], x[~mixed]), "lam = 1 samples are exactly unmixed"


def test_mixing_with_lam_one_is_exact() -> None:
    x, _ = _views(16, 16)
    perm = torch.randperm(16, generator=_gen())
    ones = torch.ones(16)
    assert torch.equal(Mixup(MixupConfig()).apply(x, MixParams(perm, ones)), x)
    boxes = cutmix_boxes(ones, torch.rand(16, 2, generator=_gen()), 16)
    assert (box_area(boxes) == 0).all()
    assert torch.equal(Cutmix(CutmixConfig()).apply(x, MixParams(perm, ones, boxes)), x)


def test_cutmix_lam_is_kept_area() -> None:
    s, b = 32, 256
    x, y = _views(b, s)
    (ox, oy), info = Cutmix(CutmixConfig(p=1.0, alpha=1.0))((x, y), _gen(4))
    assert oy is y
    pasted = _changed(x, ox)
    kept = 1 - pasted.float().mean(dim=(1, 2))
    assert torch.equal(kept, info.lam), "lam = 1 - |box| / S^2, measured from the images"
    assert (info.lam < 1).float().mean() > 0.9 and info.lam.min() < 0.2
    src = x[info.perm]
    sel = pasted.unsqueeze(1).expand_as(x)
    assert torch.equal(ox[sel], src[sel]), "the box holds the partner's pixels"
    top, left, bottom, right = _bbox(pasted[info.lam < 1]).unbind(1)
    assert torch.equal((bottom - top) * (right - left), pasted[info.lam < 1].sum(dim=(1, 2)))


def test_cutmix_box_geometry() -> None:
    lam = torch.tensor([0.75, 0.0, 0.75, 1.0])
    centre = torch.tensor([[0.5, 0.5], [0.5, 0.5], [0.0, 0.99], [0.3, 0.3]])
    boxes = cutmix_boxes(lam, centre, 32)
    assert boxes.tolist() == [[8, 8, 24, 24], [0, 0, 32, 32], [0, 24, 8, 32], [10, 10, 10, 10]]


@pytest.mark.parametrize("alpha", [0.5, 1.0, 4.0])
def test_beta_distribution(alpha: float) -> None:
    lam32 = sample_beta(alpha, 20000, _gen(5))
    assert lam32.dtype == torch.float32 and lam32.shape == (20000,)
    lam = lam32.double()
    assert lam.min() >= 0 and lam.max() <= 1
    try:
        from scipy import stats
    except ImportError:  # moments: mean 1/2, variance 1 / (4 (2 alpha + 1))
        assert abs(float(lam.mean()) - 0.5) < 0.01
        assert abs(float(lam.var()) - 1 / (4 * (2 * alpha + 1))) < 0.01
        return
    assert stats.kstest(lam.numpy(), stats.beta(alpha, alpha).cdf).pvalue > 1e-3


@pytest.mark.parametrize("shape", [0.05, 0.3, 2.5])
def test_gamma_sampler(shape: float) -> None:
    """The Gamma draws behind Beta, also for small shapes (where float32 Beta draws round to 1)."""
    g = _log_gamma(shape, 20000, _gen(6), 8).exp()
    try:
        from scipy import stats
    except ImportError:
        assert abs(float(g.mean()) - shape) < 0.05 * shape + 0.01
        return
    assert stats.kstest(g.numpy(), stats.gamma(shape).cdf).pvalue > 1e-3


def _run_flat(stage: Stage, views: tuple[Tensor, Tensor], seed: int) -> list[Tensor]:
    """The stage's outputs as a flat list: the two views, then ``perm`` and ``lam`` for mixing stages."""
    if isinstance(stage, MixingStage):
        (a, b), info = stage(views, _gen(seed))
        return [a, b, info.perm, info.lam]
    return list(stage(views, _gen(seed)))


def test_deterministic_for_equal_seeds() -> None:
    x, y = _views(32, 16)
    for cfg in (ErasingConfig(), CutoutConfig(), MixupConfig(views=(1,)), CutmixConfig()):
        stage = build_stage(cfg)
        a, b, c = (_run_flat(stage, (x, y), seed) for seed in (7, 7, 8))
        assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True)), cfg
        assert not torch.equal(a[cfg.views[-1]], c[cfg.views[-1]]), cfg
        assert not torch.equal(a[-1], c[-1]), cfg


@pytest.mark.parametrize("kind", [MixupConfig, CutmixConfig])
def test_invalid_mixing_configs_raise(kind: type[MixupConfig] | type[CutmixConfig]) -> None:
    with pytest.raises(ValueError, match="exactly one view"):
        build_stage(kind(views=(0, 1)))
    with pytest.raises(ValueError):
        kind(alpha=0.0)
    with pytest.raises(ValueError):
        kind(views=(2,))
    with pytest.raises(ValueError, match="at most one mixing stage"):
        AugmentConfig(stages=(MixupConfig(), CutmixConfig()))


def test_invalid_inputs_raise() -> None:
    with pytest.raises(ValueError):
        ErasingConfig(scale=(0.5, 0.2))
    with pytest.raises(ValueError):
        CutoutConfig(p=1.5)
    with pytest.raises(ValueError, match="square"):
        build_stage(CutoutConfig())((torch.rand(2, 3, 8, 9), torch.rand(2, 3, 8, 9)), _gen())
    with pytest.raises(ValueError):
        sample_beta(0.0, 4, _gen())
    assert math.isfinite(float(sample_beta(1e-3, 8, _gen()).sum())), "no 0/0 for tiny alpha"
