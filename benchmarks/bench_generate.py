"""Throughput of the diffusion variant generators (``sd-unclip``, ``sd-variations``) on tiny random pipelines.

pytest-benchmark functions; run with::

    .venv/bin/pytest benchmarks/bench_generate.py --benchmark-enable -q

Each benchmark builds the tiny random pipeline of tests/pretrain/generative/tiny_pipelines.py with a
32 x 32 latent (native 64 px), loads it through the registry entry exactly as ``bench generate`` does and
times one ``generate`` call: 4 source images x 2 variants, 10 DDIM steps, guidance 3 (so a UNet batch of
16), output 64 px.  ``extra_info["images_per_s"]`` is variants per second (8 / median time).  The tiny
models measure the per-call overhead of the pipelines and of the generator (CLIP preprocessing, seeding,
PIL conversion), not the speed of the real models, which need a GPU.  Uses torch's default intra-op
thread count (set ``OMP_NUM_THREADS``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from pretrain.generative.base import GeneratorSettings, SourceImage
from pretrain.generative.registry import GENERATORS

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests.* helpers
from tests.pretrain.generative.tiny_pipelines import build_tiny_unclip, build_tiny_variations

SOURCES, VARIANTS, STEPS, SIZE = 4, 2, 10, 64


@dataclass(frozen=True)
class _Folders:
    unclip: Path
    variations: Path


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> _Folders:
    pytest.importorskip("diffusers")
    root = tmp_path_factory.mktemp("bench-generate")
    return _Folders(
        unclip=build_tiny_unclip(root / "sd-unclip", latent_size=SIZE // 2),
        variations=build_tiny_variations(root / "sd-variations", latent_size=SIZE // 2),
    )


def _run(benchmark: Any, name: str, folder: Path) -> None:
    settings = GeneratorSettings(steps=STEPS, size=SIZE, batch_size=SOURCES, guidance_scale=3.0, device="cpu")
    gen = GENERATORS.get(name).build(folder, settings)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (SOURCES, 96, 128, 3), dtype=np.uint8)
    sources = [SourceImage(i, f"train/{i}.png", 0, Image.fromarray(pixels[i])) for i in range(SOURCES)]
    seeds = [[100 * i + k for k in range(VARIANTS)] for i in range(SOURCES)]

    def generate() -> list[list[Image.Image]]:
        return gen.generate(sources, seeds)

    generate()  # warm up allocator and oneDNN primitive caches
    out = benchmark.pedantic(generate, rounds=3, iterations=1, warmup_rounds=0)
    assert [len(v) for v in out] == [VARIANTS] * SOURCES and out[0][0].size == (SIZE, SIZE)
    benchmark.extra_info["threads"] = torch.get_num_threads()
    benchmark.extra_info["generation_size"] = gen.describe()["generation_size"]
    if benchmark.stats is not None:  # None when run with --benchmark-disable
        benchmark.extra_info["images_per_s"] = round(SOURCES * VARIANTS / benchmark.stats.stats.median, 1)


def test_sd_unclip_tiny(benchmark: Any, folders: _Folders) -> None:
    """Tiny StableUnCLIPImg2ImgPipeline: 4 sources x 2 variants, 10 steps, 64 px."""
    _run(benchmark, "sd-unclip", folders.unclip)


def test_sd_variations_tiny(benchmark: Any, folders: _Folders) -> None:
    """Tiny StableDiffusionImageVariationPipeline: 4 sources x 2 variants, 10 steps, 64 px."""
    _run(benchmark, "sd-variations", folders.variations)
