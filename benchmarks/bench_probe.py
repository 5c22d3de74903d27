"""Cost of the linear-probe protocol relative to feature extraction.

Workload: ``torchvision.models.resnet18(num_classes=10)`` with ``fc = Identity`` (512-d features) at
32x32 on 5000 random uint8 images (4000 train / 1000 test, 10 classes; each class tints its images so
the probe has something to learn).  Measured:

(a) ``extract``: :func:`tasks.features.extract_features` of both splits into an empty cache;
(b) ``total``: extraction into an empty cache + :func:`tasks.linear.fit_linear_probe` (default
    :class:`~tasks.linear.ProbeConfig`: full sweep, selection, refit, test);

and the ratio ``total / extract`` (target <= 1.3) from the per-phase minimum over the repeats.

Run as a script (``python benchmarks/bench_probe.py [--repeats 5]``) or through pytest-benchmark
(``pytest benchmarks/bench_probe.py --benchmark-enable``).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torchvision

from tasks.features import FeatureSet, extract_features
from tasks.linear import ProbeConfig, ProbeResult, fit_linear_probe

N_TRAIN, N_TEST, NUM_CLASSES, SIZE = 4000, 1000, 10, 32


class RandomImages(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    """Random uint8 images whose colour channels are shifted by a per-class offset."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, NUM_CLASSES, (n,), generator=g).numpy()
        tint = torch.randint(-40, 41, (NUM_CLASSES, 3, 1, 1), generator=torch.Generator().manual_seed(0))
        noise = torch.randint(0, 256, (n, 3, SIZE, SIZE), generator=g)
        self.images = (noise + tint[torch.from_numpy(self.labels)]).clamp(0, 255).to(torch.uint8)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=NUM_CLASSES)
    model.fc = torch.nn.Identity()
    return model.eval()


def extract_both(model: torch.nn.Module, train: RandomImages, test: RandomImages, cache: Path) -> Any:
    kw: dict[str, Any] = {"cache_dir": cache, "progress": False}
    return extract_features(model, train, key="train", **kw), extract_features(model, test, key="test", **kw)


def run_total(
    model: torch.nn.Module, train: RandomImages, test: RandomImages, cache: Path
) -> tuple[FeatureSet, FeatureSet, ProbeResult]:
    ftr, fte = extract_both(model, train, test, cache)
    return ftr, fte, fit_linear_probe(ftr, fte, NUM_CLASSES, ProbeConfig())


def measure(repeats: int = 5) -> dict[str, float]:
    """Seconds of extraction alone and of extraction + probe, interleaved, each into a fresh cache.

    The ratio uses the per-phase minimum over ``repeats`` (least disturbed by other processes on the
    machine); medians are reported alongside.
    """
    model, train, test = make_model(), RandomImages(N_TRAIN, 1), RandomImages(N_TEST, 2)
    t_ext: list[float] = []
    t_tot: list[float] = []
    t_probe: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        *_, result = run_total(model, train, test, Path(tmp) / "warmup")
        for i in range(repeats):
            t0 = time.perf_counter()
            extract_both(model, train, test, Path(tmp) / f"e{i}")
            t_ext.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            *_, result = run_total(model, train, test, Path(tmp) / f"t{i}")
            t_tot.append(time.perf_counter() - t0)
            t_probe.append(result.seconds)
    return {
        "extract_s": min(t_ext),
        "total_s": min(t_tot),
        "probe_s": min(t_probe),
        "ratio": min(t_tot) / min(t_ext),
        "extract_median_s": statistics.median(t_ext),
        "total_median_s": statistics.median(t_tot),
        "ratio_median": statistics.median(t_tot) / statistics.median(t_ext),
        "top1": result.top1,
        "top5": result.top5,
        "selected_wd": result.selected["weight_decay"],
        "heads": len(result.val_top1),
    }


def test_bench_extract(benchmark: Any, tmp_path: Path) -> None:
    model, train, test = make_model(), RandomImages(N_TRAIN, 1), RandomImages(N_TEST, 2)
    counter = iter(range(10**6))
    benchmark.pedantic(
        lambda: extract_both(model, train, test, tmp_path / f"e{next(counter)}"), rounds=3, warmup_rounds=1
    )


def test_bench_total(benchmark: Any, tmp_path: Path) -> None:
    model, train, test = make_model(), RandomImages(N_TRAIN, 1), RandomImages(N_TEST, 2)
    counter = iter(range(10**6))
    benchmark.pedantic(
        lambda: run_total(model, train, test, tmp_path / f"t{next(counter)}"), rounds=3, warmup_rounds=1
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    r = measure(args.repeats)
    print(f"threads={torch.get_num_threads()}  images={N_TRAIN}+{N_TEST} @ {SIZE}px  resnet18 (512-d)")
    print(f"(a) extraction           min {r['extract_s']:.3f} s   median {r['extract_median_s']:.3f} s")
    print(f"(b) extraction + probe   min {r['total_s']:.3f} s   median {r['total_median_s']:.3f} s")
    print(f"    probe alone          min {r['probe_s']:.3f} s")
    print(
        f"ratio total/extraction   {r['ratio']:.3f} (min)  {r['ratio_median']:.3f} (median)   target <= 1.3"
    )
    print(f"probe: {r['heads']} heads, selected wd={r['selected_wd']:.3g}, ", end="")
    print(f"test top1={r['top1']:.1f}% top5={r['top5']:.1f}%")


if __name__ == "__main__":
    main()
