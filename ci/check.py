"""The regression gate: current results vs a stored baseline (:mod:`ci.baseline`).

``bench ci check`` fails (exit 1) when any finding fails:

``regressed``   a metric with a better direction is worse than the baseline mean by more than the tolerance;
``changed``     a descriptive metric (invariance, CKA, ...) moved by more than the tolerance either way;
``nonfinite``   a result of a baseline recipe holds a NaN or infinite metric;
``missing``     no current result for a baseline entry;
``version``     the current result has another task version (scores are not comparable);
``config``      the recipe's results were produced with another resolved config than the baseline's
                (a silent protocol change), the changed keys named.

Passing statuses: ``ok`` and ``improved`` (better than the tolerance: consider regenerating the baseline).
Results are the (profile, data source) of the baseline; a recipe's results under the baseline's config
hash are compared when present, otherwise its newest config is diffed against the baseline's.

Mode ``paired`` (every current seed is a baseline seed and the baseline measured rerun noise): the mean
difference of each current seed to its own stored value against :func:`ci.baseline.paired_tolerance`;
otherwise mode ``unpaired``: the current mean against the baseline mean with :func:`ci.baseline.tolerance`.
A paired failure says whether the value is also outside seed noise (a regression) or only outside rerun
noise (the seed no longer reproduces: a regression, or a change of the random stream).
"""

from __future__ import annotations

import shlex
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ci.baseline import (
    load_baseline,
    paired_tolerance,
    pretrain_precision,
    seedless_config,
    select,
    tolerance,
)
from core.config import flatten
from leaderboard.collect import Record
from leaderboard.stats import mean

FAILING = ("regressed", "changed", "nonfinite", "missing", "version", "config")


@dataclass(frozen=True)
class Finding:
    recipe: str
    task: str
    metric: str
    status: str
    message: str = ""
    baseline: float | None = None
    baseline_std: float | None = None
    baseline_n: int | None = None
    current: float | None = None
    current_n: int = 0
    tolerance: float | None = None
    mode: str = ""  # "paired" (seeds compared with their own stored values) or "unpaired"
    seeds: tuple[int, ...] = ()  # the current seeds

    @property
    def failed(self) -> bool:
        return self.status in FAILING

    @property
    def delta(self) -> float | None:
        return None if self.current is None or self.baseline is None else self.current - self.baseline


def config_diff(old: dict[str, Any], new: dict[str, Any], limit: int = 6) -> str:
    """``train.epochs: 25 -> 20; augment.stages: [...] -> [...]`` (dotted keys, first ``limit``)."""
    a, b = flatten(seedless_config(old)), flatten(seedless_config(new))
    keys = sorted(k for k in set(a) | set(b) if a.get(k, "<absent>") != b.get(k, "<absent>"))
    parts = [f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}" for k in keys[:limit]]
    return "; ".join(parts) + (f"; ... ({len(keys)} keys)" if len(keys) > limit else "")


def _recipe_records(
    records: list[Record], name: str, spec: dict[str, Any]
) -> tuple[list[Record], Finding | None]:
    """The records of recipe ``name`` under the baseline's config, or a ``config`` finding."""
    mine = [r for r in records if r.recipe == name]
    same = [r for r in mine if r.doc["recipe"]["config_hash"] == spec["config_hash"]]
    wanted = spec.get("precision")
    matching = [r for r in same if not wanted or pretrain_precision(r) in (wanted, None)]
    if same and not matching:
        got = sorted({str(pretrain_precision(r)) for r in same})
        msg = (
            f"pretrained under {', '.join(got)} autocast, the baseline under {wanted} (train.precision auto "
            "resolves by hardware: bf16 only on CPUs with native bf16); compare on the baseline's hardware "
            "class or regenerate the baseline here"
        )
        return [], Finding(name, "*", "*", "config", msg)
    if matching or not mine:
        return matching, None
    newest = max(mine, key=lambda r: r.doc["created"])
    diff = config_diff(spec["config"], newest.doc["recipe"]["config"])
    msg = (
        f"results were produced with another config (hash {newest.doc['recipe']['config_hash']} vs "
        f"baseline {spec['config_hash']}): {diff or 'same keys, different hash'}"
    )
    if spec.get("overrides"):
        msg += (
            "; the baseline's runs: bench run --recipe "
            + name
            + "".join(f" --set {shlex.quote(o)}" for o in spec["overrides"])
        )
    return [], Finding(name, "*", "*", "config", msg)


def _entry(e: dict[str, Any], recs: list[Record]) -> Finding:
    base: dict[str, Any] = {
        "baseline": float(e["mean"]),
        "baseline_std": float(e["std"]),
        "baseline_n": int(e["n"]),
    }
    key = (e["recipe"], e["task"], e["metric"])
    task_recs = [r for r in recs if r.task == e["task"]]
    at_version = [r for r in task_recs if r.version == int(e["task_version"])]
    others = sorted({r.version for r in task_recs} - {int(e["task_version"])})
    if others:
        msg = f"task version {others} vs baseline {e['task_version']}: regenerate the baseline"
        return Finding(*key, "version", msg, **base)
    cur = {r.seed: r.value(e["metric"]) for r in at_version if e["metric"] in r.doc["metrics"]}
    if not cur:
        return Finding(*key, "missing", "no current result", **base)
    bad = sorted({f"{m} in seed {r.seed}" for r in at_version for m in r.nonfinite()})
    if bad:
        msg = "non-finite metric: " + ", ".join(bad)
        return Finding(*key, "nonfinite", msg, **base, current_n=len(cur))
    stored = dict(zip(e["seeds"], e["values"], strict=True))
    unpaired_tol, unpaired_d = tolerance(e, len(cur)), mean(list(cur.values())) - float(e["mean"])
    paired_tol = paired_tolerance(e, len(cur)) if set(cur) <= set(stored) else None
    if paired_tol is None:
        mode, ref, tol, d = "unpaired", float(e["mean"]), unpaired_tol, unpaired_d
    else:
        ref = mean([stored[s] for s in cur])
        mode, tol, d = "paired", paired_tol, mean(list(cur.values())) - ref
    status, msg = _judge(e["direction"], d, tol)
    if status in ("regressed", "changed") and mode == "paired":
        beyond = _judge(e["direction"], unpaired_d, unpaired_tol)[0] == status
        msg += f"; seeds {sorted(cur)} vs their stored values, beyond rerun noise" + (
            f" and beyond seed noise (±{unpaired_tol:.3f})"
            if beyond
            else f" but within seed noise (±{unpaired_tol:.3f}): the seeds no longer reproduce; "
            "if the random stream changed on purpose, regenerate the baseline"
        )
    base["baseline"] = ref
    return Finding(
        *key, status, msg, **base, current=ref + d, current_n=len(cur), tolerance=tol, mode=mode,
        seeds=tuple(sorted(cur)),
    )  # fmt: skip


def _judge(direction: str, d: float, tol: float) -> tuple[str, str]:
    """Status and message of a difference ``d`` (current - reference) against ``tol``."""
    if direction == "descriptive":
        if abs(d) > tol:
            return "changed", f"descriptive metric moved by {d:+.3f}, more than ±{tol:.3f}"
        return "ok", ""
    worse = -d if direction == "higher" else d
    if worse > tol:
        return "regressed", f"worse by {worse:.3f} > tolerance {tol:.3f}"
    if -worse > tol:
        return "improved", "better than the tolerance: consider regenerating the baseline"
    return "ok", ""


def check(root: Path, baseline_path: Path) -> list[Finding]:
    base = load_baseline(baseline_path)
    records = select(root, base["profile"], base["data_source"])
    findings: list[Finding] = []
    by_recipe: dict[str, list[Record]] = {}
    for name, spec in base["recipes"].items():
        recs, problem = _recipe_records(records, name, spec)
        by_recipe[name] = recs
        if problem:
            findings.append(problem)
    for e in base["entries"]:
        if any(f.status == "config" and f.recipe == e["recipe"] for f in findings):
            continue
        findings.append(_entry(e, by_recipe[e["recipe"]]))
    gated = defaultdict(set)
    for e in base["entries"]:
        gated[e["recipe"]].add(e["task"])
    for name, recs in by_recipe.items():  # non-finite metrics in results the baseline does not list
        for r in recs:
            if r.task not in gated[name] and r.nonfinite():
                msg = f"non-finite metric: {', '.join(r.nonfinite())} in seed {r.seed}"
                findings.append(Finding(name, r.task, ",".join(r.nonfinite()), "nonfinite", msg))
    return findings
