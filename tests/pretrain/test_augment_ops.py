"""Batched ops of :mod:`pretrain.augment.ops` against ``torchvision.transforms.v2.functional`` per sample.

Every reference is the torchvision kernel applied to one sample at a time with that sample's parameter.
Tolerances: the colour ops, grayscale and blur agree to float32 rounding (atol 1e-5; they compute the same
arithmetic in a different association order); hue uses a different but algebraically equal HSV formula
(atol 2e-5, observed ~2e-6); solarize is exact; resized crops agree to 2e-5 where torchvision's crop-then-
resize and our full-image sampling read the same pixels (see ``test_resized_crop_*``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as TF
from torch import Tensor

from pretrain.augment import ops

COLOUR_ATOL = 1e-5
HUE_ATOL = 2e-5
CROP_ATOL = 2e-5


def _images(b: int = 12, h: int = 19, w: int = 23, seed: int = 0) -> Tensor:
    """Random images with the edge cases the colour ops branch on: grey pixels (r = g = b), ties between
    two max channels, pure 0 / 1 values, and fully saturated colours."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 3, h, w, generator=g)
    x[:, :, 0, :5] = x[:, :1, 0, :5]  # grey
    x[:, 1, 1, :5] = x[:, 0, 1, :5]  # r == g
    x[:, 2, 2, :5] = x[:, 1, 2, :5]  # g == b
    x[:, :, 3, :3] = 0.0
    x[:, :, 3, 3:6] = 1.0
    x[:, :, 4, :3] = torch.tensor([1.0, 0.0, 0.0])[:, None]
    x[:, :, 4, 3:6] = torch.tensor([0.0, 1.0, 1.0])[:, None]
    return x


def _per_sample_ref(x: Tensor, fn: Callable[[Tensor, int], Tensor]) -> Tensor:
    return torch.stack([fn(x[i], i) for i in range(x.shape[0])])


# ----------------------------------------------------------------------------------------------- colour


@pytest.mark.parametrize(
    ("op", "ref"),
    [
        (ops.adjust_brightness, TF.adjust_brightness),
        (ops.adjust_contrast, TF.adjust_contrast),
        (ops.adjust_saturation, TF.adjust_saturation),
    ],
    ids=["brightness", "contrast", "saturation"],
)
def test_blend_ops_match_torchvision(
    op: Callable[[Tensor, Tensor], Tensor], ref: Callable[..., Tensor]
) -> None:
    x = _images()
    # includes 0 (fully grey / black), 1 (identity) and factors large enough to clamp
    factor = torch.tensor([0.0, 1.0, 2.5, 0.6, 1.4, 0.3, 1.9, 0.95, 1.05, 0.0, 3.0, 0.5])
    expected = _per_sample_ref(x, lambda im, i: ref(im, float(factor[i])))
    out = op(x, factor)
    assert out.shape == x.shape
    torch.testing.assert_close(out, expected, atol=COLOUR_ATOL, rtol=0)
    assert out.min() >= 0 and out.max() <= 1


def test_factor_one_is_identity() -> None:
    x = _images()
    one = torch.ones(x.shape[0])
    for op in (ops.adjust_brightness, ops.adjust_contrast, ops.adjust_saturation):
        assert torch.equal(op(x, one), x)
    torch.testing.assert_close(ops.adjust_hue(x, torch.zeros(x.shape[0])), x, atol=HUE_ATOL, rtol=0)


def test_adjust_hue_matches_torchvision() -> None:
    x = _images()
    hue = torch.tensor([-0.5, 0.5, 0.0, 0.1, -0.1, 0.25, -0.33, 0.49, 0.01, -0.01, 1 / 6, -1 / 3])
    expected = _per_sample_ref(x, lambda im, i: TF.adjust_hue(im, float(hue[i])))
    out = ops.adjust_hue(x, hue)
    torch.testing.assert_close(out, expected, atol=HUE_ATOL, rtol=0)
    assert out.min() >= 0 and out.max() <= 1
    # grey pixels have no hue and are returned exactly
    assert torch.equal(out[:, :, 0, :5], x[:, :, 0, :5])


def test_rgb_to_grayscale_matches_torchvision() -> None:
    x = _images()
    out = ops.rgb_to_grayscale(x)
    expected = _per_sample_ref(x, lambda im, _: TF.rgb_to_grayscale(im, num_output_channels=3))
    torch.testing.assert_close(out, expected, atol=COLOUR_ATOL, rtol=0)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    assert out.is_contiguous()


def test_solarize_matches_torchvision() -> None:
    x = _images()
    x[:, :, 5, :3] = 0.5  # exactly at the threshold: inverted (x >= t)
    out = ops.solarize(x, 0.5)
    assert torch.equal(out, _per_sample_ref(x, lambda im, _: TF.solarize(im, 0.5)))
    assert torch.equal(out[:, :, 5, :3], torch.full_like(out[:, :, 5, :3], 0.5))


@pytest.mark.parametrize(("kernel_size", "height", "width"), [(3, 19, 23), (9, 19, 23), (13, 7, 16)])
def test_gaussian_blur_matches_torchvision(kernel_size: int, height: int, width: int) -> None:
    # (13, 7, 16): padding 6 is the largest reflect padding a 7-row image allows
    x = _images(h=height, w=width)
    sigma = torch.linspace(0.1, 3.0, x.shape[0])
    out = ops.gaussian_blur(x, sigma, kernel_size)
    expected = _per_sample_ref(
        x, lambda im, i: TF.gaussian_blur(im, [kernel_size, kernel_size], [float(sigma[i])] * 2)
    )
    torch.testing.assert_close(out, expected, atol=COLOUR_ATOL, rtol=0)


def test_gaussian_kernels_are_normalised_and_symmetric() -> None:
    k = ops.gaussian_kernels1d(torch.tensor([0.1, 1.0, 5.0]), 7)
    torch.testing.assert_close(k.sum(dim=1), torch.ones(3))
    torch.testing.assert_close(k, k.flip(dims=[1]))
    assert k[0, 3] > 0.999  # tiny sigma ~ identity


def test_gaussian_blur_rejects_bad_kernel_sizes() -> None:
    x = torch.rand(2, 3, 8, 8)
    for k in (0, 4):
        with pytest.raises(ValueError, match="odd"):
            ops.gaussian_blur(x, torch.ones(2), k)
    with pytest.raises(ValueError, match="too large"):
        ops.gaussian_blur(x, torch.ones(2), 17)


# ------------------------------------------------------------------------------------------- crop boxes


def _check_boxes(boxes: Tensor, height: int, width: int) -> None:
    top, left, h, w = boxes.unbind(1)
    assert boxes.shape[1] == 4 and boxes.dtype == torch.float32
    assert torch.equal(boxes, boxes.round()), "boxes are integer-valued"
    assert (h >= 1).all() and (w >= 1).all()
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= height).all() and (left + w <= width).all()


def test_crop_boxes_respect_scale_and_ratio() -> None:
    height, width, scale, ratio = 48, 64, (0.2, 0.9), (0.5, 1.5)
    g = torch.Generator().manual_seed(1)
    boxes = ops.sample_crop_boxes(g, 4000, height, width, scale, ratio)
    _check_boxes(boxes, height, width)
    _, _, h, w = boxes.unbind(1)
    # w = round(sqrt(A r)), h = round(sqrt(A / r)) for some A in scale*H*W and r in ratio, hence exactly:
    area = height * width
    assert ((w - 0.5) * (h - 0.5) <= scale[1] * area).all()
    assert ((w + 0.5) * (h + 0.5) >= scale[0] * area).all()
    assert ((w - 0.5) / (h + 0.5) <= ratio[1]).all()
    assert ((w + 0.5) / (h - 0.5) >= ratio[0]).all()
    # independent per sample: nearly all boxes differ
    assert torch.unique(boxes, dim=0).shape[0] > 3000


def test_crop_box_positions_cover_the_image() -> None:
    g = torch.Generator().manual_seed(2)
    boxes = ops.sample_crop_boxes(g, 4000, 32, 32, (0.1, 0.1), (1.0, 1.0))  # always 10x10 crops
    assert (boxes[:, 2:] == 10).all()
    for col in (0, 1):
        counts = torch.bincount(boxes[:, col].long(), minlength=23)
        assert counts.shape[0] == 23 and (counts > 100).all(), "every valid offset 0..22 occurs, ~uniformly"


def test_crop_box_fallback_is_torchvision_central_crop() -> None:
    # ratio 2 at full area never fits a square image, so every sample falls back to the central crop
    g = torch.Generator().manual_seed(0)
    boxes = ops.sample_crop_boxes(g, 8, 30, 30, (1.0, 1.0), (2.0, 2.0))
    tv = T.RandomResizedCrop(8, scale=(1.0, 1.0), ratio=(2.0, 2.0)).make_params([torch.zeros(3, 30, 30)])
    expected = torch.tensor([tv["top"], tv["left"], tv["height"], tv["width"]], dtype=torch.float32)
    assert torch.equal(boxes, expected.expand(8, 4))


def test_crop_box_distribution_matches_torchvision() -> None:
    # a setting where ~30% of samples use the fallback, so the attempt logic matters
    height, width, scale, ratio, n = 20, 40, (0.3, 1.0), (0.4, 1.2), 3000
    boxes = ops.sample_crop_boxes(torch.Generator().manual_seed(3), n, height, width, scale, ratio)
    torch.manual_seed(3)
    tf = T.RandomResizedCrop(8, scale=scale, ratio=ratio)
    tv = [tf.make_params([torch.zeros(3, height, width)]) for _ in range(n)]
    ref = torch.tensor([[p["top"], p["left"], p["height"], p["width"]] for p in tv], dtype=torch.float32)

    def stats(b: Tensor) -> Tensor:
        fallback = (b[:, 2] == height) & (b[:, 3] == round(height * ratio[1]))
        frac = b[:, 2] * b[:, 3] / (height * width)
        return torch.stack([fallback.float().mean(), frac.mean(), torch.log(b[:, 3] / b[:, 2]).mean()])

    ours, theirs = stats(boxes), stats(ref)
    assert 0.2 < theirs[0] < 0.45
    torch.testing.assert_close(ours, theirs, atol=0.04, rtol=0)  # ~4 standard errors at n = 3000


# ------------------------------------------------------------------------------------------ resized crop


def _tv_crop(x: Tensor, boxes: Tensor, size: int, flip: Tensor) -> Tensor:
    def one(im: Tensor, i: int) -> Tensor:
        top, left, h, w = (int(v) for v in boxes[i].tolist())
        out = TF.resized_crop(im, top, left, h, w, [size, size], antialias=False)
        return TF.horizontal_flip(out) if flip[i] else out

    return _per_sample_ref(x, one)


def test_resized_crop_matches_torchvision_when_downscaling() -> None:
    # All crops are at least as large as the output, so every sampling position lies inside the crop and
    # torchvision's crop-then-resize reads exactly the same pixels: exact agreement up to rounding.
    x = _images(b=16, h=40, w=48)
    g = torch.Generator().manual_seed(4)
    boxes = ops.sample_crop_boxes(g, 16, 40, 48, (0.4, 1.0), (3 / 4, 4 / 3))
    assert (boxes[:, 2:] >= 16).all()
    flip = torch.arange(16) % 2 == 0
    out = ops.resized_crop(x, boxes, 16, flip)
    assert out.shape == (16, 3, 16, 16)
    torch.testing.assert_close(out, _tv_crop(x, boxes, 16, flip), atol=CROP_ATOL, rtol=0)


def test_resized_crop_upscaling_matches_torchvision_inside_the_crop() -> None:
    # Upscaled crops: output pixels whose sampling position (pixel-centre convention) falls outside the
    # crop differ by design (torchvision clamps to the crop edge, we read the image's true neighbours);
    # all others must agree.  Rows/columns are separable, so the mask is an outer product.
    size, height, width = 24, 20, 22
    x = _images(b=16, h=height, w=width)
    boxes = ops.sample_crop_boxes(
        torch.Generator().manual_seed(5), 16, height, width, (0.05, 0.5), (0.5, 2.0)
    )
    flip = torch.zeros(16, dtype=torch.bool)
    out, ref = ops.resized_crop(x, boxes, size, flip), _tv_crop(x, boxes, size, flip)
    centres = torch.arange(size) + 0.5
    top, left, h, w = (v[:, None] for v in boxes.unbind(1))
    src_y = top + centres * h / size - 0.5
    src_x = left + centres * w / size - 0.5
    inside_y = (src_y >= top) & (src_y <= top + h - 1)
    inside_x = (src_x >= left) & (src_x <= left + w - 1)
    inside = (inside_y[:, :, None] & inside_x[:, None, :])[:, None].expand_as(out)
    assert inside.float().mean() > 0.7
    torch.testing.assert_close(out[inside], ref[inside], atol=CROP_ATOL, rtol=0)
    # at the image border both clamp to the edge pixel: the whole image, upscaled, agrees everywhere
    whole = torch.tensor([[0.0, 0.0, height, width]]).expand(2, 4)
    torch.testing.assert_close(
        ops.resized_crop(x[:2], whole, size), _tv_crop(x[:2], whole, size, flip[:2]), atol=CROP_ATOL, rtol=0
    )


def test_resized_crop_identity_and_flip() -> None:
    x = _images(b=4, h=16, w=16)
    whole = torch.tensor([[0.0, 0.0, 16.0, 16.0]]).expand(4, 4)
    torch.testing.assert_close(ops.resized_crop(x, whole, 16), x, atol=CROP_ATOL, rtol=0)
    flip = torch.tensor([True, False, True, False])
    out = ops.resized_crop(x, whole, 16, flip)
    torch.testing.assert_close(out[flip], x[flip].flip(dims=[3]), atol=CROP_ATOL, rtol=0)
    torch.testing.assert_close(out[~flip], x[~flip], atol=CROP_ATOL, rtol=0)


def test_resized_crop_rectangular_size() -> None:
    x = _images(b=3, h=30, w=30)
    boxes = torch.tensor([[0.0, 0.0, 30.0, 30.0], [5.0, 3.0, 20.0, 25.0], [10.0, 10.0, 12.0, 12.0]])
    out = ops.resized_crop(x, boxes, (10, 12))
    ref = torch.stack(
        [
            TF.resized_crop(x[i], *(int(v) for v in boxes[i].tolist()), [10, 12], antialias=False)
            for i in range(3)
        ]
    )
    torch.testing.assert_close(out, ref, atol=CROP_ATOL, rtol=0)


# --------------------------------------------------------------------------------------------- subsets


@pytest.mark.parametrize("gather", [True, False, None])
def test_apply_to_subset(gather: bool | None) -> None:
    x = _images(b=8)
    factor = torch.linspace(0.2, 1.8, 8)
    mask = torch.tensor([True, False, False, True, True, False, True, False])
    out = ops.apply_to_subset(ops.adjust_brightness, x, mask, factor, gather=gather)
    full = ops.adjust_brightness(x, factor)
    assert torch.equal(out[mask], full[mask]), "selected samples get their own parameters"
    assert torch.equal(out[~mask], x[~mask])
    none = ops.apply_to_subset(ops.solarize, x, torch.zeros(8, dtype=torch.bool), gather=gather)
    assert torch.equal(none, x)
    every = ops.apply_to_subset(ops.solarize, x, torch.ones(8, dtype=torch.bool), gather=gather)
    assert torch.equal(every, ops.solarize(x))
    assert math.isclose(float(x.sum()), float(_images(b=8).sum())), "input untouched"
