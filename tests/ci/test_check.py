import json
from pathlib import Path

import pytest

from bench.cli import main
from bench.errors import ConfigError
from ci.check import check, load_baseline, make_baseline
from tests.conftest import make_result


def test_baseline_round_trip_and_regression(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    make_result(runs, "moco", "linear/cifar10", 0, 60.0)
    base = tmp_path / "base.json"
    make_baseline(runs, base, "smoke", "synthetic", tolerance=2.0)
    assert [f.status for f in check(runs, base)] == ["ok"]
    make_result(runs, "moco", "linear/cifar10", 0, 57.0, created="2026-02-01T00:00:00")  # newer, worse
    (finding,) = check(runs, base)
    assert finding.status == "regressed" and finding.failed
    assert main(["ci", "check", str(runs), "--baseline", str(base)]) == 1
    make_result(runs, "moco", "linear/cifar10", 0, 65.0, created="2026-03-01T00:00:00")
    assert [f.status for f in check(runs, base)] == ["improved"]
    assert main(["ci", "check", str(runs), "--baseline", str(base)]) == 0


def test_missing_and_version_changes_fail(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    make_result(runs, "moco", "linear/cifar10", 0, 60.0)
    base = tmp_path / "base.json"
    doc = make_baseline(runs, base, "smoke", "synthetic", tolerance=2.0)
    doc["entries"].append({**doc["entries"][0], "recipe": "byol"})
    base.write_text(json.dumps(doc))
    make_result(runs, "moco", "linear/cifar10", 0, 60.0, version=2, created="2026-02-01T00:00:00")
    statuses = sorted(f.status for f in check(runs, base))
    assert statuses == ["missing", "version"]


def test_bad_baseline_file(tmp_path: Path) -> None:
    p = tmp_path / "b.json"
    p.write_text("{}")
    with pytest.raises(ConfigError, match="augbench-baseline/1"):
        load_baseline(p)
    with pytest.raises(ConfigError, match="not found"):
        load_baseline(tmp_path / "nope.json")
