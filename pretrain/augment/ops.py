"""Batched, per-sample-parameterised image ops for SSL view pipelines.

Every op takes a batch ``x`` of float images in ``[0, 1]`` with shape ``[B, C, H, W]`` (``C = 3``, RGB) and
per-sample parameters with shape ``[B]``, and processes the whole batch with tensor ops (no Python loop over
samples).  Applied to sample ``b`` alone, each op equals the corresponding
``torchvision.transforms.v2.functional`` kernel (float-image path) called with parameter ``[b]``, up to
floating-point rounding; the deviations that remain are listed per op (only :func:`resized_crop` has one).

Random parameters are drawn by the caller (see :func:`sample_crop_boxes` and
:mod:`pretrain.augment.views`) from an explicit ``torch.Generator``; the ops themselves are deterministic.
Parameter tensors may live on another device than ``x``; they are moved to ``x.device`` (and cast to
``x.dtype``) here.  Preconditions such as "factors are non-negative" are documented, not checked: checking a
device tensor would synchronise with the GPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "GRAY_WEIGHTS",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "apply_to_subset",
    "gaussian_blur",
    "gaussian_kernels1d",
    "resized_crop",
    "rgb_to_grayscale",
    "sample_crop_boxes",
    "solarize",
]

GRAY_WEIGHTS: tuple[float, float, float] = (0.2989, 0.587, 0.114)
"""ITU-R 601-2 luma weights for (R, G, B), as rounded by torchvision / PIL."""


def _per_sample(p: Tensor, x: Tensor) -> Tensor:
    """Per-sample parameter ``p`` of shape ``[B]`` as ``[B, 1, 1, 1]`` on ``x``'s device and dtype."""
    return p.to(device=x.device, dtype=x.dtype).reshape(-1, 1, 1, 1)


# --------------------------------------------------------------------------------------------- geometry


def sample_crop_boxes(
    generator: torch.Generator,
    batch: int,
    height: int,
    width: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Tensor:
    """Draw one random-resized-crop box per sample, independently (Szegedy et al. 2015, "Going deeper
    with convolutions", the "Inception crop").

    Vectorised version of ``torchvision.transforms.v2.RandomResizedCrop.make_params``: for each sample,
    10 attempts draw an area fraction ``s ~ U(scale)`` and a log aspect ratio ``log r ~ U(log ratio)`` and
    set ``w = round(sqrt(s*H*W*r))``, ``h = round(sqrt(s*H*W/r))`` (round half to even, like Python's
    ``round``).  The first attempt with ``0 < w <= W`` and ``0 < h <= H`` wins and its corner is uniform
    over the valid integer positions; if none fits, the box is the central crop of the largest size whose
    aspect ratio is clamped into ``ratio`` (the whole image if ``W/H`` already lies in ``ratio``).  Unlike
    torchvision, all 10 attempts and the corner are always drawn (a fixed ``22 * B`` uniforms, one
    ``[B, 22]`` draw), so the number of draws does not depend on the outcome.

    Args:
        generator: source of randomness; numbers are created on ``generator.device``.
        batch: number of boxes ``B``.
        height, width: image size ``H, W`` in pixels.
        scale: range of the crop area as a fraction of ``H*W``.
        ratio: range of the crop aspect ratio ``w / h``.

    Returns:
        ``[B, 4]`` float32 tensor on ``generator.device`` of integer-valued ``(top, left, h, w)`` in pixels,
        with ``0 <= top``, ``top + h <= H``, ``0 <= left``, ``left + w <= W``, ``h, w >= 1``.
    """
    device = generator.device
    u = torch.rand(batch, 22, generator=generator, device=device)
    area = float(height * width)
    target_area = area * (scale[0] + (scale[1] - scale[0]) * u[:, :10])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[:, 10:20])
    w = torch.round(torch.sqrt(target_area * aspect))
    h = torch.round(torch.sqrt(target_area / aspect))
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)  # [B, 10]
    first = ok.to(torch.uint8).argmax(dim=1, keepdim=True)  # index of the first fitting attempt
    any_ok = ok.any(dim=1)
    w = w.gather(1, first).squeeze(1)
    h = h.gather(1, first).squeeze(1)

    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        fw, fh = round(height * max(ratio)), height
    else:
        fw, fh = width, height
    h = torch.where(any_ok, h, float(fh))
    w = torch.where(any_ok, w, float(fw))
    top = torch.minimum(torch.floor(u[:, 20] * (height - h + 1)), height - h)
    left = torch.minimum(torch.floor(u[:, 21] * (width - w + 1)), width - w)
    top = torch.where(any_ok, top, float((height - fh) // 2))
    left = torch.where(any_ok, left, float((width - fw) // 2))
    return torch.stack((top, left, h, w), dim=1)


def resized_crop(
    images: Tensor, boxes: Tensor, size: int | tuple[int, int], flip: Tensor | None = None
) -> Tensor:
    """Crop a box per sample, resize it bilinearly to ``size`` and optionally mirror it horizontally.

    One ``F.affine_grid`` + ``F.grid_sample(mode="bilinear", padding_mode="border", align_corners=False)``
    for the whole batch, with one affine matrix per sample; the flip is folded into the matrix (the sign of
    its x scale), so it costs nothing.

    Sampling convention (pixel centres, ``align_corners=False``): in continuous coordinates pixel ``i``
    covers ``[i, i + 1)`` with its centre at ``i + 0.5``, and a box ``(top, h)`` covers ``[top, top + h)``.
    The ``size_h`` output rows split the box's extent evenly, and output row ``i`` takes the value at its
    centre ``top + (i + 0.5) * h / size_h``, i.e. at fractional pixel index ``top + (i + 0.5) * h / size_h
    - 0.5``, bilinearly interpolated between the two nearest input pixel centres; likewise for columns.
    This is exactly
    ``torchvision.transforms.v2.functional.resized_crop(..., interpolation=BILINEAR, antialias=False)``
    followed by ``horizontal_flip`` when ``flip[b]``, except for this one deviation:

    * torchvision first cuts the crop out, so a sample position that falls outside the crop (only possible
      within half an output pixel of the border when the crop is *upscaled*, ``h < size_h``) is clamped to
      the crop's edge row/column.  Here it reads the true neighbouring pixels of the full image (clamped
      only at the image border, ``padding_mode="border"``), which is the better interpolation of the
      underlying image.  Downscaled crops agree everywhere, and upscaled ones along crop sides that lie
      on the image border.

    Aliasing: bilinear sampling reads only the 2x2 nearest input pixels, with no low-pass prefilter.
    When a crop is shrunk by a large factor (e.g. a 256 px crop to a 32 px view, factor 8) the result
    aliases, like ``antialias=False`` in torchvision (and unlike PIL / ``antialias=True``).  Accepted here for
    speed; upscaling and mild downscaling (the usual 224 px views from 256 px images) are unaffected.

    Args:
        images: ``[B, C, H, W]`` floating-point images.
        boxes: ``[B, 4]`` ``(top, left, h, w)`` in pixels (any device; need not be integer-valued).
        size: output side ``S`` (square) or ``(S_h, S_w)``.
        flip: optional ``[B]`` bool, ``True`` = mirror that sample's output left-right.

    Returns:
        ``[B, C, S_h, S_w]`` tensor with ``images``' dtype and device.
    """
    out_h, out_w = (size, size) if isinstance(size, int) else size
    b, c, in_h, in_w = images.shape
    boxes = boxes.to(device=images.device, dtype=images.dtype)
    top, left, h, w = boxes.unbind(dim=1)
    # affine_grid maps output pixel centre v = (2i + 1)/S - 1 in [-1, 1] to u = a*v + t; grid_sample reads
    # pixel ((u + 1) * H - 1) / 2.  a = h/H, t = (2*top + h)/H - 1 give top + (i + 0.5) * h/S - 0.5.
    sx = w / in_w
    if flip is not None:
        sx = torch.where(flip.to(images.device), -sx, sx)
    theta = torch.zeros(b, 2, 3, device=images.device, dtype=images.dtype)
    theta[:, 0, 0] = sx
    theta[:, 0, 2] = (2 * left + w) / in_w - 1
    theta[:, 1, 1] = h / in_h
    theta[:, 1, 2] = (2 * top + h) / in_h - 1
    grid = F.affine_grid(theta, [b, c, out_h, out_w], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


# ----------------------------------------------------------------------------------------------- colour


def _luma(x: Tensor) -> Tensor:
    """``[B, 3, H, W]`` -> ``[B, 1, H, W]`` ITU-R 601-2 luma with :data:`GRAY_WEIGHTS`."""
    r, g, b = x.unbind(dim=1)
    return (r * GRAY_WEIGHTS[0] + g * GRAY_WEIGHTS[1] + b * GRAY_WEIGHTS[2]).unsqueeze(1)


def _blend(x: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    """``clamp(factor * x + (1 - factor) * other, 0, 1)`` with ``factor`` ``[B]`` broadcast per sample."""
    f = _per_sample(factor, x)
    return (x * f + other * (1 - f)).clamp_(0.0, 1.0)


def rgb_to_grayscale(x: Tensor) -> Tensor:
    """Luma ``0.2989 R + 0.587 G + 0.114 B`` (ITU-R 601-2), replicated to 3 channels.

    Matches ``torchvision.transforms.v2.functional.rgb_to_grayscale(x, num_output_channels=3)``.

    Args:
        x: ``[B, 3, H, W]`` float in ``[0, 1]``.

    Returns:
        ``[B, 3, H, W]`` (a new contiguous tensor) with three equal channels.
    """
    return _luma(x).expand_as(x).contiguous()


def adjust_brightness(x: Tensor, factor: Tensor) -> Tensor:
    """``clamp(factor[b] * x[b], 0, 1)``: multiply by a per-sample factor ``[B]`` (``>= 0``).

    Matches ``torchvision.transforms.v2.functional.adjust_brightness``.  Returns ``[B, C, H, W]``.
    """
    return (x * _per_sample(factor, x)).clamp_(0.0, 1.0)


def adjust_contrast(x: Tensor, factor: Tensor) -> Tensor:
    """Blend each image with the mean of its luma: ``clamp(f x + (1 - f) mean(luma(x)), 0, 1)``.

    The mean is over all pixels of one image (one scalar per sample), as in
    ``torchvision.transforms.v2.functional.adjust_contrast``; ``factor`` is ``[B]`` (``>= 0``).  The mean
    of the luma is computed as the luma of the per-channel means (equal up to rounding, cheaper).

    Args:
        x: ``[B, 3, H, W]`` float in ``[0, 1]``.
        factor: ``[B]``; 0 gives a uniform grey image, 1 the original.

    Returns:
        ``[B, 3, H, W]``.
    """
    weights = torch.tensor(GRAY_WEIGHTS, device=x.device, dtype=x.dtype)
    mean = (x.mean(dim=(2, 3)) @ weights).reshape(-1, 1, 1, 1)
    return _blend(x, mean, factor)


def adjust_saturation(x: Tensor, factor: Tensor) -> Tensor:
    """Blend each pixel with its luma: ``clamp(f x + (1 - f) luma(x), 0, 1)``, ``factor`` ``[B]`` (``>= 0``).

    Matches ``torchvision.transforms.v2.functional.adjust_saturation``.  ``x``: ``[B, 3, H, W]``;
    returns ``[B, 3, H, W]``.
    """
    return _blend(x, _luma(x), factor)


def adjust_hue(x: Tensor, hue_factor: Tensor) -> Tensor:
    """Rotate the hue of each image by ``hue_factor[b]`` turns (in ``[-0.5, 0.5]``) in HSV space.

    Same result as ``torchvision.transforms.v2.functional.adjust_hue`` (RGB -> HSV, ``h <- (h + f) mod 1``,
    HSV -> RGB; for float ``x`` in ``[0, 1]`` its clamps change nothing) up to float32 rounding (~2e-6),
    computed without materialising HSV, about 2x faster than torchvision's kernel on CPU.  With
    ``M = max(r,g,b)``, ``m = min(r,g,b)``, ``d = M - m`` (so ``V = M``, ``S = d / M``), the hue in sixths
    of a turn is ``H6 = (g - b)/d`` if ``M = r``, ``2 + (b - r)/d`` if ``M = g``, else ``4 + (r - g)/d``
    (``0`` for grey pixels, ``d = 0``; ties resolved in the order r, g, b like torchvision, and either
    choice gives the same hue).  After the shift ``H6 <- (H6 + 6 f) mod 6``, the output is
    ``m + d * P(H6)`` with the fully saturated hue ``P = clamp((|H6 - 3| - 1, 2 - |H6 - 2|, 2 - |H6 - 4|),
    0, 1)`` -- the piecewise-linear HSV -> RGB map of Smith 1978 ("Color gamut transform pairs") written
    with absolute values.  Grey pixels are returned exactly.

    Args:
        x: ``[B, 3, H, W]`` float in ``[0, 1]``.
        hue_factor: ``[B]``.

    Returns:
        ``[B, 3, H, W]``.
    """
    r, g, b = x.unbind(dim=1)
    minc, maxc = torch.aminmax(x, dim=1)  # [B, H, W] each
    d = maxc - minc
    safe_d = torch.where(d > 0, d, 1.0)
    h6 = torch.where(
        maxc == r,
        (g - b) / safe_d,
        torch.where(maxc == g, (b - r) / safe_d + 2.0, (r - g) / safe_d + 4.0),
    )
    shift = hue_factor.to(device=x.device, dtype=x.dtype).reshape(-1, 1, 1) * 6.0
    h6 = torch.remainder(h6 + shift, 6.0).unsqueeze(1)  # [B, 1, H, W]
    consts = torch.tensor(
        [[3.0, 2.0, 4.0], [1.0, -1.0, -1.0], [-1.0, 2.0, 2.0]], device=x.device, dtype=x.dtype
    ).reshape(3, 1, 3, 1, 1)
    centre, slope, offset = consts.unbind(0)  # per channel R, G, B: [1, 3, 1, 1] each
    pure = torch.addcmul(offset, (h6 - centre).abs_(), slope).clamp_(0.0, 1.0)  # [B, 3, H, W]
    return torch.addcmul(minc.unsqueeze(1), d.unsqueeze(1), pure).clamp_(0.0, 1.0)


def solarize(x: Tensor, threshold: float = 0.5) -> Tensor:
    """Invert pixels at or above ``threshold``: ``where(x >= t, 1 - x, x)`` (Grill et al. 2020, BYOL).

    Matches ``torchvision.transforms.v2.functional.solarize`` for float images.  ``x``: ``[B, C, H, W]``
    in ``[0, 1]``; returns the same shape.
    """
    return torch.where(x >= threshold, 1.0 - x, x)


# ------------------------------------------------------------------------------------------------- blur


def gaussian_kernels1d(sigma: Tensor, kernel_size: int) -> Tensor:
    """Normalised 1-D Gaussian kernels ``[B, kernel_size]``: ``w_j ∝ exp(-j^2 / (2 sigma^2))``,
    ``j = -(k-1)/2 .. (k-1)/2`` (the kernel of ``torchvision.transforms.v2.functional.gaussian_blur``).

    ``sigma``: ``[B]``, positive; the kernels have ``sigma``'s device and dtype.
    """
    half = (kernel_size - 1) / 2
    j = torch.linspace(-half, half, kernel_size, device=sigma.device, dtype=sigma.dtype)
    return torch.softmax(-0.5 * (j / sigma.reshape(-1, 1)) ** 2, dim=1)


def gaussian_blur(x: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Separable Gaussian blur with a per-sample ``sigma`` and a shared odd ``kernel_size``.

    Equals ``torchvision.transforms.v2.functional.gaussian_blur(x[b], [k, k], [sigma[b], sigma[b]])``:
    the same kernel (see :func:`gaussian_kernels1d`), reflect padding by ``k // 2`` (the edge pixel is not
    repeated; requires ``k // 2 < min(H, W)``), isotropic ``sigma``.  Computed as a horizontal then a
    vertical 1-D pass, each a single depthwise (grouped) ``conv2d`` over the ``B * C`` planes with one
    kernel per sample, so the cost is ``O(k)`` rather than ``O(k^2)`` per pixel.  The output is a convex
    combination of input pixels, so it stays in ``[0, 1]``; it is clamped anyway against rounding.

    Args:
        x: ``[B, C, H, W]`` float.
        sigma: ``[B]`` positive standard deviations in pixels.
        kernel_size: odd positive kernel side ``k``.

    Returns:
        ``[B, C, H, W]``.
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
    b, c, height, width = x.shape
    pad = kernel_size // 2
    if pad >= min(height, width):
        raise ValueError(
            f"kernel_size {kernel_size} too large for reflect padding of a {height}x{width} image"
        )
    if pad == 0:
        return x.clone()
    kernels = gaussian_kernels1d(sigma.to(device=x.device, dtype=x.dtype), kernel_size)  # [B, k]
    kernels = kernels.repeat_interleave(c, dim=0)  # [B*C, k], plane-major like x.reshape(1, B*C, H, W)
    planes = x.reshape(1, b * c, height, width)
    planes = F.conv2d(
        F.pad(planes, (pad, pad, 0, 0), mode="reflect"), kernels[:, None, None, :], groups=b * c
    )
    planes = F.conv2d(
        F.pad(planes, (0, 0, pad, pad), mode="reflect"), kernels[:, None, :, None], groups=b * c
    )
    return planes.reshape(b, c, height, width).clamp_(0.0, 1.0)


# ------------------------------------------------------------------------------------------ batch subset


def apply_to_subset(
    op: Callable[..., Tensor], x: Tensor, mask: Tensor, *params: Tensor, gather: bool | None = None
) -> Tensor:
    """Apply ``op(x, *params)`` only to the samples where ``mask`` is true; the rest pass through unchanged.

    Two strategies, same result (every op of this module is per-sample, i.e. the result for one sample does
    not depend on the others, which is what makes running it on a subset valid):

    * ``gather=True``: run ``op`` on ``x[idx]`` (and ``p[idx]`` for each per-sample parameter),
      ``idx = mask.nonzero()``, and write the results back into a copy of ``x``.  ``op`` only does the work
      for the ``n = mask.sum()`` selected samples, at the price of one gather and one scatter copy.
      Finding ``idx`` needs the mask's values on the host: free for a CPU mask (also when ``x`` is on a
      GPU), a device synchronisation for a CUDA mask.
    * ``gather=False``: ``torch.where(mask[:, None, None, None], op(x, *params), x)``: never synchronises,
      but ``op`` runs on all ``B`` samples and the select is an extra pass over the batch.

    ``gather=None`` (default) gathers iff ``mask`` is on the CPU.  Why gathering on the CPU: medians with
    2 threads at ``B = 256``, ``3x32x32``, ``p = 0.5`` (ms; "full" = ``op`` on the whole batch; this
    machine's timings are noisy, so ranges over runs): Gaussian blur k=13 full 5.5, gather 1.1, where
    1.3-5; hue full 3.3, gather 1.9-2.2, where 3.9-5; solarize full 1.5, gather 0.9, where 1.7; the
    cheap ops (brightness, contrast, saturation, grayscale: 0.06-0.2 ms full) cost 0.05-0.1 ms more
    gathered than full and ~0.2 ms more with ``where``.  Gathering beats ``where`` everywhere.  On a GPU these
    ops are memory-bound and tiny, so avoiding the synchronisation matters more than the saved arithmetic.
    (A varying subset size also means a new shape per call; oneDNN caches one convolution primitive per
    shape, so the blur's first call at each new size is slower, amortised after a few hundred steps.)

    Args:
        op: ``op(x_sub, *params_sub) -> Tensor`` of the same shape as ``x_sub``.
        x: ``[B, C, H, W]``.
        mask: ``[B]`` bool (any device).
        params: per-sample parameters, each with leading dimension ``B`` (any device).
        gather: pick the strategy, see above.

    Returns:
        ``[B, C, H, W]``; ``x`` itself (not a copy) if no sample is selected in gather mode.
    """
    if gather is None:
        gather = mask.device.type == "cpu"
    if not gather:
        return torch.where(mask.to(x.device).reshape(-1, 1, 1, 1), op(x, *params), x)
    idx = mask.nonzero().squeeze(1)
    n = idx.numel()
    if n == 0:
        return x
    if n == x.shape[0]:
        return op(x, *params)
    sub = [p.index_select(0, idx.to(p.device)) for p in params]
    idx = idx.to(x.device)
    out = x.clone()
    out.index_copy_(0, idx, op(x.index_select(0, idx), *sub))
    return out
