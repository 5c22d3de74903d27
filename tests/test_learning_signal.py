"""Every SSL method must learn in the smoke profile.

Through the CLI on the smoke-scale synthetic stand-ins (the embedded default's data): ``bench run`` per
method and a random-init backbone probed once for reference (the CI gate against
``ci/baselines/smoke.json`` is checked in ``tests/ci/test_gate.py``). Measured on this 2-core CPU (seed 0,
25 epochs of 5000 images, about 100-160 s of pretraining each; linear-probe top-1 on the synthetic
CIFAR-10 test split): random init 26.4%; see ``docs/smoke.md`` for each method's figure. Each method
must beat random init by at least ``MARGIN`` points.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench.cli import main
from pretrain.backbones import build_backbone
from pretrain.recipes import resolve_recipe
from tasks.base import TaskContext
from tasks.features import state_dict_digest
from tasks.registry import TASKS

MARGIN = 10.0  # percentage points of linear-probe top-1 on the synthetic CIFAR-10 stand-in
METHODS = ["moco", "simclr", "byol", "simsiam", "barlow"]


@pytest.fixture(scope="module")
def smoke(
    smoke_root: Path, smoke_runs: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path, float]:
    """(data root, runs dir, random-init top-1) shared by the methods (and, through the session fixtures,
    with every other slow test: MoCo is pretrained once per session)."""
    tmp = tmp_path_factory.mktemp("smoke")
    root, runs = smoke_root, smoke_runs
    torch.manual_seed(0)
    random_init = build_backbone(resolve_recipe("moco", "smoke").backbone.name).eval()
    ctx = TaskContext(root, False, "smoke", torch.device("cpu"), tmp, 0, state_dict_digest(random_init.net))
    return root, runs, TASKS.get("linear/cifar10").run(random_init, ctx).metrics["top1"]


@pytest.mark.slow
@pytest.mark.parametrize("recipe", METHODS)
def test_method_beats_random_init(
    recipe: str, smoke: tuple[Path, Path, float], request: pytest.FixtureRequest
) -> None:
    root, runs, base = smoke
    if recipe == "moco":
        request.getfixturevalue("moco_smoke_run")  # the session's shared MoCo run
    argv = [
        "run",
        "--recipe",
        recipe,
        "--tasks",
        "cifar10",
        "--data-root",
        str(root),
        "--runs-dir",
        str(runs),
    ]
    assert main([*argv, "--no-progress"]) == 0
    (result,) = runs.glob(f"{recipe}/*/results/linear-cifar10.json")
    top1 = json.loads(result.read_text())["metrics"]["top1"]
    print(f"random init {base:.1f}%  {recipe} {top1:.1f}%")
    assert top1 >= base + MARGIN, f"{recipe} {top1:.1f}% does not beat random init {base:.1f}% by {MARGIN}"
