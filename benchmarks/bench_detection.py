"""Speed of the dense transfer tasks per backend in the smoke profile.

Workload: ``det/voc07`` (Faster R-CNN C4) and ``instseg/coco`` (Mask R-CNN C4) on the smoke-scale synthetic
stand-ins (600 training images each; 150 test images), a randomly initialised ``narrow_resnet18``, the smoke
protocol shortened to ``--iterations`` (default 40) plus its 10 PRECISE_BN batches, then evaluation on the
whole test split.  Measured per (task, backend) from the phases each backend reports (``details.seconds``):

* ``iters_per_s``: training iterations (batch 4) per second of training time (data + model, including the
  PRECISE_BN batches);
* ``outside_model_share``: the share of the whole task's wall time spent outside the network: reading
  annotations, loading/augmenting training batches, and the metric (VOC AP / COCOeval and the evaluators'
  bookkeeping).  detectron2 reports its test-time image loading inside ``eval``, so its share is a lower
  bound (test images are tiny: well under a second in all).

Run as a script (``python benchmarks/bench_detection.py [--iterations 40] [--backends torchvision,...]``) or
through pytest-benchmark (``pytest benchmarks/bench_detection.py --benchmark-enable``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from pretrain.backbones import build_backbone
from tasks.base import TaskContext
from tasks.datasets.synth.writer import ensure_synthetic
from tasks.detection.protocol import build_protocol, with_overrides
from tasks.detection.tasks import BACKENDS, DenseTransferTask, detectron2_available, run_protocol
from tasks.features import state_dict_digest

TASKS = {"det/voc07": "c4_24k", "instseg/coco": "c4_2x"}
OUTSIDE = ("read_annotations", "data", "eval_data", "eval_metric")


def measure(base: str, backend: str, root: Path, iterations: int) -> dict[str, Any]:
    torch.manual_seed(0)
    backbone = build_backbone("narrow_resnet18")
    ctx = TaskContext(
        data_root=root,
        synthetic=True,
        profile="smoke",
        device=torch.device("cpu"),
        cache_dir=root,
        seed=0,
        weights_digest=state_dict_digest(backbone.net),
        progress=False,
    )
    p = with_overrides(build_protocol(base, None, "smoke"), iterations=iterations)
    t0 = time.perf_counter()
    out = run_protocol(DenseTransferTask(base, TASKS[base], backend), p, backbone, ctx)
    total = time.perf_counter() - t0
    sec = out.details["seconds"]
    # training incl. the 10 PRECISE_BN batches (detectron2 runs them inside ``train``)
    train = sec["train"] if backend == "detectron2" else sec["data"] + sec["model"] + sec["precise_bn"]
    outside = sum(sec.get(k, 0.0) for k in OUTSIDE)
    return {
        "task": base,
        "backend": backend,
        "iterations": iterations,
        "iters_per_s": iterations / train,
        "train_s": train,
        "total_s": total,
        "outside_model_share": outside / total,
        "seconds": sec,
    }


def _backends(names: str | None) -> list[str]:
    wanted = names.split(",") if names else list(BACKENDS)
    return [b for b in wanted if b != "detectron2" or detectron2_available()]


@pytest.fixture(scope="module")
def smoke_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_synthetic(tmp_path_factory.mktemp("det-bench"), ["voc", "coco"], "smoke")


@pytest.mark.parametrize("base", list(TASKS))
@pytest.mark.parametrize("backend", _backends(None))
def test_bench_detection(benchmark: Any, smoke_data: Path, base: str, backend: str) -> None:
    torch.set_num_threads(1)
    result = benchmark.pedantic(lambda: measure(base, backend, smoke_data, 20), rounds=1, iterations=1)
    benchmark.extra_info.update({k: v for k, v in result.items() if k != "seconds"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--backends", default=None, help="comma-separated (default: all that import)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = ensure_synthetic(Path(tmp), ["voc", "coco"], "smoke")
        for backend in _backends(args.backends):
            for base in TASKS:
                r = measure(base, backend, root, args.iterations)
                secs = {k: round(v, 2) for k, v in r.pop("seconds").items()}
                print(
                    json.dumps(
                        {**{k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}, **secs}
                    )
                )


if __name__ == "__main__":
    main()
