"""Throughput of the batched SSL view pipeline (:class:`pretrain.augment.views.ViewPipeline`).

pytest-benchmark functions; skipped by the default ``--benchmark-skip``.  Run with::

    .venv/bin/pytest benchmarks/bench_views.py --benchmark-enable -q

Each benchmark produces one view of a uint8 batch on the CPU with the MoCo v2 view settings (the
``ViewConfig`` defaults: jitter 0.8, grayscale 0.2, blur 0.5 with sigma in (0.1, 2.0), so a 13-tap
kernel) at the given output size, and records ``images_per_s`` (batch size / median time) in
``extra_info``.  Uses torch's default intra-op thread count.
"""

from __future__ import annotations

from typing import Any

import torch

from pretrain.augment.views import ViewPipeline
from pretrain.config import ViewConfig


def _run(benchmark: Any, batch: int, side: int, size: int, rounds: int | None = None) -> None:
    pipe = ViewPipeline(ViewConfig(size=size))
    images = torch.randint(0, 256, (batch, 3, side, side), dtype=torch.uint8)
    generator = torch.Generator().manual_seed(0)

    def view() -> torch.Tensor:
        return pipe(images, generator)

    for _ in range(3):  # warm up allocator and oneDNN primitive caches
        view()
    if rounds is None:
        out = benchmark(view)
    else:
        out = benchmark.pedantic(view, rounds=rounds, iterations=1, warmup_rounds=1)
    assert out.shape == (batch, 3, size, size)
    benchmark.extra_info["threads"] = torch.get_num_threads()
    if benchmark.stats is not None:  # None when run with --benchmark-disable
        benchmark.extra_info["images_per_s"] = round(batch / benchmark.stats.stats.median, 1)


def test_view_pipeline_b256_32px(benchmark: Any) -> None:
    """Smoke-profile size: B = 256 uint8 3x32x32 -> 3x32x32 views (target >= 2000 images/s on 2 threads)."""
    _run(benchmark, batch=256, side=32, size=32)


def test_view_pipeline_b64_224px(benchmark: Any) -> None:
    """ImageNet size: B = 64 uint8 3x224x224 -> 3x224x224 views."""
    _run(benchmark, batch=64, side=224, size=224, rounds=5)
