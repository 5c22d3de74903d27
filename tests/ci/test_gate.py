"""The repository's smoke baseline holds on the real code, and the gate catches a sabotaged MoCo.

Slow (smoke pretraining through the CLI).  The baseline's recipes are pretrained once each (seed 0) with the
baseline's own ``--set`` overrides (its CI tier: ``ci/baselines/smoke.json``, ``recipes.*.overrides``;
:mod:`tests.tier`) into the session's shared runs directory, so MoCo's is the very run the learning-signal,
detection and segmentation tests use (``moco_smoke_run``); the sabotaged MoCo gets its own.  Cost: three
CI-tier pretrainings besides the shared one, plus their tasks (about 3 min each in fp32 on an idle AVX2
2-core machine).  With the same thread count, reruns of a seed reproduce the stored values exactly; the
baseline's rerun noise covers another thread count.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch

import pretrain.methods.moco as moco_module
from bench.cli import main
from ci.check import check
from tests.tier import BASELINE, tier_args

TASKS = "linear/cifar10,knn/cifar10,linear/imagenet,knn/imagenet,invariance"
SABOTAGE_TASKS = "linear/cifar10,invariance"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gate_runs(smoke_root: Path, smoke_runs: Path) -> Path:
    """Seed 0 of every baseline recipe, with the baseline's overrides and tasks (real code), in the session's
    runs directory: MoCo's pretraining is the shared ``moco_smoke_run``."""
    for recipe in json.loads(BASELINE.read_text())["recipes"]:
        tier = tier_args(recipe)
        argv = ["run", "--recipe", recipe, "--seeds", "0", "--tasks", TASKS, *tier, "--no-progress"]
        assert main([*argv, "--data-root", str(smoke_root), "--runs-dir", str(smoke_runs)]) == 0
    return smoke_runs


def test_repository_baseline_covers_recipes_tasks_and_seeds() -> None:
    doc = json.loads(BASELINE.read_text())
    entries = doc["entries"]
    assert {"moco", "moco_mixup"} <= set(doc["recipes"]) and {"moco_erasing", "moco_cutout"} & set(
        doc["recipes"]
    )
    tasks = {e["task"] for e in entries}
    assert {"linear/cifar10", "knn/cifar10", "linear/imagenet", "knn/imagenet", "invariance"} <= tasks
    assert all(e["n"] >= 3 for e in entries)
    assert {e["direction"] for e in entries if e["task"] == "invariance"} == {"descriptive"}
    # the CI tier pins fp32: the same config on every CPU (precision auto would resolve by hardware)
    assert all("train.precision=fp32" in spec["overrides"] for spec in doc["recipes"].values())


def test_real_code_passes_the_repository_baseline(gate_runs: Path, tmp_path: Path) -> None:
    junit, md = tmp_path / "junit.xml", tmp_path / "check.md"
    code = main(["ci", "check", str(gate_runs), "--baseline", str(BASELINE), "--junit", str(junit),
                 "--markdown", str(md)])  # fmt: skip
    assert code == 0, md.read_text()
    suite = ET.parse(junit).getroot().find("testsuite")
    entries = json.loads(BASELINE.read_text())["entries"]
    assert suite is not None and suite.get("failures") == "0" and int(suite.get("tests", 0)) == len(entries)
    assert "| ok       | moco         | linear/cifar10" in md.read_text() and "| paired |" in md.read_text()


def _no_positive_info_nce(
    q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float, reduction: str = "mean"
) -> torch.Tensor:
    """SABOTAGE: MoCo's InfoNCE with the positive logit dropped: ``logsumexp_j(q.queue_j / T)`` only
    pushes queries away from the negatives and never pulls the two views together."""
    rows = torch.logsumexp(q @ queue.t() / temperature, dim=1)
    return rows.mean() if reduction == "mean" else rows


def _moco_only(tmp_path: Path) -> Path:
    """The repository baseline restricted to MoCo's entries on the tasks the sabotage test runs."""
    doc = json.loads(BASELINE.read_text())
    doc["recipes"] = {"moco": doc["recipes"]["moco"]}
    doc["entries"] = [
        e for e in doc["entries"] if e["recipe"] == "moco" and e["task"] in SABOTAGE_TASKS.split(",")
    ]
    path = tmp_path / "moco-baseline.json"
    path.write_text(json.dumps(doc))
    return path


def test_gate_catches_moco_without_its_positive_logit(
    smoke_root: Path, gate_runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    baseline = _moco_only(tmp_path)
    assert main(["ci", "check", str(gate_runs), "--baseline", str(baseline)]) == 0  # real code passes

    monkeypatch.setattr(moco_module, "info_nce", _no_positive_info_nce)
    sabotaged = tmp_path / "sabotaged-runs"
    argv = ["run", "--recipe", "moco", "--tasks", SABOTAGE_TASKS, *tier_args("moco"), "--no-progress"]
    assert main([*argv, "--data-root", str(smoke_root), "--runs-dir", str(sabotaged)]) == 0
    findings = check(sabotaged, baseline)
    assert not any(f.status in ("config", "missing", "version") for f in findings)  # same protocol and config
    assert {f.status for f in findings if f.failed} <= {"regressed", "changed"}
    assert any(f.status == "regressed" for f in findings), findings  # a metric with a direction got worse
    assert main(["ci", "check", str(sabotaged), "--baseline", str(baseline)]) == 1
