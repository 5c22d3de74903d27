"""MoCo v2 in the smoke profile must learn, and the CI gate must hold against the stored baseline.

Through the CLI on the smoke-scale synthetic stand-ins (the embedded default's data): ``bench run`` then
``bench ci check`` against ``ci/baselines/smoke.json``; separately, a random-init backbone is probed.
Measured on this 2-core CPU (seed 0, ~100 s of pretraining): random init 26.4% top-1, MoCo v2 47.1%
(+21 points). The test requires at least +10 points.
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
BASELINE = Path(__file__).resolve().parent.parent / "ci" / "baselines" / "smoke.json"


@pytest.mark.slow
def test_moco_beats_random_init_and_passes_ci_gate(tmp_path: Path) -> None:
    root, runs = tmp_path / "data", tmp_path / "runs"
    assert main(["data", "synth", "--root", str(root), "--datasets", "imagenet,cifar10"]) == 0
    argv = [
        "run",
        "--recipe",
        "moco",
        "--tasks",
        "cifar10",
        "--data-root",
        str(root),
        "--runs-dir",
        str(runs),
    ]
    assert main([*argv, "--no-progress"]) == 0
    (result,) = runs.glob("moco/*/results/linear-cifar10.json")
    moco = json.loads(result.read_text())["metrics"]["top1"]

    torch.manual_seed(0)
    random_init = build_backbone(resolve_recipe("moco", "smoke").backbone.name).eval()
    ctx = TaskContext(
        root, False, "smoke", torch.device("cpu"), tmp_path, 0, state_dict_digest(random_init.net)
    )
    base = TASKS.get("linear/cifar10").run(random_init, ctx).metrics["top1"]
    print(f"random init {base:.1f}%  moco {moco:.1f}%")
    assert moco >= base + MARGIN, f"MoCo v2 {moco:.1f}% does not beat random init {base:.1f}% by {MARGIN}"

    assert main(["ci", "check", str(runs), "--baseline", str(BASELINE)]) == 0
