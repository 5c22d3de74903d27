"""Typed configs of the batch-level augmentation stages (masking and mixing inside SSL pretraining).

Each stage is a frozen dataclass with a ``kind`` tag, so a recipe lists its stages as
``augment.stages: [{kind: erasing, p: 0.5, ...}, ...]`` and they validate strictly.  ``views`` names the
view indices (0 = query/online view, 1 = key/target view) a stage touches; ``p`` is the per-sample
probability of applying it.  Stages run in the listed order after the per-view pipelines, on the
training device.  See :mod:`pretrain.augment.stages` for the semantics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


def _check_common(p: float, views: tuple[int, ...]) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be a probability in [0, 1], got {p}")
    if not views or any(v not in (0, 1) for v in views) or len(set(views)) != len(views):
        raise ValueError(f"views must be distinct view indices among (0, 1), got {views}")


@dataclass(frozen=True)
class ErasingConfig:
    """Random Erasing (Zhong et al. 2017, arXiv 1708.04896): a random rectangle of area fraction
    ~ U(scale) and aspect ratio log-uniform in ``ratio``, filled with per-pixel random values
    (``value: random``) or zeros."""

    kind: Literal["erasing"] = "erasing"
    p: float = 0.5
    views: tuple[int, ...] = (0, 1)
    scale: tuple[float, float] = (0.02, 0.33)
    ratio: tuple[float, float] = (0.3, 3.3)
    value: Literal["random", "zero"] = "random"

    def __post_init__(self) -> None:
        _check_common(self.p, self.views)
        if not 0.0 < self.scale[0] <= self.scale[1] < 1.0:
            raise ValueError(f"scale must satisfy 0 < lo <= hi < 1, got {self.scale}")


@dataclass(frozen=True)
class CutoutConfig:
    """CutOut (DeVries & Taylor 2017, arXiv 1708.04552): a square of side ``size`` (fraction of the image
    side) centred uniformly at random (it may extend past the border, as in the paper), set to zero."""

    kind: Literal["cutout"] = "cutout"
    p: float = 0.5
    views: tuple[int, ...] = (0, 1)
    size: float = 0.5

    def __post_init__(self) -> None:
        _check_common(self.p, self.views)
        if not 0.0 < self.size <= 1.0:
            raise ValueError(f"size must be in (0, 1], got {self.size}")


def _check_mixing(p: float, views: tuple[int, ...], alpha: float) -> None:
    _check_common(p, views)
    if len(views) != 1:
        raise ValueError(f"a mixing stage mixes exactly one view, got views={views}")
    if alpha <= 0:
        raise ValueError(f"alpha must be positive, got {alpha}")


@dataclass(frozen=True)
class MixupConfig:
    """Label-free MixUp (Zhang et al. 2017, arXiv 1710.09412; i-Mix arXiv 2010.08887; Un-Mix): view
    ``x_i <- lam x_i + (1 - lam) x_perm(i)``, lam ~ Beta(alpha, alpha), with one batch permutation."""

    kind: Literal["mixup"] = "mixup"
    p: float = 1.0
    views: tuple[int, ...] = (0,)
    alpha: float = 1.0

    def __post_init__(self) -> None:
        _check_mixing(self.p, self.views, self.alpha)


@dataclass(frozen=True)
class CutmixConfig:
    """Label-free CutMix (Yun et al. 2019, arXiv 1905.04899): paste a box of the partner's view; lam is
    corrected to the area actually kept."""

    kind: Literal["cutmix"] = "cutmix"
    p: float = 1.0
    views: tuple[int, ...] = (0,)
    alpha: float = 1.0

    def __post_init__(self) -> None:
        _check_mixing(self.p, self.views, self.alpha)


StageConfig = ErasingConfig | CutoutConfig | MixupConfig | CutmixConfig


@dataclass(frozen=True)
class GenerativeConfig:
    """Generative source swap (arXiv 2403.05966): before the view pipeline of view ``v`` in ``views``, the
    sample's source image is replaced, with probability ``p`` (per sample, view and step), by one of its
    pre-generated variants, chosen uniformly.  The variants come from the store ``store``: a store name
    under ``<data root>/<dataset folder>-variants/`` (``sd-unclip``, ``icgan``, ``oracle``, or the name
    given to ``bench generate --out``) or a path.  The paper's summary uses p = 0.5 on both views (its
    code's main configs swap view 1 with p = 1; ablations 0.25/0.5/0.75).  Semantics and the
    reproducibility rule: :mod:`pretrain.generative.swap`.
    """

    kind: Literal["generative"] = "generative"
    store: str = "sd-unclip"
    p: float = 0.5
    views: tuple[int, ...] = (0, 1)

    def __post_init__(self) -> None:
        _check_common(self.p, self.views)
        if not self.store.strip():
            raise ValueError("store must name a variant store (e.g. sd-unclip) or a path")


SourceConfig = GenerativeConfig
