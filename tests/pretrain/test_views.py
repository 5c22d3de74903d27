"""The batched SSL view pipeline (:mod:`pretrain.augment.views`).

The main check runs the pipeline with sampled parameters and compares it with torchvision's functional
kernels applied sample by sample, in the documented order, with the same parameters (atol 1e-4: up to six
float32 ops compound the per-op rounding of ``test_augment_ops``; crops are downscaled so the crop
reference is exact).  The rest checks the randomness: per-sample independence, probabilities 0 / 1,
determinism under equal seeds and the uint8 input path.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor

from pretrain.augment import ops
from pretrain.augment.views import ViewParams, ViewPipeline, blur_kernel_size
from pretrain.config import ViewConfig

PIPE_ATOL = 1e-4
ALL_HALF = ViewConfig(
    size=16, crop_scale=(0.3, 1.0), jitter_p=0.5, grayscale_p=0.5, blur_p=0.5, solarize_p=0.5
)
NOTHING = ViewConfig(size=16, flip_p=0.0, jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, solarize_p=0.0)


def _uint8(b: int = 32, h: int = 40, w: int = 36, seed: int = 0) -> Tensor:
    return torch.randint(
        0, 256, (b, 3, h, w), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8
    )


def _reference(pipe: ViewPipeline, x: Tensor, p: ViewParams) -> Tensor:
    """torchvision.transforms.v2.functional, one sample at a time, in the pipeline's order."""
    cfg, out = pipe.cfg, []
    for i in range(x.shape[0]):
        top, left, h, w = (int(v) for v in p.boxes[i].tolist())
        im = TF.resized_crop(x[i], top, left, h, w, [cfg.size, cfg.size], antialias=False)
        if p.flip[i]:
            im = TF.horizontal_flip(im)
        if p.jitter[i]:
            im = TF.adjust_brightness(im, float(p.brightness[i]))
            im = TF.adjust_contrast(im, float(p.contrast[i]))
            im = TF.adjust_saturation(im, float(p.saturation[i]))
            im = TF.adjust_hue(im, float(p.hue[i]))
        if p.grayscale[i]:
            im = TF.rgb_to_grayscale(im, num_output_channels=3)
        if p.blur[i]:
            k = pipe.kernel_size
            im = TF.gaussian_blur(im, [k, k], [float(p.sigma[i])] * 2)
        if p.solarize[i]:
            im = TF.solarize(im, 0.5)
        out.append(im)
    return torch.stack(out)


def test_pipeline_matches_torchvision_per_sample() -> None:
    pipe = ViewPipeline(ALL_HALF)
    x = _uint8(b=48).float() / 255
    params = pipe.sample_params(48, 40, 36, torch.Generator().manual_seed(1))
    assert (params.boxes[:, 2:] >= 16).all(), "downscaling only, where the crop reference is exact"
    for mask in (params.flip, params.jitter, params.grayscale, params.blur, params.solarize):
        assert 0 < int(mask.sum()) < 48, "both branches of every op are exercised"
    out = pipe.apply(x, params)
    assert out.shape == (48, 3, 16, 16) and out.dtype == torch.float32
    torch.testing.assert_close(out, _reference(pipe, x, params), atol=PIPE_ATOL, rtol=0)


def test_parameters_are_per_sample_and_in_range() -> None:
    cfg = ViewConfig(size=32, brightness=0.8, contrast=0.4, saturation=1.5, hue=0.2, blur_sigma=(0.5, 1.5))
    p = ViewPipeline(cfg).sample_params(1000, 64, 64, torch.Generator().manual_seed(2))
    assert torch.unique(p.boxes, dim=0).shape[0] > 900
    for name, lo, hi in [
        ("brightness", 0.2, 1.8),
        ("contrast", 0.6, 1.4),
        ("saturation", 0.0, 2.5),
        ("hue", -0.2, 0.2),
        ("sigma", 0.5, 1.5),
    ]:
        v = getattr(p, name)
        assert v.shape == (1000,) and torch.unique(v).numel() > 990, name
        assert v.min() >= lo and v.max() <= hi, name
        assert v.min() < lo + 0.05 * (hi - lo) and v.max() > hi - 0.05 * (hi - lo), f"{name} spans its range"
    # Bernoulli rates: within ~5 standard errors of p at n = 1000
    for name, prob in [("flip", 0.5), ("jitter", 0.8), ("grayscale", 0.2), ("blur", 0.5), ("solarize", 0.0)]:
        assert abs(getattr(p, name).float().mean().item() - prob) < 0.08, name


def test_probability_zero_never_applies() -> None:
    pipe = ViewPipeline(NOTHING)
    x = _uint8()
    params = pipe.sample_params(32, 40, 36, torch.Generator().manual_seed(3))
    for mask in (params.flip, params.jitter, params.grayscale, params.blur, params.solarize):
        assert not mask.any()
    expected = ops.resized_crop(x.float() / 255, params.boxes, 16)
    assert torch.equal(pipe.apply(x, params), expected)


@pytest.mark.parametrize("op", ["flip", "jitter", "grayscale", "blur", "solarize"])
def test_probability_one_always_applies(op: str) -> None:
    cfg = ViewConfig(**{**dataclasses.asdict(NOTHING), f"{op}_p": 1.0})
    pipe = ViewPipeline(cfg)
    x = _uint8()
    params = pipe.sample_params(32, 40, 36, torch.Generator().manual_seed(4))
    assert getattr(params, op).all()
    out = pipe.apply(x, params)
    torch.testing.assert_close(out, _reference(pipe, x.float() / 255, params), atol=PIPE_ATOL, rtol=0)
    assert not torch.allclose(out, ops.resized_crop(x.float() / 255, params.boxes, 16), atol=1e-3)
    if op == "grayscale":
        assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 0], out[:, 2])


def test_determinism_and_seed_dependence() -> None:
    pipe = ViewPipeline(ALL_HALF)
    x = _uint8()
    a = pipe(x, torch.Generator().manual_seed(5))
    b = pipe(x, torch.Generator().manual_seed(5))
    c = pipe(x, torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c, atol=1e-2)
    g = torch.Generator().manual_seed(5)
    v1, v2 = pipe(x, g), pipe(x, g)
    assert torch.equal(v1, a) and not torch.allclose(v1, v2, atol=1e-2), "successive views are independent"


def test_uint8_and_float_inputs_agree_and_output_range() -> None:
    pipe = ViewPipeline(ViewConfig(size=24, solarize_p=0.3, blur_sigma=(0.1, 1.0)))
    x = _uint8()
    out = pipe(x, torch.Generator().manual_seed(7))
    assert out.shape == (32, 3, 24, 24) and out.dtype == torch.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert torch.equal(out, pipe(x.float() / 255, torch.Generator().manual_seed(7)))
    assert pipe(x.double() / 255, torch.Generator().manual_seed(7)).dtype == torch.float64


def test_invalid_inputs() -> None:
    pipe = ViewPipeline(NOTHING)
    g = torch.Generator()
    with pytest.raises(ValueError, match="shape"):
        pipe(torch.rand(2, 1, 8, 8), g)
    with pytest.raises(TypeError, match="uint8 or floating"):
        pipe(torch.zeros(2, 3, 8, 8, dtype=torch.int32), g)


def test_blur_kernel_size() -> None:
    assert blur_kernel_size(2.0, 224) == 13
    assert blur_kernel_size(0.5, 224) == 5
    assert blur_kernel_size(2.0, 12) == 11
    assert blur_kernel_size(2.0, 11) == 11
    assert blur_kernel_size(2.0, 2) == 1
    assert ViewPipeline(ViewConfig(size=32)).kernel_size == 13


def test_params_to_device() -> None:
    p = ViewPipeline(NOTHING).sample_params(4, 8, 8, torch.Generator())
    q = p.to("cpu")
    assert all(torch.equal(getattr(p, f.name), getattr(q, f.name)) for f in dataclasses.fields(p))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_generator_and_images() -> None:
    pipe = ViewPipeline(ALL_HALF)
    x = _uint8().cuda()
    for gen_device in ("cuda", "cpu"):
        g = torch.Generator(device=gen_device).manual_seed(0)
        params = pipe.sample_params(32, 40, 36, g)
        out = pipe.apply(x, params)
        assert out.device.type == "cuda"
        ref = pipe.apply(x.cpu(), params.to("cpu"))
        torch.testing.assert_close(out.cpu(), ref, atol=PIPE_ATOL, rtol=0)
