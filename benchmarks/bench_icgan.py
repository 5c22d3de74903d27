"""Throughput of the IC-GAN variant generator (:mod:`pretrain.generative.icgan`) on the CPU.

pytest-benchmark functions; skipped by the default ``--benchmark-skip``.  Run with::

    .venv/bin/pytest benchmarks/bench_icgan.py --benchmark-enable -q

Random weights throughout (the released checkpoints are not downloadable here); every benchmark records
``images_per_s`` (generated variants / median time) in ``extra_info``, with torch's default thread count:

* ``tiny256_generate``: the whole ``generate`` call (SwAV ResNet-50 features of 2 sources, 4 variants each,
  the tiny 256-px fixture generator with ``G_ch = 4``, resize to 224, PIL) -- the pipeline's fixed costs;
* ``full256_G``: the released architecture (``G_ch = 96``, 90 M parameters) on one batch of 2 noise vectors,
  generator forward only -- what dominates a real ImageNet generation run on CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from pretrain.generative.base import GeneratorSettings, SourceImage
from pretrain.generative.icgan.biggan import ICGANGenerator, config_from_state_dict
from pretrain.generative.icgan.features import swav_resnet50
from pretrain.generative.icgan.generator import ICGANVariantGenerator

FIXTURE = Path(__file__).parents[1] / "tests/pretrain/generative/fixtures/icgan_tiny256_G_ema.safetensors"


def _record(benchmark: Any, images: int) -> None:
    benchmark.extra_info["threads"] = torch.get_num_threads()
    if benchmark.stats is not None:  # None when run with --benchmark-disable
        benchmark.extra_info["images_per_s"] = round(images / benchmark.stats.stats.median, 3)


def test_icgan_tiny256_generate(benchmark: Any) -> None:
    """2 sources x 4 variants through the full pipeline, tiny 256-px generator, output 224 px."""
    sd = load_file(str(FIXTURE))
    net = ICGANGenerator(config_from_state_dict(sd))
    net.load_state_dict(sd)
    settings = GeneratorSettings(per_image=4, size=224, batch_size=8, device="cpu")
    gen = ICGANVariantGenerator(net, swav_resnet50(), settings)
    rng = np.random.default_rng(0)
    sources = [
        SourceImage(
            i, f"train/{i}.JPEG", 0, Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))
        )
        for i in range(2)
    ]
    seeds = [[4 * i + k for k in range(4)] for i in range(2)]
    out = benchmark.pedantic(lambda: gen.generate(sources, seeds), rounds=3, iterations=1, warmup_rounds=1)
    assert [len(row) for row in out] == [4, 4] and out[0][0].size == (224, 224)
    _record(benchmark, 8)


def test_icgan_full256_G(benchmark: Any) -> None:
    """The released 256-px architecture (random weights): one forward of a batch of 2."""
    net = ICGANGenerator().eval()
    z = torch.randn(2, net.cfg.dim_z).clamp(-1.4, 1.4)
    feats = torch.nn.functional.normalize(torch.randn(2, net.cfg.feat_dim), dim=-1)

    def forward() -> torch.Tensor:
        with torch.inference_mode():
            return net(z, feats)

    out = benchmark.pedantic(forward, rounds=2, iterations=1, warmup_rounds=0)
    assert out.shape == (2, 3, 256, 256)
    _record(benchmark, 2)


def test_swav_features_b8(benchmark: Any) -> None:
    """SwAV ResNet-50 instance features of 8 images at 224 px (random weights)."""
    net = swav_resnet50().eval()
    x = torch.randn(8, 3, 224, 224)

    def forward() -> torch.Tensor:
        with torch.inference_mode():
            return net(x)

    out = benchmark.pedantic(forward, rounds=3, iterations=1, warmup_rounds=1)
    assert out.shape == (8, 2048)
    _record(benchmark, 8)
