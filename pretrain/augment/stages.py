"""Batch-level masking and mixing stages, applied to the augmented views inside SSL pretraining.

Every stage acts on the two float views ``(v0, v1)``, each ``[B, 3, S, S]`` in ``[0, 1]`` on the training
device, and touches only the view indices of its config (``cfg.views``), in that order, drawing fresh
parameters for each view.  Built from the typed configs of :mod:`pretrain.augment.config`:

* :class:`RandomErasing` (Zhong et al. 2017, arXiv 1708.04896) and :class:`Cutout` (DeVries & Taylor
  2017, arXiv 1708.04552) are *masking* stages: ``stage(views, generator) -> views``.
* :class:`Mixup` (Zhang et al. 2017, arXiv 1710.09412; label-free as in i-Mix, Lee et al. 2020,
  arXiv 2010.08887, and Un-Mix, Shen et al. 2020, arXiv 2003.05438) and :class:`Cutmix` (Yun et al.
  2019, arXiv 1905.04899) are *mixing* stages on exactly one view:
  ``stage(views, generator) -> (views, MixInfo)``; see :class:`pretrain.methods.base.MixInfo` for how a
  method turns ``(perm, lam)`` into mixed targets.

Conventions (those of :mod:`pretrain.augment.views`): every parameter is drawn per sample from the given
``torch.Generator`` on ``generator.device`` and moved to the images' device; all parameters are drawn for
all samples every call, whether or not the stage ends up applied to a sample, so the number of draws never
depends on outcomes and equal seeds give equal outputs.  Masks are built without Python loops over samples,
by comparing a broadcast coordinate grid against per-sample box edges (:func:`box_mask`).  Boxes are
``[B, 4]`` int64 ``(top, left, bottom, right)``, half-open (rows ``top <= r < bottom``); an empty box
(``bottom <= top``) leaves its sample untouched.  Each class has ``sample_params`` (draw) and ``apply``
(deterministic, given explicit parameters) so tests and analyses can pass their own ``lam`` or boxes.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

from pretrain.augment.config import CutmixConfig, CutoutConfig, ErasingConfig, MixupConfig, StageConfig
from pretrain.methods.base import MixInfo

__all__ = [
    "ERASING_ATTEMPTS",
    "GAMMA_ROUNDS",
    "Cutmix",
    "Cutout",
    "MaskParams",
    "MaskingStage",
    "MixParams",
    "MixingStage",
    "Mixup",
    "RandomErasing",
    "Stage",
    "box_area",
    "box_mask",
    "build_stage",
    "cutmix_boxes",
    "random_bytes",
    "sample_beta",
]

Views = tuple[Tensor, Tensor]

ERASING_ATTEMPTS = 20
"""Rectangles drawn per sample by :class:`RandomErasing`; the first that fits is erased.  With the default
``scale = (0.02, 0.33)``, ``ratio = (0.3, 3.3)`` one attempt fits with probability ~0.36 at ``S = 32``, so
all 20 fail (the sample is then left unerased) with probability ~1.3e-4."""

GAMMA_ROUNDS = 8
"""Rejection rounds of the Marsaglia-Tsang Gamma sampler in :func:`sample_beta`.  A round accepts with
probability >= 0.95 (shape >= 1), so all 8 reject with probability < 1e-10."""


# ------------------------------------------------------------------------------------------------ helpers


def _check_views(x: Tensor) -> int:
    """The side ``S`` of a ``[B, 3, S, S]`` view (raises on other shapes)."""
    if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != x.shape[3]:
        raise ValueError(f"expected square views of shape [B, 3, S, S], got {tuple(x.shape)}")
    return int(x.shape[-1])


def box_mask(boxes: Tensor, size: int) -> Tensor:
    """Pixel masks of per-sample boxes: ``[B, 4]`` ``(top, left, bottom, right)`` -> ``[B, 1, S, S]`` bool.

    ``mask[b, 0, r, c] = (top_b <= r < bottom_b) and (left_b <= c < right_b)``: the ``[1, S]`` coordinate
    grid is compared with the ``[B, 1]`` box edges, giving ``[B, S]`` row and column masks, whose
    broadcast AND (``[B, S, 1] & [B, 1, S]``) is the box (one pass over the ``B S^2`` output).  The mask
    lives on ``boxes.device``.
    """
    grid = torch.arange(size, device=boxes.device).unsqueeze(0)  # [1, S]
    top, left, bottom, right = (c.unsqueeze(1) for c in boxes.unbind(dim=1))  # [B, 1] each
    rows = (grid >= top) & (grid < bottom)  # [B, S]
    cols = (grid >= left) & (grid < right)
    return (rows.unsqueeze(2) & cols.unsqueeze(1)).unsqueeze(1)


def box_area(boxes: Tensor) -> Tensor:
    """``[B]`` pixel areas of ``[B, 4]`` ``(top, left, bottom, right)`` boxes (0 for empty boxes)."""
    top, left, bottom, right = boxes.unbind(dim=1)
    return (bottom - top).clamp(min=0) * (right - left).clamp(min=0)


def random_bytes(shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    """Independent uniform uint8 values of ``shape`` on ``generator.device``, four per generator draw.

    Draws ``ceil(n / 4)`` int64 values uniform in ``[0, 2^32)`` (``Tensor.random_``) and reinterprets
    each as four bytes (about 2.5x faster on the CPU than one ``torch.rand`` float per value).
    """
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=generator.device)
    words.random_(0, 2**32, generator=generator)
    return words.to(torch.int32).view(torch.uint8)[:n].reshape(shape)


def _log_gamma(shape: float, n: int, generator: torch.Generator, rounds: int) -> Tensor:
    """``[n]`` float64 logs of independent Gamma(shape, 1) variates, ``shape > 0``.

    Marsaglia & Tsang (2000, "A simple method for generating gamma variables") for shape ``a + 1 >= 1``:
    ``d = a + 1 - 1/3``, ``c = 1 / sqrt(9 d)``; propose ``v = (1 + c z)^3`` with ``z ~ N(0, 1)`` and accept
    iff ``v > 0`` and ``log u < z^2 / 2 + d - d v + d log v`` (``u ~ U[0, 1)``); then ``d v ~ Gamma(a + 1)``.
    ``rounds`` proposals are drawn per variate and the first accepted one is taken; if none is, ``v = 1``
    (the proposal at ``z = 0``, always acceptable).  The boost ``Gamma(a) = Gamma(a + 1) U^(1/a)`` (ibid.,
    section 6) gives any ``a > 0``; working with logs keeps tiny shapes (``U^(1/a)`` underflows) finite.
    Draws, in order: ``[n, rounds]`` normals, ``[n, rounds]`` uniforms, ``[n]`` uniforms (float64).
    """
    device, f64 = generator.device, torch.float64
    d = shape + 1.0 - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    z = torch.randn(n, rounds, generator=generator, device=device, dtype=f64)
    u = torch.rand(n, rounds, generator=generator, device=device, dtype=f64)
    boost = torch.rand(n, generator=generator, device=device, dtype=f64)
    v = (1.0 + c * z) ** 3
    log_v = torch.log(v.clamp(min=1e-300))
    ok = (v > 0) & (torch.log(u) < 0.5 * z * z + d - d * v + d * log_v)
    first = ok.to(torch.uint8).argmax(dim=1, keepdim=True)
    log_v = torch.where(ok.any(dim=1), log_v.gather(1, first).squeeze(1), 0.0)
    return math.log(d) + log_v + torch.log1p(-boost) / shape


def sample_beta(alpha: float, n: int, generator: torch.Generator, rounds: int = GAMMA_ROUNDS) -> Tensor:
    """``[n]`` float32 draws of Beta(alpha, alpha) on ``generator.device``.

    ``Beta(a, a) = G1 / (G1 + G2)`` for independent ``G1, G2 ~ Gamma(a, 1)``, computed as
    ``sigmoid(log G1 - log G2)`` from :func:`_log_gamma` (one call for both, ``[n, 2]`` variates), so
    it is exact in distribution up to the ``rounds`` truncation and never 0/0 for small ``alpha``.
    (``torch.distributions`` and ``torch._standard_gamma`` take no generator, hence the own sampler.)
    Draws within ~6e-8 of 1 round to exactly 1 in float32 (a visible mass only for ``alpha`` << 1).
    """
    if alpha <= 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    log_g = _log_gamma(alpha, 2 * n, generator, rounds).reshape(n, 2)
    return torch.sigmoid(log_g[:, 0] - log_g[:, 1]).float()


# -------------------------------------------------------------------------------------------------- masking


@dataclass(frozen=True)
class MaskParams:
    """Per-sample parameters of a masking stage for a batch of ``B`` (any device).

    Attributes:
        boxes: ``[B, 4]`` int64 ``(top, left, bottom, right)``; empty where the stage is not applied.
        fill: ``[B, 3, S, S]`` values written inside the boxes, or ``None`` for zeros.
    """

    boxes: Tensor
    fill: Tensor | None = None


class MaskingStage(ABC):
    """A stage overwriting a box of pixels per sample in each configured view (returns no MixInfo)."""

    cfg: ErasingConfig | CutoutConfig
    views: tuple[int, ...]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.cfg!r})"

    @abstractmethod
    def sample_params(self, batch: int, size: int, generator: torch.Generator) -> MaskParams:
        """Draw the parameters for ``batch`` samples of side ``size`` on ``generator.device``."""

    def apply(self, x: Tensor, params: MaskParams) -> Tensor:
        """``where(box_i, fill_i, x_i)`` per sample (``fill = 0`` if ``params.fill is None``).

        Args:
            x: ``[B, 3, S, S]`` float view.
            params: from :meth:`sample_params` for this ``B, S`` (any device).

        Returns:
            ``[B, 3, S, S]``, a new tensor on ``x.device``.
        """
        mask = box_mask(params.boxes.to(x.device), _check_views(x))
        if params.fill is None:  # x * keep: ~3x faster on the CPU than a broadcast masked_fill
            return x * (~mask).to(x.dtype)
        return torch.where(mask, params.fill.to(device=x.device, dtype=x.dtype), x)

    def __call__(self, views: Views, generator: torch.Generator) -> Views:
        """Mask each configured view (in ``self.views`` order) with freshly drawn per-sample parameters."""
        out = list(views)
        for v in self.views:
            x = out[v]
            out[v] = self.apply(x, self.sample_params(x.shape[0], _check_views(x), generator))
        return out[0], out[1]


class RandomErasing(MaskingStage):
    """Random Erasing (Zhong et al. 2017, arXiv 1708.04896), per sample with probability ``cfg.p``.

    Per attempt (paper, Alg. 1): area ``A = s S^2`` with ``s ~ U(scale)``, aspect ratio ``r = h / w``
    log-uniform in ``ratio`` (the paper draws ``r`` uniformly; log-uniform is symmetric in ``h``, ``w``),
    ``h = round(sqrt(A r))``, ``w = round(sqrt(A / r))`` and a top-left corner ``(top, left)`` uniform
    over the ``S x S`` pixels; it fits iff ``h, w >= 1``, ``top + h <= S`` and ``left + w <= S``.  The
    paper retries until a rectangle fits; here :data:`ERASING_ATTEMPTS` attempts are drawn for every
    sample at once and the first that fits is erased; a sample none of whose attempts fit is left
    unerased (effective probability ``p (1 - q)``, ``q ~ 1.3e-4`` at the defaults, ``S = 32``).
    The rectangle is filled with independent per-pixel, per-channel random 8-bit values ``k / 255``,
    ``k`` uniform in ``{0, ..., 255}`` (``value: random``: the paper's ``random(0, 255)``, Alg. 1) or
    zeros.  Draws: ``[B, 4 K + 1]`` uniforms (``K`` attempts x area, log-ratio, top, left; then apply),
    then for ``value: random`` the ``3 B S^2`` noise bytes of :func:`random_bytes`.
    """

    cfg: ErasingConfig

    def __init__(self, cfg: ErasingConfig, attempts: int = ERASING_ATTEMPTS) -> None:
        self.cfg, self.views, self.attempts = cfg, cfg.views, attempts

    def sample_params(self, batch: int, size: int, generator: torch.Generator) -> MaskParams:
        cfg, k = self.cfg, self.attempts
        u = torch.rand(batch, 4 * k + 1, generator=generator, device=generator.device)
        area = size * size * (cfg.scale[0] + (cfg.scale[1] - cfg.scale[0]) * u[:, :k])
        log_lo, log_hi = math.log(cfg.ratio[0]), math.log(cfg.ratio[1])
        aspect = torch.exp(log_lo + (log_hi - log_lo) * u[:, k : 2 * k])
        h = torch.round(torch.sqrt(area * aspect)).long()
        w = torch.round(torch.sqrt(area / aspect)).long()
        top = torch.floor(u[:, 2 * k : 3 * k] * size).long().clamp_(max=size - 1)
        left = torch.floor(u[:, 3 * k : 4 * k] * size).long().clamp_(max=size - 1)
        ok = (h >= 1) & (w >= 1) & (top + h <= size) & (left + w <= size)  # [B, K]
        first = ok.to(torch.uint8).argmax(dim=1, keepdim=True)
        boxes = torch.stack([t.gather(1, first).squeeze(1) for t in (top, left, top + h, left + w)], dim=1)
        apply = (u[:, 4 * k] < cfg.p) & ok.any(dim=1)
        boxes = torch.where(apply.unsqueeze(1), boxes, 0)
        if cfg.value == "zero":
            return MaskParams(boxes)
        return MaskParams(boxes, random_bytes((batch, 3, size, size), generator).float().div_(255.0))


class Cutout(MaskingStage):
    """CutOut (DeVries & Taylor 2017, arXiv 1708.04552), per sample with probability ``cfg.p``.

    A square of side ``L = max(1, round(size * S))`` pixels centred on a pixel ``(cy, cx)`` uniform over
    the image: rows ``[cy - L // 2, cy - L // 2 + L)`` (likewise columns), clipped at the borders as in the
    paper, so the zeroed area is ``L^2`` away from the borders and less near them.  Draws: ``[B, 3]``
    uniforms (centre row, centre column, apply).
    """

    cfg: CutoutConfig

    def __init__(self, cfg: CutoutConfig) -> None:
        self.cfg, self.views = cfg, cfg.views

    def side(self, size: int) -> int:
        """The square's side ``L`` in pixels for ``S = size``."""
        return max(1, round(self.cfg.size * size))

    def sample_params(self, batch: int, size: int, generator: torch.Generator) -> MaskParams:
        u = torch.rand(batch, 3, generator=generator, device=generator.device)
        side = self.side(size)
        start = torch.floor(u[:, :2] * size).long().clamp_(max=size - 1) - side // 2  # [B, 2] (row, col)
        lo, hi = start.clamp(0, size), (start + side).clamp(0, size)
        boxes = torch.stack((lo[:, 0], lo[:, 1], hi[:, 0], hi[:, 1]), dim=1)
        return MaskParams(torch.where((u[:, 2] < self.cfg.p).unsqueeze(1), boxes, 0))


# --------------------------------------------------------------------------------------------------- mixing


@dataclass(frozen=True)
class MixParams:
    """Per-sample parameters of a mixing stage for a batch of ``B`` (any device).

    Attributes:
        perm: ``[B]`` int64, sample ``i``'s partner ``perm[i]`` (one permutation of the batch).
        lam: ``[B]`` float32, the weight of the sample's own image: 1 where the stage is not applied or
            ``perm[i] == i``; for CutMix the kept area fraction of the (clipped) box.
        boxes: ``[B, 4]`` int64 CutMix boxes, pasted from the partner (``None`` for MixUp).
    """

    perm: Tensor
    lam: Tensor
    boxes: Tensor | None = None


class MixingStage(ABC):
    """A stage mixing one view of each sample with the same view of a partner sample (``perm``).

    Fixed points of ``perm`` (``perm[i] == i``, ~one per batch on average) would mix a sample with itself,
    which changes nothing; they get ``lam = 1`` (and an empty CutMix box), which makes the reported ``lam``
    the true own-image weight and the mixed-target loss exactly the unmixed one.  A derangement is not
    enforced.
    """

    view: int

    def __init__(self, cfg: MixupConfig | CutmixConfig) -> None:
        if len(cfg.views) != 1:
            raise ValueError(f"a {cfg.kind} stage mixes exactly one view, got views={cfg.views}")
        self.cfg, self.view = cfg, cfg.views[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.cfg!r})"

    @abstractmethod
    def sample_params(self, batch: int, size: int, generator: torch.Generator) -> MixParams:
        """Draw ``perm``, ``lam`` (and boxes) for ``batch`` samples of side ``size``."""

    @abstractmethod
    def apply(self, x: Tensor, params: MixParams) -> Tensor:
        """Mix ``x`` ``[B, 3, S, S]`` with ``x[perm]`` as given by ``params``."""

    def __call__(self, views: Views, generator: torch.Generator) -> tuple[Views, MixInfo]:
        """Mix the configured view; returns the views and the :class:`MixInfo` (on the views' device)."""
        x = views[self.view]
        params = self.sample_params(x.shape[0], _check_views(x), generator)
        out = list(views)
        out[self.view] = self.apply(x, params)
        info = MixInfo(self.view, params.perm.to(x.device), params.lam.to(x.device))
        return (out[0], out[1]), info

    def _perm_lam(self, batch: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """Draw ``perm`` (``torch.randperm``), raw ``lam ~ Beta(alpha, alpha)`` and whether to apply
        (``U < p`` and ``perm[i] != i``), each ``[B]`` on ``generator.device``."""
        device = generator.device
        perm = torch.randperm(batch, generator=generator, device=device)
        lam = sample_beta(self.cfg.alpha, batch, generator)
        applied = torch.rand(batch, generator=generator, device=device) < self.cfg.p
        return perm, lam, applied & (perm != torch.arange(batch, device=device))


class Mixup(MixingStage):
    """Label-free MixUp: ``x_i <- lam_i x_i + (1 - lam_i) x_perm(i)`` on view ``cfg.views[0]``.

    Zhang et al. 2017 (arXiv 1710.09412) and the label-free i-Mix (arXiv 2010.08887) / Un-Mix (arXiv
    2003.05438) draw one ``lam ~ Beta(alpha, alpha)`` per batch; here every sample draws its own ``lam_i``
    (all parameters are per sample; :class:`MixInfo` carries ``[B]`` weights), and samples not selected
    (probability ``1 - p``) get ``lam_i = 1``.  Draws: ``randperm(B)``, the Beta
    draws of :func:`sample_beta`, ``[B]`` apply uniforms.
    """

    def sample_params(self, batch: int, size: int, generator: torch.Generator) -> MixParams:
        perm, lam, applied = self._perm_lam(batch, generator)
        return MixParams(perm, torch.where(applied, lam, 1.0))

    def apply(self, x: Tensor, params: MixParams) -> Tensor:
        """``clamp(lam x + (1 - lam) x[perm], 0, 1)``; exactly ``x[i]`` where ``lam[i] == 1``."""
        lam = params.lam.to(device=x.device, dtype=x.dtype).reshape(-1, 1, 1, 1)
        return (x * lam + x[params.perm.to(x.device)] * (1.0 - lam)).clamp_(0.0, 1.0)


def cutmix_boxes(lam: Tensor, centre: Tensor, size: int) -> Tensor:
    """CutMix boxes (Yun et al. 2019, arXiv 1905.04899, section 3.1): side ``c = S sqrt(1 - lam)``
    (area fraction ``1 - lam``) centred at ``centre * S``, edges rounded to pixels and clipped to the image.

    Args:
        lam: ``[B]`` in ``[0, 1]``; ``lam = 1`` gives an empty box.
        centre: ``[B, 2]`` ``(row, col)`` fractions in ``[0, 1)``.
        size: image side ``S``.

    Returns:
        ``[B, 4]`` int64 ``(top, left, bottom, right)`` on ``lam.device``.
    """
    half = (size * torch.sqrt((1.0 - lam).clamp(min=0.0)) / 2).unsqueeze(1)  # [B, 1]
    mid = centre * size
    lo = torch.round(mid - half).long().clamp(0, size)
    hi = torch.round(mid + half).long().clamp(0, size)
    return torch.stack((lo[:, 0], lo[:, 1], hi[:, 0], hi[:, 1]), dim=1)


class Cutmix(MixingStage):
    """Label-free CutMix on view ``cfg.views[0]``: paste the partner's pixels inside a box.

    Per sample ``lam ~ Beta(alpha, alpha)``, a box of area fraction ``1 - lam`` centred uniformly over the
    image (:func:`cutmix_boxes`, clipped to it), ``x_i <- where(box, x_perm(i), x_i)``, and ``lam`` is
    corrected to the area actually kept, ``1 - |box| / S^2`` (as in the authors' reference code).
    Samples not selected (probability ``1 - p``) or with ``perm[i] == i`` get an empty box and
    ``lam = 1``.  Draws: ``randperm(B)``, the Beta draws of :func:`sample_beta`, ``[B]`` apply uniforms,
    ``[B, 2]`` centres.
    """

    def sample_params(self, batch: int, size: int, generator: torch.Generator) -> MixParams:
        perm, lam, applied = self._perm_lam(batch, generator)
        centre = torch.rand(batch, 2, generator=generator, device=generator.device)
        boxes = torch.where(applied.unsqueeze(1), cutmix_boxes(lam, centre, size), 0)
        kept = 1.0 - box_area(boxes).float() / float(size * size)
        return MixParams(perm, kept, boxes)

    def apply(self, x: Tensor, params: MixParams) -> Tensor:
        """``where(box_i, x[perm[i]], x[i])`` per sample; ``params.lam`` is not used."""
        if params.boxes is None:
            raise ValueError("CutMix needs params.boxes")
        mask = box_mask(params.boxes.to(x.device), _check_views(x))
        return torch.where(mask, x[params.perm.to(x.device)], x)


# -------------------------------------------------------------------------------------------------- build

Stage = MaskingStage | MixingStage


def build_stage(cfg: StageConfig) -> Stage:
    """The stage for a config of :mod:`pretrain.augment.config` (raises ``ValueError`` on bad views)."""
    if isinstance(cfg, ErasingConfig):
        return RandomErasing(cfg)
    if isinstance(cfg, CutoutConfig):
        return Cutout(cfg)
    if isinstance(cfg, MixupConfig):
        return Mixup(cfg)
    if isinstance(cfg, CutmixConfig):
        return Cutmix(cfg)
    raise TypeError(f"unknown stage config {cfg!r}")
