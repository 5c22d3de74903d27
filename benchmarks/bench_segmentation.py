"""Speed of the smoke-profile segmentation tasks and where a training iteration's time goes.

Workload: ``seg/voc12aug`` (FCN) and ``seg/ade20k`` (UPerNet, 150 classes) with their smoke settings but
``ITERATIONS`` iterations, on the smoke-scale synthetic stand-ins, from a random-init narrow ResNet-18
(speed does not depend on the weights).  Each run goes through :func:`run_segmentation` (mmengine's
Runner), with two timing hooks around every iteration and the model's ``train_step`` wrapped:

* ``model``: inside ``model.train_step`` (data preprocessor, forward, losses, backward, optimiser step);
* ``hooks``: the rest of the time between the first ``before_train_iter`` hook and the last
  ``after_train_iter`` hook (mmengine's hooks: timer, logger, parameter scheduler, ours);
* ``data + loop``: from the end of one iteration's hooks to the start of the next (``next()`` on the
  dataloader, i.e. waiting for the worker's batch, plus the loop's own code);

reported as shares of the iterations' wall time, with iterations per second.  Each task runs twice, in
the model's NCHW layout and in channels_last (the smoke setting, ``SegSettings.channels_last``), so the
layout's speed-up is a ratio from one run.  Run as a script
(``python benchmarks/bench_segmentation.py [--iterations 60]``) or through pytest-benchmark.
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from pretrain.backbones import build_backbone
from tasks.base import TaskContext
from tasks.datasets.synth.writer import ensure_synthetic
from tasks.features import state_dict_digest
from tasks.registry import TASKS
from tasks.segmentation.protocols import SegmentationTask

ITERATIONS = 60
WARMUP = 5  # iterations left out of the shares (worker start-up, first allocations)


def timing_hooks() -> tuple[Any, Any, dict[str, float]]:
    """Two hooks (first and last in every iteration) and the dict they accumulate into."""
    from mmengine.hooks import Hook

    totals = {"model": 0.0, "hooks": 0.0, "data_loop": 0.0, "iterations": 0.0}
    marks: dict[str, float] = {}

    class First(Hook):
        priority = "HIGHEST"

        def before_train(self, runner: Any) -> None:
            step = runner.model.train_step

            def timed(*args: Any, **kwargs: Any) -> Any:
                t0 = time.perf_counter()
                out = step(*args, **kwargs)
                marks["model"] = time.perf_counter() - t0
                return out

            runner.model.train_step = timed

        def before_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
            marks["start"] = time.perf_counter()
            if "end" in marks and runner.iter >= WARMUP:
                totals["data_loop"] += marks["start"] - marks["end"]

    class Last(Hook):
        priority = "LOWEST"

        def after_train_iter(
            self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None
        ) -> None:
            marks["end"] = time.perf_counter()
            if runner.iter >= WARMUP:
                totals["model"] += marks["model"]
                totals["hooks"] += marks["end"] - marks["start"] - marks["model"]
                totals["iterations"] += 1

    return First(), Last(), totals


def measure(
    task_name: str, iterations: int = ITERATIONS, root: Path | None = None, channels_last: bool = True
) -> dict[str, float]:
    """Run ``task_name`` (smoke settings, ``iterations`` iterations, the given memory layout) once and time
    it."""
    with tempfile.TemporaryDirectory() as tmp:
        data = root or ensure_synthetic(Path(tmp) / "data", [task_name.split("/")[1]], "smoke")
        base = TASKS.get(task_name)
        assert isinstance(base, SegmentationTask)
        settings = dataclasses.replace(
            base.settings["smoke"], iterations=iterations, channels_last=channels_last
        )
        task = dataclasses.replace(base, settings={"smoke": settings})
        torch.manual_seed(0)
        backbone = build_backbone("narrow_resnet18")
        ctx = TaskContext(
            data_root=data, synthetic=True, profile="smoke", device=torch.device("cpu"),
            cache_dir=Path(tmp) / "cache", seed=0, weights_digest=state_dict_digest(backbone.net),
            progress=False, work_dir=Path(tmp) / "work",
        )  # fmt: skip
        from tasks.segmentation.mmseg_backend import run_segmentation

        first, last, totals = timing_hooks()
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        out = run_segmentation(task, backbone, ctx, extra_hooks=[first, last])
        wall = time.perf_counter() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    timed = totals["model"] + totals["hooks"] + totals["data_loop"]
    return {
        "iterations_per_second": out.details["iterations_per_second"],
        "steady_iterations_per_second": totals["iterations"] / timed,
        "model_share": totals["model"] / timed,
        "hooks_share": totals["hooks"] / timed,
        "data_loop_share": totals["data_loop"] / timed,
        "train_seconds": out.details["train_seconds"],
        "test_seconds": out.details["test_seconds"],
        "task_wall_seconds": wall,
        "main_process_cpu_seconds": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
    }


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_bench_voc12aug_fcn(benchmark: Any, channels_last: bool) -> None:
    result = benchmark.pedantic(
        lambda: measure("seg/voc12aug", channels_last=channels_last), rounds=1, warmup_rounds=0
    )
    benchmark.extra_info.update(result)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_bench_ade20k_upernet(benchmark: Any, channels_last: bool) -> None:
    result = benchmark.pedantic(
        lambda: measure("seg/ade20k", channels_last=channels_last), rounds=1, warmup_rounds=0
    )
    benchmark.extra_info.update(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--iterations", type=int, default=ITERATIONS)
    parser.add_argument("--tasks", default="seg/voc12aug,seg/cityscapes,seg/ade20k")
    args = parser.parse_args()
    print(f"torch threads: {torch.get_num_threads()}, {args.iterations} iterations per task, smoke settings")
    for name in args.tasks.split(","):
        rates = {}
        for channels_last in (False, True):
            r = measure(name, args.iterations, channels_last=channels_last)
            rates[channels_last] = r["steady_iterations_per_second"]
            layout = "channels_last" if channels_last else "NCHW"
            print(
                f"{name:15s} {layout:13s} {r['iterations_per_second']:.2f} it/s "
                f"(steady {r['steady_iterations_per_second']:.2f}); "
                f"model {r['model_share']:.0%}, mmengine hooks {r['hooks_share']:.0%}, "
                f"data + loop {r['data_loop_share']:.0%}; train {r['train_seconds']:.1f} s, "
                f"test {r['test_seconds']:.1f} s, task {r['task_wall_seconds']:.1f} s, "
                f"main-process CPU {r['main_process_cpu_seconds']:.1f} s"
            )
        print(f"{name:15s} channels_last / NCHW steady speed: {rates[True] / rates[False]:.2f}x")


if __name__ == "__main__":
    main()
