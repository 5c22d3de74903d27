"""Our pretraining loop vs lightly's equivalent loop, side by side in one run (images/s).

The same job in both: SimCLR (NT-Xent, T = 0.2) on the smoke ImageNet stand-in (5000 images, 40 px
sources), the narrow ResNet-18 backbone with a 2-layer projection head (hidden 512, out 128), batch 256,
two 32 px views with SimCLR's augmentations (random resized crop scale 0.35-1, flip, colour jitter
0.8/0.8/0.8/0.2 with p 0.8, grayscale p 0.2, Gaussian blur p 0.5 with sigma 0.1-0.4), AdamW, bf16
autocast + channels_last in both loops (so the comparison is of the loops, not of precision):

* **augbench**: :class:`pretrain.trainer.Trainer` over the in-memory stream (batched per-sample views on
  the training device, `pretrain/augment/`);
* **lightly** (1.6): the loop of its SimCLR example: a ``DataLoader`` over the images with
  ``lightly.transforms.SimCLRTransform`` (torchvision per-sample transforms on PIL images) in
  ``num_workers`` worker processes, ``SimCLRProjectionHead``, ``lightly.loss.NTXentLoss``.

Images/s = images per optimiser step / median step time (data loading included) over ``steps`` steps
after warm-up.  lightly is a benchmark dependency only (``pip install 'augbench[peer]'``).
Run: ``python benchmarks/bench_peer.py [--steps 8] [--workers 2]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pretrain.backbones import build_backbone
from pretrain.data import PretrainStream
from pretrain.methods import build_method
from pretrain.recipes import resolve_recipe
from pretrain.trainer import Trainer
from tasks.datasets.base import load_uint8_tensor
from tasks.datasets.registry import DATASETS
from tasks.datasets.synth.writer import ensure_synthetic

BATCH, SOURCE, VIEW, TEMPERATURE = 256, 40, 32, 0.2


def _median_rate(step: Any, steps: int, warmup: int = 2) -> float:
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return BATCH / statistics.median(times)


def ours(root: Path, steps: int) -> float:
    recipe = resolve_recipe("simclr", "smoke", [f"method.temperature={TEMPERATURE}"])
    full = DATASETS.get("imagenet").load(root, "train", size=SOURCE, resize=SOURCE)
    images, _ = load_uint8_tensor(full)
    stream = PretrainStream(full, full.labels * 0 - 1, BATCH, 0, images=images)
    method = build_method(recipe.method, build_backbone(recipe.backbone.name))
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(recipe, method, stream, Path(tmp), torch.device("cpu"), progress=False)
        batches = stream.batches(0)
        return _median_rate(lambda: trainer.train_step(*next(batches)), steps)


def lightly_loop(root: Path, steps: int, workers: int) -> float:
    import torchvision
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead
    from lightly.transforms import SimCLRTransform

    transform = SimCLRTransform(input_size=VIEW, min_scale=0.35, sigmas=(0.1, 0.4), cj_strength=1.0)
    dataset = torchvision.datasets.ImageFolder(str(root / "imagenet" / "train"), transform=transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=True, drop_last=True,
                                         num_workers=workers, persistent_workers=workers > 0)  # fmt: skip
    backbone = build_backbone("narrow_resnet18")
    model = nn.Sequential(backbone.net, SimCLRProjectionHead(backbone.feature_dim, 512, 128)).to(
        memory_format=torch.channels_last
    )
    criterion = NTXentLoss(temperature=TEMPERATURE)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.003)

    def epochs() -> Iterator[Any]:
        while True:
            yield from loader

    batches = epochs()

    def step() -> None:
        (x0, x1), _ = next(batches)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            z0 = model(x0.contiguous(memory_format=torch.channels_last))
            z1 = model(x1.contiguous(memory_format=torch.channels_last))
            loss = criterion(z0.float(), z1.float())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return _median_rate(step, steps)


def measure(steps: int = 8, workers: int = 2) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        root = ensure_synthetic(Path(tmp) / "data", ["imagenet"], "smoke")
        a = ours(root, steps)
        b = lightly_loop(root, steps, workers)
    return {"augbench_img_s": a, "lightly_img_s": b, "ratio": a / b}


def test_peer(benchmark: Any) -> None:
    import pytest

    pytest.importorskip("lightly")
    result = benchmark.pedantic(measure, kwargs={"steps": 4}, rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    print(result)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    print({k: round(v, 2) for k, v in measure(args.steps, args.workers).items()})
