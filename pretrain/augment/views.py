"""The standard SSL view pipeline, batched, with independent random parameters per sample.

One view (Chen et al. 2020, SimCLR, arXiv 2002.05709; Chen et al. 2020, MoCo v2, arXiv 2003.04297;
Grill et al. 2020, BYOL, arXiv 2006.07733) is, per sample and in this order:

1. random resized crop to ``size x size`` (bilinear) and horizontal flip (p = ``flip_p``);
2. colour jitter with p = ``jitter_p``: brightness, contrast, saturation, hue, in this FIXED order, with
   factors ``U[max(0, 1 - x), 1 + x]`` for brightness / contrast / saturation and a hue shift ``U[-h, h]``;
3. grayscale (p = ``grayscale_p``);
4. Gaussian blur (p = ``blur_p``) with ``sigma ~ U[blur_sigma]`` pixels of the output view;
5. solarize (p = ``solarize_p``, threshold 0.5).

Each step equals the corresponding ``torchvision.transforms.v2`` transform applied to each sample alone
(see :mod:`pretrain.augment.ops` for the per-op correspondence and the one crop border deviation).  Known
deviations from the torchvision *transforms* (not the kernels):

* ``ColorJitter`` applies its four adjustments in a random order per call; here the order is fixed
  (brightness, contrast, saturation, hue), which keeps the batched implementation to one pass.
* All random numbers are drawn every call for every sample, from the given generator, whether or not an
  op ends up applied, so the draws do not depend on earlier outcomes.  Equal seeds give equal views on
  the same generator device type; CPU and CUDA generators produce different streams.
* The blur kernel size is derived from the sigma range (:func:`blur_kernel_size`) instead of being a
  separate setting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
from torch import Tensor

from pretrain.augment import ops
from pretrain.config import ViewConfig

__all__ = ["ViewParams", "ViewPipeline", "blur_kernel_size"]


def blur_kernel_size(sigma_max: float, size: int) -> int:
    """Odd Gaussian-blur kernel side: ``2 * ceil(3 * sigma_max) + 1``, capped at the largest odd ``<= size``.

    Truncating at 3 sigma keeps 99.7 % of the 1-D mass (the kernel is renormalised), so the truncation
    is invisible at 8-bit precision for the largest sigma and exact-to-rounding for smaller ones.  The cap
    keeps reflect padding (``k // 2 < size``) valid on small views, where it also truncates harder: at
    ``size = 32`` and MoCo's range ``(0.1, 2.0)`` (chosen for 224 px images) the kernel is 13; profiles for
    small images should pass proportionally smaller sigmas.

    Args:
        sigma_max: upper end of the sigma range, pixels.
        size: smallest side of the images to blur.

    Returns:
        odd ``k >= 1``.
    """
    k = 2 * math.ceil(3 * sigma_max) + 1
    cap = size if size % 2 == 1 else size - 1
    return max(1, min(k, cap))


@dataclass(frozen=True)
class ViewParams:
    """Per-sample parameters of one view for a batch of ``B`` samples (all on the generator's device).

    Attributes:
        boxes: ``[B, 4]`` crop boxes ``(top, left, h, w)`` in input pixels, see :func:`ops.sample_crop_boxes`.
        flip: ``[B]`` bool, mirror left-right.
        jitter: ``[B]`` bool, apply the colour jitter.
        brightness, contrast, saturation: ``[B]`` jitter factors (drawn for every sample).
        hue: ``[B]`` hue shift in turns.
        grayscale: ``[B]`` bool.
        blur: ``[B]`` bool.
        sigma: ``[B]`` blur sigma in output pixels.
        solarize: ``[B]`` bool.
    """

    boxes: Tensor
    flip: Tensor
    jitter: Tensor
    brightness: Tensor
    contrast: Tensor
    saturation: Tensor
    hue: Tensor
    grayscale: Tensor
    blur: Tensor
    sigma: Tensor
    solarize: Tensor

    def to(self, device: torch.device | str) -> ViewParams:
        """The same parameters with every tensor moved to ``device``."""
        return ViewParams(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def _uniform(u: Tensor, lo: float, hi: float) -> Tensor:
    """Map ``u ~ U[0, 1)`` to ``U[lo, hi)``."""
    return lo + (hi - lo) * u


class ViewPipeline:
    """Callable producing one augmented view of a batch: ``[B, 3, H, W]`` -> ``[B, 3, size, size]``.

    Construct from a :class:`~pretrain.config.ViewConfig`; call with the batch and a ``torch.Generator``.
    Everything is batched: one ``grid_sample`` for crop + flip, then each photometric op runs once on the
    subset of samples it applies to (:func:`ops.apply_to_subset`).  Strengths equal to 0 (e.g.
    ``hue=0``) skip that adjustment entirely, like torchvision's ``ColorJitter``.

    Example::

        pipe = ViewPipeline(ViewConfig(size=32, blur_sigma=(0.1, 0.3)))
        g = torch.Generator().manual_seed(0)
        v1, v2 = pipe(images, g), pipe(images, g)  # two independently augmented views
    """

    def __init__(self, cfg: ViewConfig) -> None:
        self.cfg = cfg
        self.kernel_size = blur_kernel_size(cfg.blur_sigma[1], cfg.size)

    def __repr__(self) -> str:
        return f"ViewPipeline({self.cfg!r}, kernel_size={self.kernel_size})"

    def sample_params(self, batch: int, height: int, width: int, generator: torch.Generator) -> ViewParams:
        """Draw independent parameters for ``batch`` samples of ``height x width`` input images.

        Draws, in this order and always in full, ``[B, 22]`` uniforms for the crop boxes and ``[B, 10]``
        uniforms for the other parameters, on ``generator.device``; the result stays on that device.
        """
        cfg = self.cfg
        boxes = ops.sample_crop_boxes(generator, batch, height, width, cfg.crop_scale, cfg.crop_ratio)
        u = torch.rand(batch, 10, generator=generator, device=generator.device).unbind(dim=1)
        return ViewParams(
            boxes=boxes,
            flip=u[0] < cfg.flip_p,
            jitter=u[1] < cfg.jitter_p,
            brightness=_uniform(u[2], max(0.0, 1.0 - cfg.brightness), 1.0 + cfg.brightness),
            contrast=_uniform(u[3], max(0.0, 1.0 - cfg.contrast), 1.0 + cfg.contrast),
            saturation=_uniform(u[4], max(0.0, 1.0 - cfg.saturation), 1.0 + cfg.saturation),
            hue=_uniform(u[5], -cfg.hue, cfg.hue),
            grayscale=u[6] < cfg.grayscale_p,
            blur=u[7] < cfg.blur_p,
            sigma=_uniform(u[8], cfg.blur_sigma[0], cfg.blur_sigma[1]),
            solarize=u[9] < cfg.solarize_p,
        )

    def _jitter(self, x: Tensor, b: Tensor, c: Tensor, s: Tensor, h: Tensor) -> Tensor:
        """Brightness -> contrast -> saturation -> hue on ``x`` ``[n, 3, S, S]`` with ``[n]`` factors."""
        cfg = self.cfg
        if cfg.brightness > 0:
            x = ops.adjust_brightness(x, b)
        if cfg.contrast > 0:
            x = ops.adjust_contrast(x, c)
        if cfg.saturation > 0:
            x = ops.adjust_saturation(x, s)
        if cfg.hue > 0:
            x = ops.adjust_hue(x, h)
        return x

    def _blur(self, x: Tensor, sigma: Tensor) -> Tensor:
        return ops.gaussian_blur(x, sigma, self.kernel_size)

    def apply(self, images: Tensor, params: ViewParams) -> Tensor:
        """Apply the view with given parameters.

        Args:
            images: ``[B, 3, H, W]`` uint8 (scaled by 1/255 first) or floating point in ``[0, 1]``.
            params: from :meth:`sample_params` for this ``B, H, W`` (any device).

        Returns:
            ``[B, 3, size, size]`` in ``[0, 1]`` on ``images.device``; float32 for uint8 input, else
            ``images.dtype``.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape [B, 3, H, W], got {tuple(images.shape)}")
        if images.dtype == torch.uint8:
            images = images.float().div_(255.0)
        elif not images.is_floating_point():
            raise TypeError(f"images must be uint8 or floating point, got {images.dtype}")
        cfg = self.cfg
        x = ops.resized_crop(images, params.boxes, cfg.size, params.flip)
        if cfg.jitter_p > 0 and max(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue) > 0:
            x = ops.apply_to_subset(
                self._jitter,
                x,
                params.jitter,
                params.brightness,
                params.contrast,
                params.saturation,
                params.hue,
            )
        if cfg.grayscale_p > 0:
            x = ops.apply_to_subset(ops.rgb_to_grayscale, x, params.grayscale)
        if cfg.blur_p > 0 and self.kernel_size > 1:
            x = ops.apply_to_subset(self._blur, x, params.blur, params.sigma)
        if cfg.solarize_p > 0:
            x = ops.apply_to_subset(ops.solarize, x, params.solarize)
        return x

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """Draw per-sample parameters from ``generator`` (:meth:`sample_params`) and :meth:`apply` them.

        Args:
            images: ``[B, 3, H, W]`` uint8 or float in ``[0, 1]``, any device.
            generator: source of all randomness; may live on another device than ``images``.

        Returns:
            ``[B, 3, size, size]`` float in ``[0, 1]``.
        """
        b, _, h, w = images.shape
        return self.apply(images, self.sample_params(b, h, w, generator))
