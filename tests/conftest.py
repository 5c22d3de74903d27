"""Shared test fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from core.results import SCHEMA, write_result


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op thread for tests on tiny tensors: as fast, and immune to OpenMP stalls when other
    jobs load the 2-core machine. Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's cache, data or runs from tests."""
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("BENCH_DATA", raising=False)
    monkeypatch.delenv("BENCH_RUNS", raising=False)


@pytest.fixture(scope="session")
def smoke_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root with the smoke-scale stand-ins of ImageNet (pretraining) and CIFAR-10, shared by the
    slow tests; tests needing more datasets add them with ``bench data synth --root`` (cached per name)."""
    from bench.cli import main

    root = tmp_path_factory.mktemp("smoke-data")
    assert main(["data", "synth", "--root", str(root), "--datasets", "imagenet,cifar10"]) == 0
    return root


@pytest.fixture(scope="session")
def smoke_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The runs directory shared by the slow tests (one pretraining per recipe for the whole session)."""
    return tmp_path_factory.mktemp("smoke-runs")


@pytest.fixture(scope="session")
def moco_smoke_run(smoke_root: Path, smoke_runs: Path) -> Path:
    """The run directory of one smoke-profile MoCo v2 pretraining (seed 0) in the CI tier
    (:data:`tests.tier.MOCO_TIER`), with its linear/cifar10 result.

    Pretrained once per session and shared by every slow test that needs a trained backbone (learning
    signal, dense transfer tasks, the CI gate); later ``bench run --recipe moco --set <MOCO_TIER>`` calls
    with the same data root and runs directory reuse it.
    """
    from bench.cli import main
    from tests.tier import MOCO_TIER

    argv = ["run", "--recipe", "moco", "--tasks", "linear/cifar10", *MOCO_TIER, "--no-progress"]
    assert main([*argv, "--data-root", str(smoke_root), "--runs-dir", str(smoke_runs)]) == 0
    (run_dir,) = (smoke_runs / "moco").glob("smoke-synthetic-s0-*")
    return run_dir


def make_result(
    root: Path,
    recipe: str,
    task: str,
    seed: int,
    value: float,
    *,
    profile: str = "smoke",
    source: str = "synthetic",
    config_hash: str = "abc123",
    version: int = 1,
    created: str = "2026-01-01T00:00:00",
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a schema-valid result file the way the harness lays them out (``extra``: top-level keys of
    the document to replace, e.g. ``metrics``, ``task``, ``higher_is_better``)."""
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "recipe": {"name": recipe, "config": {}, "config_hash": config_hash},
        "task": {"name": task, "version": version, "family": task.split("/")[0], "protocol": {}},
        "metrics": {"top1": value, "top5": min(100.0, value + 10)},
        "primary_metric": "top1",
        "higher_is_better": {"top1": True, "top5": True},
        "details": {},
        "seed": seed,
        "profile": profile,
        "data": {"source": source, "root": "/x", "datasets": {}},
        "provenance": {},
        "timings": {},
        "pretrain": {},
        "created": created,
        **(extra or {}),
    }
    run = root / recipe / f"{profile}-{source}-s{seed}-{config_hash}"
    return write_result(run / "results" / f"{task.replace('/', '-')}.json", doc)
