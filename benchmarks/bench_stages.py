"""Cost of the batch-level masking / mixing stages (:mod:`pretrain.augment.stages`) at the smoke size.

Setting: B = 256 uint8 sources of 40 px -> the smoke MoCo v2 views (two 32 px views, ``moco`` recipe,
``smoke`` profile), CPU, torch's default intra-op thread count.  Measured per batch:

* ``views``: the two view pipelines alone (:class:`~pretrain.augment.policy.AugmentPolicy` without
  stages);
* each stage alone on ready views, with its config defaults: ``erasing`` (p 0.5, both views, random
  fill), ``cutout`` (p 0.5, both views, size 0.5), ``mixup`` and ``cutmix`` (p 1, view 0, alpha 1).

The issue's target is that each stage adds under 5 % to a full training step; the stage's median time is
reported relative to the views alone and to a typical smoke training step (``--step-ms``, default 200 ms,
see ``benchmarks/bench_train.py`` for measuring one).  Timings on a shared machine are noisy: medians of
interleaved repeats.

Run as a script: ``python benchmarks/bench_stages.py [--repeats 50] [--step-ms 200] [--threads N]``
(``--threads 1`` gives steadier numbers when other jobs share the cores), or with
pytest-benchmark: ``pytest benchmarks/bench_stages.py --benchmark-enable -o addopts=""``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor

from pretrain.augment.config import CutmixConfig, CutoutConfig, ErasingConfig, MixupConfig, StageConfig
from pretrain.augment.policy import AugmentPolicy
from pretrain.augment.stages import MixingStage, build_stage
from pretrain.config import AugmentConfig
from pretrain.recipes import resolve_recipe

BATCH, SOURCE = 256, 40
STEP_MS = 200.0
STAGES: dict[str, StageConfig] = {
    "erasing": ErasingConfig(),
    "cutout": CutoutConfig(),
    "mixup": MixupConfig(),
    "cutmix": CutmixConfig(),
}


def _setup() -> tuple[AugmentPolicy, Tensor, Tensor]:
    """The smoke policy without stages, a uint8 source batch ``[B, 3, 40, 40]`` and its labels."""
    views = resolve_recipe("moco", "smoke").augment.views
    policy = AugmentPolicy(AugmentConfig(views=views))
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (BATCH, 3, SOURCE, SOURCE), generator=g, dtype=torch.uint8)
    return policy, images, torch.full((BATCH,), -1)


def _callables() -> dict[str, Callable[[], object]]:
    """One zero-argument callable per measured phase (``views`` and each stage on ready views)."""
    policy, images, labels = _setup()
    g = torch.Generator().manual_seed(1)
    ready = policy(images, labels, g).views
    calls: dict[str, Callable[[], object]] = {"views": lambda: policy(images, labels, g)}
    for name, cfg in STAGES.items():
        stage = build_stage(cfg)

        def run(stage: Any = stage) -> object:
            return stage(ready, g)

        calls[name] = run
    return calls


def measure(repeats: int = 50, warmup: int = 3) -> dict[str, list[float]]:
    """Seconds per call of every phase, ``repeats`` interleaved rounds after ``warmup`` rounds."""
    calls = _callables()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for r in range(warmup + repeats):
        for name, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
    return times


def report(times: dict[str, list[float]], step_ms: float = STEP_MS) -> str:
    """A table of median times per batch, relative to the views alone and to a ``step_ms`` step."""
    views_ms = statistics.median(times["views"]) * 1e3
    lines = [
        f"B={BATCH}, {SOURCE}px uint8 -> 2 x 32px views, {torch.get_num_threads()} threads, "
        f"{len(times['views'])} repeats (medians; IQR in brackets)",
        f"{'phase':<9} {'ms/batch':>9} {'IQR ms':>15} {'% views':>8} {f'% {step_ms:.0f}ms step':>15}",
    ]
    for name, ts in times.items():
        ms = [t * 1e3 for t in ts]
        q1, _, q3 = statistics.quantiles(ms, n=4)
        med = statistics.median(ms)
        rel_views = "" if name == "views" else f"{100 * med / views_ms:7.1f}%"
        lines.append(
            f"{name:<9} {med:9.2f} {f'[{q1:.2f}, {q3:.2f}]':>15} {rel_views:>8} {100 * med / step_ms:14.1f}%"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- pytest-benchmark


def test_views_only_b256_32px(benchmark: Any) -> None:
    """Reference: the two smoke view pipelines, no stages."""
    fn = _callables()["views"]
    benchmark(fn)


@pytest.mark.parametrize("name", list(STAGES))
def test_stage_b256_32px(benchmark: Any, name: str) -> None:
    """One stage (config defaults) on ready 2 x [256, 3, 32, 32] views; target < 5 % of a 200 ms step."""
    fn = _callables()[name]
    out = benchmark(fn)
    if isinstance(build_stage(STAGES[name]), MixingStage):
        assert isinstance(out, tuple) and len(out) == 2
    if benchmark.stats is not None:  # None when run with --benchmark-disable
        benchmark.extra_info["pct_of_200ms_step"] = round(100 * benchmark.stats.stats.median / 0.2, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--step-ms", type=float, default=STEP_MS, help="reference training-step time")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(report(measure(args.repeats), args.step_ms))


if __name__ == "__main__":
    main()
