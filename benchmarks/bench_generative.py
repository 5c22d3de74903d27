"""Cost of generative augmentation: the training-step overhead of the swap stage and the oracle's speed.

(a) ``overhead``: ``moco`` vs ``moco_oracle`` in the smoke profile, each step = fetch the batch from the
    in-memory pretraining stream (``moco_oracle``: plan the swap and gather the chosen variants from a
    memory-mapped variant bank of the smoke size, 5000 images x 10 variants x 40 px) + the full
    :meth:`Trainer.train_step`.  Interleaved repeats, medians; target: overhead < 5 %.
(b) ``oracle``: variants/s of ``bench generate --generator oracle`` on the smoke ImageNet stand-in
    (rendering + JPEG writing + records), with a limit of 500 source images.

The diffusion and IC-GAN generators have their own benchmarks (``bench_generate.py``, ``bench_icgan.py``).
Run: ``python benchmarks/bench_generative.py [--repeats 20]`` or with pytest-benchmark.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pretrain.backbones import build_backbone
from pretrain.data import PretrainStream
from pretrain.generative.base import GeneratorSettings
from pretrain.generative.generate import generate
from pretrain.generative.swap import SourceSwap, VariantBank
from pretrain.methods import build_method
from pretrain.recipes import resolve_recipe
from pretrain.trainer import Trainer

N, K, SIZE, BATCH = 5000, 10, 40, 256


def _trainer(tmp: Path, name: str, images: torch.Tensor, bank: VariantBank | None) -> Trainer:
    recipe = resolve_recipe(name, "smoke")
    swap = SourceSwap(recipe.augment.sources[0], 0, K) if recipe.augment.sources else None
    stream = PretrainStream(images, np.full(N, -1), BATCH, 0, images=images, swap=swap, bank=bank)  # type: ignore[arg-type]
    method = build_method(recipe.method, build_backbone(recipe.backbone.name))
    return Trainer(recipe, method, stream, tmp / name, torch.device("cpu"), progress=False)


def measure_overhead(repeats: int = 20) -> dict[str, float]:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (N, 3, SIZE, SIZE), dtype=torch.uint8, generator=g)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bank.npy"
        bank_file = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(N, K, 3, SIZE, SIZE))
        bank_file[:] = np.random.default_rng(0).integers(0, 256, bank_file.shape, dtype=np.uint8)
        bank_file.flush()
        del bank_file
        bank = VariantBank(np.load(path, mmap_mode="c"))
        trainers = {
            "moco": _trainer(Path(tmp), "moco", images, None),
            "moco_oracle": _trainer(Path(tmp), "moco_oracle", images, bank),
        }
        streams = {name: t.stream.batches(0) for name, t in trainers.items()}
        times: dict[str, list[float]] = {name: [] for name in trainers}
        for i in range(repeats + 3):
            for name, trainer in trainers.items():
                t0 = time.perf_counter()
                trainer.train_step(*next(streams[name]))
                if i >= 3:  # warm-up (oneDNN primitive creation)
                    times[name].append(time.perf_counter() - t0)
    base, gen = statistics.median(times["moco"]), statistics.median(times["moco_oracle"])
    return {"moco_step_s": base, "moco_oracle_step_s": gen, "overhead": gen / base - 1}


def measure_oracle(limit: int = 500) -> dict[str, float]:
    from tasks.datasets.synth.writer import ensure_synthetic

    with tempfile.TemporaryDirectory() as tmp:
        root = ensure_synthetic(Path(tmp) / "data", ["imagenet"], "smoke")
        settings = GeneratorSettings(per_image=K, size=SIZE, batch_size=256)
        report = generate("oracle", None, root, "imagenet", "train", settings, limit=limit, progress=False)
    return {"oracle_variants_per_s": report.variants_per_second}


def test_swap_overhead(benchmark: Any) -> None:
    result = benchmark.pedantic(measure_overhead, kwargs={"repeats": 10}, rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    print(result)


def test_oracle_speed(benchmark: Any) -> None:
    result = benchmark.pedantic(measure_oracle, rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    print(result)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    print({k: round(v, 4) for k, v in measure_overhead(args.repeats).items()})
    print({k: round(v, 1) for k, v in measure_oracle().items()})
