import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from bench.cli import main
from ci.baseline import load_baseline, make_baseline, paired_tolerance, recipe_overrides, tolerance
from ci.check import check, config_diff
from core.config import to_dict
from core.errors import ConfigError
from pretrain.recipes import resolve_recipe
from tests.conftest import make_result
from tests.leaderboard.test_leaderboard import _invariance
from tests.tier import BASELINE

CONFIG = {"name": "moco", "train": {"seed": 0, "epochs": 25, "lr": 0.003}, "augment": {"stages": []}}
# Student-t quantiles from printed tables
T_99_2, T_995_2, T_99_4 = 6.964557, 9.924843, 3.746947  # t(0.99, 2), t(0.995, 2), t(0.99, 4)


def _res(root: Path, recipe: str, seed: int, value: float, **kw: Any) -> Path:
    config = kw.pop("config", CONFIG)
    return make_result(
        root, recipe, "linear/cifar10", seed, value,
        extra={"recipe": {"name": recipe, "config": {**config, "train": {**config["train"], "seed": seed}},
                          "config_hash": kw.pop("config_hash", "abc123")}},
        **kw,
    )  # fmt: skip


def _runs(root: Path, values: tuple[float, ...] = (60.0, 61.0, 62.0)) -> Path:
    for seed, v in enumerate(values):
        _res(root, "moco", seed, v)
        _invariance(root, "moco", seed, 0.8 + seed / 1000, 0.3)
    return root


def test_baseline_stores_mean_spread_seeds_and_the_tolerance_rule(tmp_path: Path) -> None:
    runs = _runs(tmp_path / "runs")
    doc = make_baseline(runs, tmp_path / "b.json", "smoke", "synthetic", note="bench run ...", alpha=0.01)
    assert doc["note"] == "bench run ..." and doc["recipes"]["moco"]["config_hash"] == "abc123"
    assert "seed" not in doc["recipes"]["moco"]["config"]["train"]
    entries = {(e["task"], e["metric"]): e for e in doc["entries"]}
    assert set(entries) == {
        ("linear/cifar10", "top1"),
        ("invariance", "invariance"),
        ("invariance", "diversity"),
    }
    e = entries[("linear/cifar10", "top1")]
    assert (e["mean"], e["std"], e["n"], e["seeds"], e["direction"]) == (61.0, 1.0, 3, [0, 1, 2], "higher")
    assert (e["pooled_std"], e["df"]) == (1.0, 2)  # one recipe: its own spread
    assert e["k"] == pytest.approx(T_99_2, abs=1e-5) and e["floor"] == pytest.approx(0.02 * 61.0)
    # max(floor, k * std * sqrt(1/m + 1/n)) for m = 1 current seed and for m = 3
    assert e["tolerance"] == pytest.approx(T_99_2 * 1.0 * math.sqrt(1 + 1 / 3), abs=1e-4)
    assert tolerance(e, 3) == pytest.approx(T_99_2 * math.sqrt(2 / 3), abs=1e-4)
    inv = entries[("invariance", "invariance")]  # descriptive: two-sided, t(1 - alpha/2, df)
    assert inv["direction"] == "descriptive" and inv["k"] == pytest.approx(T_995_2, abs=1e-5)
    div = entries[("invariance", "diversity")]  # zero spread: the floor
    assert div["std"] == 0.0 and div["tolerance"] == pytest.approx(max(0.02 * 0.3, 0.001))
    assert load_baseline(tmp_path / "b.json")["entries"] == doc["entries"]


def test_spread_is_pooled_over_recipes(tmp_path: Path) -> None:
    runs = _runs(tmp_path / "runs")  # moco: 60, 61, 62 (std 1)
    for seed, v in enumerate((50.0, 53.0, 56.0)):  # moco_mixup: std 3
        _res(runs, "moco_mixup", seed, v)
    doc = make_baseline(runs, tmp_path / "b.json", "smoke", "synthetic", alpha=0.01)
    mix = next(e for e in doc["entries"] if e["recipe"] == "moco_mixup")
    moco = next(e for e in doc["entries"] if e["recipe"] == "moco" and e["task"] == "linear/cifar10")
    pooled = math.sqrt((2 * 1.0**2 + 2 * 3.0**2) / 4)  # sum (n_r - 1) std_r^2 / sum (n_r - 1)
    for e in (moco, mix):
        assert e["pooled_std"] == pytest.approx(pooled) and e["df"] == 4
        assert e["tolerance"] == pytest.approx(T_99_4 * pooled * math.sqrt(1 + 1 / 3), abs=1e-4)
    assert (moco["std"], mix["std"]) == (1.0, 3.0)


def test_baseline_refuses_fewer_than_three_seeds(tmp_path: Path) -> None:
    runs = _runs(tmp_path / "runs", (60.0, 61.0))
    with pytest.raises(
        ConfigError, match=r"at least 3 seeds per entry.*moco linear/cifar10 \(2: seeds \[0, 1\]\)"
    ):
        make_baseline(runs, tmp_path / "b.json", "smoke", "synthetic")
    assert main(["ci", "baseline", str(runs), "-o", str(tmp_path / "b.json"), "--min-seeds", "2"]) == 2
    assert not (tmp_path / "b.json").exists()


def _baseline(tmp_path: Path) -> tuple[Path, Path]:
    runs = _runs(tmp_path / "runs")
    base = tmp_path / "base.json"
    assert main(["ci", "baseline", str(runs), "-o", str(base)]) == 0
    return runs, base


def _fresh(tmp_path: Path, name: str, top1: float, inv: float = 0.8, **kw: Any) -> Path:
    """A CI-like runs directory: seed 0 only."""
    runs = tmp_path / name
    _res(runs, "moco", 0, top1, **kw)
    _invariance(runs, "moco", 0, inv, 0.3)
    return runs


def test_statuses(tmp_path: Path) -> None:
    runs, base = _baseline(tmp_path)
    assert {f.status for f in check(runs, base)} == {"ok"}
    entries = {(e["task"], e["metric"]): e for e in load_baseline(base)["entries"]}
    tol = entries[("linear/cifar10", "top1")]["k"] * math.sqrt(1 + 1 / 3)  # std 1
    status = {f.metric: f.status for f in check(_fresh(tmp_path, "a", 61.0 - tol - 0.1), base)}
    assert status == {"top1": "regressed", "invariance": "ok", "diversity": "ok"}
    assert {f.metric: f.status for f in check(_fresh(tmp_path, "b", 61.0 - tol + 0.1), base)}["top1"] == "ok"
    assert {f.metric: f.status for f in check(_fresh(tmp_path, "c", 61.0 + tol + 0.1), base)}[
        "top1"
    ] == "improved"
    # descriptive: a change either way beyond the tolerance fails
    inv_tol = entries[("invariance", "invariance")]["tolerance"]
    for name, inv in (("d", 0.801 + inv_tol + 0.01), ("e", 0.801 - inv_tol - 0.01)):
        found = {f.metric: f for f in check(_fresh(tmp_path, name, 61.0, inv), base)}
        assert found["invariance"].status == "changed" and found["invariance"].failed


def test_missing_version_nonfinite_and_config_fail(tmp_path: Path) -> None:
    _, base = _baseline(tmp_path)
    only_linear = tmp_path / "f"
    _res(only_linear, "moco", 0, 61.0)
    assert {f.task: f.status for f in check(only_linear, base)} == {
        "linear/cifar10": "ok",
        "invariance": "missing",
    }

    versioned = _fresh(tmp_path, "g", 61.0, version=2)
    status = {(f.task, f.metric): f.status for f in check(versioned, base)}
    assert status[("linear/cifar10", "top1")] == "version"

    nan = _fresh(tmp_path, "h", 61.0)
    path = next(nan.glob("moco/*/results/linear-cifar10.json"))
    doc = json.loads(path.read_text())
    doc["metrics"]["top5"] = float("nan")
    path.write_text(json.dumps(doc))  # json writes NaN, as Python's json does
    (finding,) = [f for f in check(nan, base) if f.task == "linear/cifar10"]
    assert finding.status == "nonfinite" and "top5 in seed 0" in finding.message

    changed = {**CONFIG, "train": {**CONFIG["train"], "epochs": 20}}
    other = _fresh(tmp_path, "i", 61.0, config=changed, config_hash="def456")
    for path in other.glob("moco/*/results/invariance.json"):  # every result of that run: the new config
        doc = json.loads(path.read_text())
        doc["recipe"] = {"name": "moco", "config": changed, "config_hash": "def456"}
        path.write_text(json.dumps(doc))
    findings = check(other, base)
    assert [f.status for f in findings] == ["config"]
    assert "train.epochs: 25 -> 20" in findings[0].message and "def456" in findings[0].message
    assert main(["ci", "check", str(other), "--baseline", str(base)]) == 1


def _set_precision(runs: Path, precision: str) -> None:
    """Record ``precision`` as the pretraining autocast of every result under ``runs``."""
    for path in runs.glob("**/results/*.json"):
        doc = json.loads(path.read_text())
        doc["pretrain"] = {**doc["pretrain"], "precision": precision}
        path.write_text(json.dumps(doc))


def test_pretraining_precision_is_part_of_the_baseline(tmp_path: Path) -> None:
    """``train.precision: auto`` resolves by hardware (bf16 only with native bf16): a baseline records the
    precision its runs were pretrained under, and results pretrained under another one are a ``config``
    finding, not a regression."""
    runs = _runs(tmp_path / "runs")
    _set_precision(runs, "bfloat16")
    base = tmp_path / "base.json"
    assert main(["ci", "baseline", str(runs), "-o", str(base)]) == 0
    assert load_baseline(base)["recipes"]["moco"]["precision"] == "bfloat16"
    same = _fresh(tmp_path, "same", 61.0)
    _set_precision(same, "bfloat16")
    assert {f.status for f in check(same, base)} == {"ok"}
    other = _fresh(tmp_path, "fp32", 61.0)
    _set_precision(other, "fp32")
    (finding,) = check(other, base)
    assert finding.status == "config" and "fp32" in finding.message and "bfloat16" in finding.message
    _res(runs, "moco", 3, 61.0)  # a fourth seed pretrained elsewhere: one baseline, one precision
    _set_precision(runs / "moco" / "smoke-synthetic-s3-abc123", "fp32")
    with pytest.raises(ConfigError, match="several precisions"):
        make_baseline(runs, tmp_path / "b2.json", "smoke", "synthetic")


def _paired(tmp_path: Path) -> Path:
    """moco 60/61/62 and moco_mixup 50/53/56 (pooled std sqrt(5), df 4); reruns: moco seed 0 -> 60.4,
    moco_mixup seed 1 -> 52.8 (rerun differences 0.4 and -0.2: rerun_std sqrt(0.1), 2 pairs)."""
    runs = _runs(tmp_path / "runs")
    for seed, v in enumerate((50.0, 53.0, 56.0)):
        _res(runs, "moco_mixup", seed, v)
    reruns = tmp_path / "reruns"
    _res(reruns, "moco", 0, 60.4)
    _res(reruns, "moco_mixup", 1, 52.8)
    base = tmp_path / "base.json"
    argv = ["ci", "baseline", str(runs), "-o", str(base), "--reruns", str(reruns), "--alpha", "0.01"]
    assert main(argv) == 0
    return base


def test_paired_gate_with_measured_rerun_noise(tmp_path: Path) -> None:
    base = _paired(tmp_path)
    entries = {(e["recipe"], e["task"], e["metric"]): e for e in load_baseline(base)["entries"]}
    moco = entries[("moco", "linear/cifar10", "top1")]
    assert moco["rerun_diffs"] == [[0, pytest.approx(0.4)]]
    assert entries[("moco_mixup", "linear/cifar10", "top1")]["rerun_diffs"] == [[1, pytest.approx(-0.2)]]
    assert moco["rerun_std"] == pytest.approx(math.sqrt((0.4**2 + 0.2**2) / 2)) and moco["rerun_df"] == 2
    assert moco["k_rerun"] == pytest.approx(T_99_2, abs=1e-5)
    paired_tol = max(0.02 * 61.0, T_99_2 * math.sqrt(0.1))  # 2.20: far below the seed-noise tolerance
    seed_tol = T_99_4 * math.sqrt(5) * math.sqrt(1 + 1 / 3)  # 9.675
    assert paired_tolerance(moco) == pytest.approx(paired_tol, abs=1e-4)
    assert tolerance(moco) == pytest.approx(seed_tol, abs=1e-4)

    def top1(name: str, value: float, seed: int = 0) -> Any:
        runs = tmp_path / name
        _res(runs, "moco", seed, value)
        (f,) = [f for f in check(runs, base) if (f.recipe, f.task) == ("moco", "linear/cifar10")]
        return f

    ok = top1("a", 60.0 - paired_tol + 0.1)  # seed 0 is compared with its own stored 60.0
    assert (ok.status, ok.mode, ok.baseline, ok.tolerance) == (
        "ok",
        "paired",
        60.0,
        pytest.approx(paired_tol),
    )
    drift = top1("b", 55.0)  # within seed noise (61 - 9.67) but not a rerun of seed 0 any more
    assert drift.status == "regressed" and "within seed noise (±9.675)" in drift.message
    assert "the seeds no longer reproduce" in drift.message
    broken = top1("c", 45.0)
    assert broken.status == "regressed" and "beyond rerun noise and beyond seed noise" in broken.message
    new_seed = top1("d", 55.0, seed=7)  # not a baseline seed: compared with the seed spread
    assert (new_seed.status, new_seed.mode, new_seed.baseline) == ("ok", "unpaired", 61.0)


def test_reruns_must_match_the_baseline(tmp_path: Path) -> None:
    runs = _runs(tmp_path / "runs")
    other = tmp_path / "other"
    _res(other, "moco", 9, 60.0)  # seed 9 is not a baseline seed
    with pytest.raises(ConfigError, match="no rerun of a baseline seed"):
        make_baseline(runs, tmp_path / "b.json", "smoke", "synthetic", reruns=other)
    changed = tmp_path / "changed"
    _res(changed, "moco", 0, 60.0, config_hash="zzz")
    with pytest.raises(ConfigError, match="moco rerun with another config"):
        make_baseline(runs, tmp_path / "b.json", "smoke", "synthetic", reruns=changed)


def test_baseline_records_the_overrides_that_reproduce_its_config(tmp_path: Path) -> None:
    """A baseline measured with ``--set`` overrides stores them per recipe (and ``bench ci check`` names
    them when results come from another config); the registry's own config stores ``[]``; a config no
    overrides reproduce (here the tests' made-up CONFIG) stores none."""
    sets = ["optim.lr=0.001", "train.epochs=7", "train.precision=fp32"]
    tier = to_dict(resolve_recipe("moco", "smoke", sets))
    plain = to_dict(resolve_recipe("moco_mixup", "smoke"))
    runs = tmp_path / "runs"
    for seed, v in enumerate((60.0, 61.0, 62.0)):
        _res(runs, "moco", seed, v, config=tier, config_hash="tier")
        _res(runs, "moco_mixup", seed, v, config=plain, config_hash="plain")
        _res(runs, "moco_cutout", seed, v)
    doc = make_baseline(runs, tmp_path / "b.json", "smoke", "synthetic")
    assert doc["recipes"]["moco"]["overrides"] == sets
    assert doc["recipes"]["moco_mixup"]["overrides"] == []
    assert "overrides" not in doc["recipes"]["moco_cutout"]
    assert recipe_overrides("moco", "smoke", {**tier, "train": {**tier["train"], "seed": 7}}) == sets
    assert recipe_overrides("no_such_recipe", "smoke", tier) is None
    views = to_dict(resolve_recipe("moco", "smoke", ["augment.views.0.crop_scale=[0.5, 1.0]"]))
    (override,) = recipe_overrides("moco", "smoke", views) or []  # lists are leaves: the whole list
    assert override.startswith("augment.views=[")
    assert to_dict(resolve_recipe("moco", "smoke", [override])) == views
    default = tmp_path / "default"
    _res(default, "moco", 0, 61.0, config=to_dict(resolve_recipe("moco", "smoke")), config_hash="reg")
    (finding,) = [f for f in check(default, tmp_path / "b.json") if f.recipe == "moco"]
    assert finding.status == "config" and "train.epochs: 7 -> 10" in finding.message
    assert "bench run --recipe moco --set optim.lr=0.001 --set train.epochs=7" in finding.message


def test_config_diff_names_keys() -> None:
    new = {**CONFIG, "train": {"seed": 5, "epochs": 25, "lr": 0.01}, "extra": 1}
    assert config_diff(CONFIG, new) == "extra: '<absent>' -> 1; train.lr: 0.003 -> 0.01"


def test_cli_table_junit_and_markdown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs, base = _baseline(tmp_path)
    bad = _fresh(tmp_path, "bad", 40.0)
    junit, md = tmp_path / "out" / "junit.xml", tmp_path / "out" / "check.md"
    assert (
        main(["ci", "check", str(bad), "--baseline", str(base), "--junit", str(junit), "--markdown", str(md)])
        == 1
    )
    out = capsys.readouterr().out
    assert "REGRESSED" in out and "FAILED: 2 ok, 1 failed" in out
    root = ET.parse(junit).getroot()
    (suite,) = root.findall("testsuite")
    assert (suite.get("tests"), suite.get("failures")) == ("3", "1")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert set(cases) == {"linear/cifar10:top1", "invariance:invariance", "invariance:diversity"}
    failure = cases["linear/cifar10:top1"].find("failure")
    assert (
        failure is not None
        and failure.get("type") == "regressed"
        and "worse by 21.000" in failure.get("message", "")
    )
    assert cases["invariance:invariance"].find("failure") is None
    assert all(c.get("classname") == "augbench.moco" for c in cases.values())
    text = md.read_text()
    assert text.startswith("## augbench CI check: FAILED: 2 ok, 1 failed")
    assert "| REGRESSED | moco" in text
    assert main(["ci", "check", str(runs), "--baseline", str(base), "--junit", str(junit)]) == 0
    assert ET.parse(junit).getroot().find("testsuite").get("failures") == "0"  # type: ignore[union-attr]


def test_bad_baseline_file(tmp_path: Path) -> None:
    p = tmp_path / "b.json"
    p.write_text("{}")
    with pytest.raises(ConfigError, match="augbench-baseline/2"):
        load_baseline(p)
    p.write_text(json.dumps({"schema": "augbench-baseline/1", "entries": []}))
    with pytest.raises(
        ConfigError, match=r"schema 'augbench-baseline/1'.*regenerate it with bench ci baseline"
    ):
        load_baseline(p)
    with pytest.raises(ConfigError, match="not found"):
        load_baseline(tmp_path / "nope.json")


def test_repository_baseline_overrides_reproduce_its_configs() -> None:
    """``ci/baselines/smoke.json`` stores, per recipe, the ``--set`` overrides CI reruns it with: under the
    current recipe registry they must still give exactly the stored config (a change of a profile's or a
    method's defaults would otherwise move the gate's runs off the measured tier; recompute them with
    ``ci.baseline.recipe_overrides`` and say so in the baseline's note)."""
    doc = json.loads(BASELINE.read_text())
    for name, spec in doc["recipes"].items():
        assert spec["overrides"] == recipe_overrides(name, doc["profile"], spec["config"]), name
