"""Training-step cost relative to the model alone, and end-to-end wall time of the embedded default.

(a) ``step``: one full :meth:`pretrain.trainer.Trainer.train_step` of a smoke recipe (default MoCo v2;
    batch 256, 40 px uint8 sources -> two 32 px views, narrow ResNet-18, bf16 autocast + channels_last):
    augmentation + forward + backward + optimiser + momentum update;
(b) ``model``: the same step on pre-augmented views (no augmentation, no data handling);
ratio ``step / model`` (target <= 1.3), from per-phase medians of interleaved repeats.

(c) ``e2e``: ``bench run --recipe moco --tasks all`` (``--tasks`` selects others) in a subprocess with an
    empty cache (synthetic data generation of every dataset included) and again with the data cached
    (target: under 5 minutes for ``--tasks all``).

Run as a script: ``python benchmarks/bench_train.py [--repeats 10] [--e2e [--tasks all]]``, or with
pytest-benchmark: ``pytest benchmarks/bench_train.py --benchmark-enable``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pretrain.backbones import build_backbone
from pretrain.data import PretrainStream
from pretrain.methods import build_method
from pretrain.recipes import resolve_recipe
from pretrain.trainer import Trainer

BATCH, SOURCE = 256, 40


def make_trainer(tmp: Path, recipe_name: str = "moco") -> Trainer:
    recipe = resolve_recipe(recipe_name, "smoke")
    images = torch.randint(0, 256, (BATCH, 3, SOURCE, SOURCE), dtype=torch.uint8)
    stream = PretrainStream(images, np.full(BATCH, -1), BATCH, 0, images=images)  # type: ignore[arg-type]
    method = build_method(recipe.method, build_backbone(recipe.backbone.name))
    return Trainer(recipe, method, stream, tmp, torch.device("cpu"), progress=False)


def measure_step_ratio(repeats: int = 10, recipe: str = "moco") -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        trainer = make_trainer(Path(tmp), recipe)
        images = torch.randint(0, 256, (BATCH, 3, SOURCE, SOURCE), dtype=torch.uint8)
        labels = torch.full((BATCH,), -1)
        fixed = trainer.policy(images, labels, torch.Generator().manual_seed(0))
        fixed.views = tuple(v.contiguous(memory_format=torch.channels_last) for v in fixed.views)  # type: ignore[assignment]

        def model_only() -> None:
            with trainer._autocast():
                out = trainer.model(fixed)
            trainer.optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            trainer.optimizer.step()
            trainer.method.on_step_end(1, 2)

        for _ in range(3):  # warm-up (oneDNN primitive creation)
            trainer.train_step(images, labels)
            model_only()
        step_t, model_t = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            trainer.train_step(images, labels)
            t1 = time.perf_counter()
            model_only()
            t2 = time.perf_counter()
            step_t.append(t1 - t0)
            model_t.append(t2 - t1)
    step, model = statistics.median(step_t), statistics.median(model_t)
    return {"step_s": step, "model_s": model, "ratio": step / model, "images_per_s": BATCH / step}


def measure_e2e(tasks: str = "all", recipe: str = "moco") -> dict[str, float]:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "BENCH_CACHE": f"{tmp}/cache", "BENCH_RUNS": f"{tmp}/runs"}
        env.pop("BENCH_DATA", None)
        cmd = [
            sys.executable,
            "-m",
            "bench.cli",
            "run",
            "--recipe",
            recipe,
            "--tasks",
            tasks,
            "--no-progress",
        ]
        for label in ("cold", "warm_data"):
            t0 = time.perf_counter()
            subprocess.run([*cmd, *(["--fresh"] if label != "cold" else [])], env=env, check=True,
                           capture_output=True)  # fmt: skip
            out[f"e2e_{label}_s"] = time.perf_counter() - t0
    return out


def test_step_ratio(benchmark: Any) -> None:
    result = benchmark.pedantic(measure_step_ratio, kwargs={"repeats": 5}, rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    print(result)


def test_e2e(benchmark: Any) -> None:
    result = benchmark.pedantic(measure_e2e, rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    print(result)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--e2e", action="store_true")
    parser.add_argument("--tasks", default="all", help="tasks of the end-to-end run")
    parser.add_argument("--recipes", default="moco", help="comma-separated recipes (per-method throughput)")
    args = parser.parse_args()
    for name in args.recipes.split(","):
        print(name, {k: round(v, 4) for k, v in measure_step_ratio(args.repeats, name).items()})
    if args.e2e:
        print({k: round(v, 1) for k, v in measure_e2e(args.tasks).items()})
