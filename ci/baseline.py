"""Baselines of the regression gate (``augbench-baseline/2``), written by ``bench ci baseline``.

A baseline holds, for one (profile, data source):

* ``recipes``: per recipe the seedless config hash and the resolved config (``train.seed`` removed) its
  results were produced with (``bench ci check`` fails on a different config and names the changed keys),
  the pretraining ``precision``, and the ``overrides``: the ``--set key=value`` arguments that give this
  config from the recipe registry under the profile (``[]`` for the registry's own config; absent when no
  overrides reproduce it, e.g. a recipe file), so that CI reruns exactly what the baseline measured;
* ``entries``: per (recipe, task, metric) the ``mean``, the seed spread ``std`` (sample standard deviation),
  the number of seeds ``n`` and their ``seeds``/``values``, the ``direction`` (``higher``, ``lower`` or
  ``descriptive``), the ``task_version``, the pooled spread ``pooled_std`` and its degrees of freedom
  ``df``, and the tolerance rule's ``k`` and ``floor``.

Tolerance rule (``docs/leaderboard.md``): for a check over ``m`` current seeds,

    tolerance = max(floor, k * pooled_std * sqrt(1/m + 1/n))
    pooled_std^2 = sum_r (n_r - 1) std_r^2 / df,   df = sum_r (n_r - 1)   over the baseline's recipes
                                                   with this (task, task version, metric)
    k = t(1 - alpha, df) one-sided (higher / lower is better), t(1 - alpha/2, df) two-sided (descriptive)
    floor = max(rel_floor * |mean|, abs_floor)

``pooled_std * sqrt(1/m + 1/n)`` is the standard error of (current mean - baseline mean) when both are means
of independent seeds; the ratio of that difference to it follows Student's t with ``df`` degrees of
freedom, so a healthy run falls beyond the tolerance (on the failing side) with probability ``alpha``.  The
spread is pooled over the recipes of the baseline (they share the task, the metric and the training
budget, so their seed noise is assumed alike): 3 recipes x 5 seeds give 12 degrees of freedom instead of 4,
and a recipe whose few seeds happen to agree does not get a razor-thin gate.  The floor (default 2% of the
mean, at least 0.001) keeps a gate from failing on numerical noise.  Entries need at least
:data:`MIN_SEEDS` seeds: a spread from fewer is no spread.

Paired (rerun) rule: a baseline made with ``--reruns DIR`` (results of the same recipes and config rerun
for some of the baseline's seeds, e.g. with another thread count) also stores each entry's
``rerun_diffs`` (``[seed, rerun - stored]``), the pooled ``rerun_std`` = sqrt(sum d^2 / J) over the J
pairs of its (task, task version, metric) (a rerun difference has mean 0 and variance 2 sigma_rerun^2)
and ``k_rerun`` = the t quantile as above with J degrees of freedom.  When every current seed is one of the
baseline's seeds (CI reruns them), the check compares each seed with its own stored value:

    paired tolerance = max(floor, k_rerun * rerun_std / sqrt(m))

A rerun of a seed differs from its stored value by float-level nondeterminism grown during training, far
less than seeds differ from each other, so this gate is much sharper than the seed-spread one.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

from core.config import flatten, to_dict
from core.errors import BenchError, ConfigError
from core.results import atomic_write_text
from leaderboard.collect import Record, collect
from leaderboard.layouts import shown_metrics
from leaderboard.stats import mean, std, t_quantile

SCHEMA = "augbench-baseline/2"
MIN_SEEDS = 3
ALPHA = 0.005
REL_FLOOR = 0.02
ABS_FLOOR = 0.001
PAIR_KEYS = ("rerun_diffs", "rerun_std", "rerun_df", "k_rerun")
ENTRY_KEYS = ("recipe", "task", "metric", "direction", "mean", "std", "n", "pooled_std", "df", "task_version",
              "k", "floor")  # fmt: skip


def tolerance(entry: dict[str, Any], m: int = 1) -> float:
    """The entry's tolerance for a mean over ``m`` current seeds (see module docstring)."""
    se = float(entry["pooled_std"]) * math.sqrt(1.0 / max(1, m) + 1.0 / int(entry["n"]))
    return max(float(entry["floor"]), float(entry["k"]) * se)


def paired_tolerance(entry: dict[str, Any], m: int = 1) -> float | None:
    """Tolerance for the mean of ``m`` current seeds minus their stored values; ``None`` without reruns."""
    if entry.get("rerun_std") is None:
        return None
    return max(
        float(entry["floor"]), float(entry["k_rerun"]) * float(entry["rerun_std"]) / math.sqrt(max(1, m))
    )


def k_factor(direction: str, df: int, alpha: float) -> float:
    """``t(1 - alpha, df)`` for a one-sided (regression) check, ``t(1 - alpha/2, df)`` for a descriptive
    one (either direction fails)."""
    return t_quantile(1.0 - (alpha / 2.0 if direction == "descriptive" else alpha), df)


def pool(entries: list[dict[str, Any]]) -> None:
    """Set ``pooled_std`` and ``df`` of every entry: pooled over the entries of its (task, task version,
    metric)."""
    groups: dict[tuple[str, int, str], list[dict[str, Any]]] = defaultdict(list)
    for e in entries:
        groups[(e["task"], e["task_version"], e["metric"])].append(e)
    for group in groups.values():
        df = sum(e["n"] - 1 for e in group)
        pooled = math.sqrt(sum((e["n"] - 1) * e["std"] ** 2 for e in group) / df)
        for e in group:
            e["pooled_std"], e["df"] = pooled, df


def seedless_config(config: dict[str, Any]) -> dict[str, Any]:
    """A resolved recipe config without ``train.seed`` (seeds of one config share its hash)."""
    out = json.loads(json.dumps(config))
    if isinstance(out.get("train"), dict):
        out["train"].pop("seed", None)
    return out


def _override_value(value: Any) -> str:
    """``value`` as the right-hand side of ``--set key=value`` (YAML-parsed): bare when YAML reads it back
    unchanged (``10``, ``fp32``), JSON otherwise (JSON is YAML)."""
    text = value if isinstance(value, str) else json.dumps(value)
    try:
        if yaml.safe_load(text) == value:
            return text
    except yaml.YAMLError:
        pass
    return json.dumps(value)


def recipe_overrides(name: str, profile: str, config: dict[str, Any]) -> list[str] | None:
    """The ``--set key=value`` overrides that turn recipe ``name`` of the registry, resolved under
    ``profile``, into ``config`` (a resolved config; ``train.seed`` is ignored), in key order; ``None``
    when ``name`` is not in the registry or no overrides of its keys reproduce ``config`` exactly."""
    from pretrain.recipes import resolve_recipe

    want = seedless_config(config)
    try:
        have = flatten(seedless_config(to_dict(resolve_recipe(name, profile))))
        target = flatten(want)
        if set(have) - set(target):
            return None
        changed = sorted((k, v) for k, v in target.items() if k not in have or have[k] != v)
        overrides = [f"{k}={_override_value(v)}" for k, v in changed]
        if seedless_config(to_dict(resolve_recipe(name, profile, overrides))) != want:
            return None
    except BenchError:
        return None
    return overrides


def add_reruns(
    entries: list[dict[str, Any]], records: list[Record], recipes: dict[str, dict[str, Any]], alpha: float
) -> int:
    """Store the rerun statistics (module docstring) of every entry from rerun ``records``; returns the
    number of (seed, entry) pairs found."""
    wrong = sorted({r.recipe for r in records if r.recipe in recipes
                    and r.doc["recipe"]["config_hash"] != recipes[r.recipe]["config_hash"]})  # fmt: skip
    if wrong:
        raise ConfigError(f"--reruns: {', '.join(wrong)} rerun with another config than the baseline's")
    values = {(r.recipe, r.task, r.version, m, r.seed): r.value(m) for r in records for m in shown_metrics(r)}
    groups: dict[tuple[str, int, str], list[dict[str, Any]]] = defaultdict(list)
    for e in entries:
        key = (e["recipe"], e["task"], e["task_version"], e["metric"])
        e["rerun_diffs"] = [[s, values[(*key, s)] - v] for s, v in zip(e["seeds"], e["values"], strict=True)
                            if (*key, s) in values]  # fmt: skip
        groups[(e["task"], e["task_version"], e["metric"])].append(e)
    pairs = 0
    for group in groups.values():
        diffs = [d for e in group for _, d in e["rerun_diffs"]]
        pairs += len(diffs)
        for e in group:
            if diffs:
                e["rerun_std"] = math.sqrt(sum(d * d for d in diffs) / len(diffs))
                e["rerun_df"] = len(diffs)
                e["k_rerun"] = k_factor(e["direction"], len(diffs), alpha)
            else:
                e["rerun_std"] = e["rerun_df"] = e["k_rerun"] = None
    return pairs


def pretrain_precision(record: Record) -> str | None:
    """The autocast precision ``record``'s backbone was pretrained under (``bfloat16``, ``float16``,
    ``fp32``; ``train.precision: auto`` resolves by hardware, :mod:`core.hardware`), if recorded."""
    value = (record.doc.get("pretrain") or {}).get("precision")
    return str(value) if value else None


def select(root: Path, profile: str, source: str) -> list[Record]:
    return [r for r in collect(root) if r.profile == profile and r.source == source]


def make_baseline(
    root: Path,
    out: Path,
    profile: str,
    source: str,
    *,
    recipes: list[str] | None = None,
    min_seeds: int = MIN_SEEDS,
    alpha: float = ALPHA,
    rel_floor: float = REL_FLOOR,
    abs_floor: float = ABS_FLOOR,
    note: str = "",
    reruns: Path | None = None,
) -> dict[str, Any]:
    """Write a baseline from the results of (profile, source) under ``root`` (and the rerun statistics
    from ``reruns``, see the module docstring); returns the document."""
    records = [r for r in select(root, profile, source) if recipes is None or r.recipe in recipes]
    if not records:
        raise ConfigError(f"no results for profile {profile!r} and data source {source!r} under {root}")
    configs: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in records:
        configs[r.recipe][r.identity] = {
            "config_hash": r.doc["recipe"]["config_hash"],
            "config": seedless_config(r.doc["recipe"]["config"]),
        }
    several = {name: len(ids) for name, ids in configs.items() if len(ids) > 1}
    if several:
        raise ConfigError(
            "results under several configs (or variant stores) for "
            + ", ".join(f"{n} ({k})" for n, k in sorted(several.items()))
            + ": use a clean runs directory or --recipes"
        )
    groups: dict[tuple[str, str, int, str], list[Record]] = defaultdict(list)
    for r in records:
        for metric in shown_metrics(r):
            groups[(r.recipe, r.task, r.version, metric)].append(r)
    entries: list[dict[str, Any]] = []
    short: list[str] = []
    for (recipe, task, version, metric), recs in sorted(groups.items()):
        by_seed = {r.seed: r.value(metric) for r in recs}
        values = [by_seed[s] for s in sorted(by_seed)]
        if not all(math.isfinite(v) for v in values):
            raise ConfigError(f"{recipe} {task} {metric}: non-finite values {values}; fix the runs first")
        if len(values) < min_seeds:
            short.append(f"{recipe} {task} ({len(values)}: seeds {sorted(by_seed)})")
            continue
        m, s, n = mean(values), std(values), len(values)
        entry: dict[str, Any] = {
            "recipe": recipe,
            "task": task,
            "metric": metric,
            "direction": recs[0].direction(metric),
            "mean": m,
            "std": s,
            "n": n,
            "seeds": sorted(by_seed),
            "values": values,
            "task_version": version,
            "floor": max(rel_floor * abs(m), abs_floor),
        }
        entries.append(entry)
    pool(entries)
    for e in entries:
        e["k"] = k_factor(e["direction"], e["df"], alpha)
        e["tolerance"] = tolerance(e)
    if short:
        shown = "; ".join(short[:4]) + (f"; ... ({len(short)} entries)" if len(short) > 4 else "")
        raise ConfigError(
            f"a baseline needs at least {min_seeds} seeds per entry, got fewer for {shown}; "
            f"run e.g. bench run --recipe {short[0].split()[0]} --seeds 0,1,2 --tasks ..."
        )
    recipe_configs = {name: next(iter(ids.values())) for name, ids in sorted(configs.items())}
    for name, spec in recipe_configs.items():
        precisions = {p for r in records if r.recipe == name and (p := pretrain_precision(r))}
        if len(precisions) > 1:
            raise ConfigError(f"{name}: results pretrained under several precisions {sorted(precisions)}")
        if precisions:
            spec["precision"] = precisions.pop()
        overrides = recipe_overrides(name, profile, spec["config"])
        if overrides is not None:
            spec["overrides"] = overrides
    if reruns is not None:
        rerun_records = [r for r in select(reruns, profile, source) if r.recipe in recipe_configs]
        if not add_reruns(entries, rerun_records, recipe_configs, alpha):
            raise ConfigError(
                f"--reruns {reruns}: no rerun of a baseline seed found (same recipes and seeds)"
            )
    doc = {
        "schema": SCHEMA,
        "profile": profile,
        "data_source": source,
        "rule": {
            "alpha": alpha,
            "rel_floor": rel_floor,
            "abs_floor": abs_floor,
            "min_seeds": min_seeds,
            "tolerance": "max(floor, k * pooled_std * sqrt(1/m + 1/n)); pooled_std over the recipes with the "
            "same (task, task version, metric), df = sum(n_r - 1); k = t(1 - alpha, df) one-sided, "
            "t(1 - alpha/2, df) for descriptive metrics; floor = max(rel_floor * |mean|, abs_floor)",
            "paired_tolerance": "max(floor, k_rerun * rerun_std / sqrt(m)) when every current seed is a "
            "baseline seed and reruns were measured; rerun_std = sqrt(sum d^2 / J) over the J rerun pairs of "
            "the (task, task version, metric), k_rerun = the t quantile with J degrees of freedom",
        },
        "note": note,
        "recipes": recipe_configs,
        "entries": entries,
    }
    atomic_write_text(out, json.dumps(doc, indent=2) + "\n")
    return doc


def load_baseline(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"baseline file not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: invalid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        found = doc.get("schema") if isinstance(doc, dict) else None
        raise ConfigError(
            f"{path}: not an {SCHEMA} file (schema {found!r}); regenerate it with "
            f"bench ci baseline RUNS -o {path} from runs with >= {MIN_SEEDS} seeds"
        )
    for key in ("profile", "data_source", "recipes", "entries"):
        if key not in doc:
            raise ConfigError(f"{path}: lacks {key!r}")
    for i, e in enumerate(doc["entries"]):
        for key in ENTRY_KEYS:
            if key not in e:
                raise ConfigError(f"{path}: entries[{i}] lacks {key!r}")
        if e["recipe"] not in doc["recipes"]:
            raise ConfigError(f"{path}: entries[{i}] names recipe {e['recipe']!r} absent from 'recipes'")
    return doc
