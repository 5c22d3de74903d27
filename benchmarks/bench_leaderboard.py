"""Cost of regenerating the leaderboard, which the harness does after every ``bench run``.

Workload: a runs directory of ``RECIPES`` recipes x ``SEEDS`` seeds x ``TASKS`` tasks (linear and kNN on
the six classification datasets plus invariance = 13 tasks), i.e. 20 x 3 x 13 = 780 result files written
with the schema the harness uses.  Measured:

(a) ``markdown``: :func:`leaderboard.render.write_leaderboard` (collect + families layout + markdown), what
    the harness calls after every run;
(b) ``exports``: ``bench leaderboard -o DIR --no-plots`` (markdown, CSV, JSON, index).

Plots are not timed (matplotlib's cost, a few seconds, is paid only by an explicit ``bench leaderboard``).
Run with ``pytest benchmarks/bench_leaderboard.py --benchmark-enable -q``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from bench.cli import main
from leaderboard.render import write_leaderboard

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests.* helpers
from tests.conftest import make_result

DATASETS = ("imagenet", "food101", "cifar10", "cifar100", "places365", "inat2018")
TASKS = [f"{f}/{d}" for f in ("linear", "knn") for d in DATASETS] + ["invariance"]
METHODS = ("moco", "simclr", "byol", "simsiam", "barlow")
AUGS = ("", "_mixup", "_cutmix", "_erasing")
RECIPES = [m + a for m in METHODS for a in AUGS]
SEEDS = 3


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    for i, recipe in enumerate(RECIPES):
        for seed in range(SEEDS):
            for j, task in enumerate(TASKS):
                value = 30.0 + i + j + seed / 2
                extra: dict[str, Any] = {}
                if task == "invariance":
                    extra = {
                        "metrics": {"invariance": value / 100, "diversity": 1 - value / 100},
                        "primary_metric": "invariance",
                        "higher_is_better": {"invariance": None, "diversity": None},
                        "task": {"name": task, "version": 1, "family": "invariance", "protocol": {}},
                    }
                make_result(root, recipe, task, seed, value, extra=extra)
    return root


def test_markdown(benchmark: Any, runs: Path, tmp_path: Path) -> None:
    benchmark.extra_info["result_files"] = len(RECIPES) * SEEDS * len(TASKS)
    benchmark(write_leaderboard, runs, tmp_path / "LEADERBOARD.md")


def test_exports(benchmark: Any, runs: Path, tmp_path: Path) -> None:
    benchmark.extra_info["result_files"] = len(RECIPES) * SEEDS * len(TASKS)
    benchmark(main, ["leaderboard", str(runs), "-o", str(tmp_path / "board"), "--no-plots"])
