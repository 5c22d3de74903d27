"""Cached-feature vs augmented linear evaluation, and the memory of feature extraction.

1. **Time per epoch-equivalent** (same backbone, images, head, batch 256):

   (a) ``cached``: one epoch of SGD for one linear head over the cached float16 features (memory-mapped,
       read in batches) -- what every further epoch / head costs once features exist;
   (b) ``augmented``: one epoch of :mod:`tasks.linear_aug` (random resized crop + flip on the fly,
       forward through the frozen backbone, head update);

   reported side by side with the ratio (b)/(a), plus the whole protocols: ``linear-cached`` (extraction
   once + the full 8-head sweep) vs 100 augmented epochs (extrapolated from (b)).
2. **Peak memory of extraction** at two dataset sizes: each size runs in a fresh subprocess that streams
   lazily generated images through :func:`tasks.features.extract_features`; the child's peak RSS
   (``ru_maxrss``) is reported after a warm-up forward pass of one batch (``before``) and after the
   extraction (``peak``).  Bounded means: the two peaks are about equal although one dataset is
   8x the other (features go to disk batch by batch; nothing grows with N but the label array).

Run: ``python benchmarks/bench_protocols.py`` (or ``pytest benchmarks/bench_protocols.py
--benchmark-enable -s``).  Workload: torchvision ResNet-18 (512-d) at 32 px, 4000 train / 1000 test
images as in ``bench_probe.py``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_probe import N_TEST, N_TRAIN, NUM_CLASSES, SIZE, RandomImages, extract_both, make_model

from tasks.base import TaskContext
from tasks.frozen import EvalResolution
from tasks.linear import fit_linear_probe
from tasks.linear_aug import AugLinearConfig, _train_head


class AsBackbone(torch.nn.Module):
    """Float images in [0, 1] -> features (what tasks expect of a backbone)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def cached_epoch(features: np.ndarray, labels: np.ndarray, batch: int = 256) -> float:
    """Seconds of one SGD epoch of a linear head over memory-mapped float16 features."""
    torch.manual_seed(0)
    head = torch.nn.Linear(features.shape[1], NUM_CLASSES)
    opt = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9)
    order = np.random.default_rng(0).permutation(len(labels))
    t0 = time.perf_counter()
    for start in range(0, len(order), batch):
        rows = np.sort(order[start : start + batch])
        x = torch.from_numpy(np.asarray(features[rows], dtype=np.float32))
        loss = torch.nn.functional.cross_entropy(head(x), torch.from_numpy(labels[rows]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def augmented_epoch(model: torch.nn.Module, train: RandomImages, cache: Path) -> float:
    ctx = TaskContext(
        data_root=cache,
        synthetic=True,
        profile="smoke",
        device=torch.device("cpu"),
        cache_dir=cache,
        seed=0,
        weights_digest="x",
        progress=False,
    )
    cfg = AugLinearConfig(epochs=1)
    t0 = time.perf_counter()
    _train_head(model, train, NUM_CLASSES, 512, cfg, EvalResolution(SIZE, SIZE), ctx, None)  # type: ignore[arg-type]
    return time.perf_counter() - t0


def measure_epochs(repeats: int = 3) -> dict[str, float]:
    model = AsBackbone(make_model()).eval()
    train, test = RandomImages(N_TRAIN, 1), RandomImages(N_TEST, 2)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        ftr, fte = extract_both(model, train, test, Path(tmp) / "f")
        extract = time.perf_counter() - t0
        t0 = time.perf_counter()
        fit_linear_probe(ftr, fte, NUM_CLASSES)
        sweep = time.perf_counter() - t0
        cached = [cached_epoch(ftr.features, ftr.labels) for _ in range(repeats)]
        augmented = [augmented_epoch(model, train, Path(tmp)) for _ in range(repeats)]
    a, b = statistics.median(cached), statistics.median(augmented)
    return {
        "cached_epoch_s": a,
        "augmented_epoch_s": b,
        "ratio": b / a,
        "cached_protocol_s": extract + sweep,
        "augmented_100_epochs_s": 100 * b,
    }


class LazyImages(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    """``n`` pseudo-random images generated on access (the dataset holds nothing but labels)."""

    def __init__(self, n: int) -> None:
        self.labels = np.arange(n, dtype=np.int64) % NUM_CLASSES

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        g = torch.Generator().manual_seed(i)
        return torch.randint(0, 256, (3, SIZE, SIZE), generator=g, dtype=torch.uint8), int(self.labels[i])


def _child(n: int, cache: str) -> None:
    """Subprocess body: extract ``n`` images, print peak RSS (MiB) and seconds as JSON."""
    import resource

    from tasks.features import extract_features

    model = AsBackbone(make_model()).eval()
    with torch.inference_mode():  # warm up: allocator pools and kernels, as a first batch would
        model(torch.rand(256, 3, SIZE, SIZE))
    before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    extract_features(model, LazyImages(n), cache_dir=Path(cache), key=f"n{n}", progress=False)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "n": n,
                "before_mib": before_kib / 1024,
                "peak_mib": peak_kib / 1024,
                "seconds": time.perf_counter() - t0,
            }
        )
    )


def measure_memory(sizes: tuple[int, ...] = (5000, 40000)) -> dict[str, float]:
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            proc = subprocess.run(
                [sys.executable, __file__, "--child", str(n), tmp], capture_output=True, text=True, check=True
            )
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            out[f"before_mib_{n}"] = r["before_mib"]
            out[f"peak_mib_{n}"] = r["peak_mib"]
            out[f"seconds_{n}"] = r["seconds"]
    return out


def test_epoch_ratio(benchmark: Any) -> None:
    result = benchmark.pedantic(measure_epochs, rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    print(result)


def test_extraction_memory(benchmark: Any) -> None:
    result = benchmark.pedantic(measure_memory, rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    print(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("N", "CACHE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(int(args.child[0]), args.child[1])
        return
    r = measure_epochs(args.repeats)
    print(f"threads={torch.get_num_threads()}  images={N_TRAIN}+{N_TEST} @ {SIZE}px  resnet18 (512-d)")
    print(f"(a) cached epoch      {r['cached_epoch_s'] * 1000:8.1f} ms")
    print(f"(b) augmented epoch   {r['augmented_epoch_s'] * 1000:8.1f} ms")
    print(f"ratio (b)/(a)         {r['ratio']:8.1f}x")
    print(f"linear-cached protocol (extract + 8-head sweep)  {r['cached_protocol_s']:.2f} s")
    print(f"augmented protocol, 100 epochs (extrapolated)   {r['augmented_100_epochs_s']:.1f} s")
    m = measure_memory()
    for key, value in m.items():
        print(f"{key:18s} {value:.1f}")


if __name__ == "__main__":
    main()
