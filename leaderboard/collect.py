"""Collect result files into cells: (profile, data source) -> recipe row -> task column -> seeds.

Tables never mix profiles or data sources: each (profile, data source) pair is its own table.  Within a
table, a recipe that was run with more than one resolved config (e.g. different ``--set`` overrides)
gets one row per config, labelled with the config hash; a generative recipe's variant store (its manifest
digest, ``recipe.generative`` in results) is part of that identity.  When a (row, task, seed) has several
result files, the newest (``created``) wins.  ``Table.generative`` keeps each generative row's
generator, oracle flag, store digest and p for the table's notes.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.results import Result, iter_results


@dataclass(frozen=True)
class Cell:
    """All seeds of one (row, task): values of the primary metric."""

    values: tuple[float, ...]
    metric: str
    higher_is_better: bool
    task_version: int

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0


@dataclass(frozen=True)
class Table:
    profile: str
    data_source: str
    rows: dict[str, dict[str, Cell]]  # row label -> task name -> cell
    generative: dict[str, dict[str, Any]] = field(default_factory=dict)  # row label -> recipe.generative

    @property
    def tasks(self) -> list[str]:
        return sorted({t for cells in self.rows.values() for t in cells})


def _short(identity: str) -> str:
    """``cfg abcdef`` or, for a generative recipe, ``cfg abcdef, store 123456``."""
    chash, _, digest = identity.partition("+")
    return f"cfg {chash[:6]}" + (f", store {digest[:6]}" if digest else "")


def collect(root: Path) -> list[Table]:
    """Group every result under ``root`` into tables (see module docstring)."""
    latest: dict[tuple[str, str, str, str, str, int], Result] = {}
    for res in iter_results(root):
        d = res.doc
        gen = d["recipe"].get("generative")
        identity = res.config_hash + (f"+{gen['digest']}" if gen else "")
        key = (d["profile"], d["data"]["source"], res.recipe, identity, res.task, int(d["seed"]))
        if key not in latest or d["created"] >= latest[key].doc["created"]:
            latest[key] = res
    hashes: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for profile, source, recipe, chash, _, _ in latest:
        hashes[(profile, source, recipe)].add(chash)
    grouped: dict[tuple[str, str], dict[str, dict[str, list[Result]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    for (profile, source, recipe, chash, task, _), res in latest.items():
        label = recipe if len(hashes[(profile, source, recipe)]) == 1 else f"{recipe} ({_short(chash)})"
        grouped[(profile, source)][label][task].append(res)
    tables = []
    for (profile, source), rows in sorted(grouped.items()):
        cells = {}
        generative = {}
        for label, tasks in sorted(rows.items()):
            first = next(iter(tasks.values()))[0].doc["recipe"].get("generative")
            if first:
                generative[label] = first
            cells[label] = {
                task: Cell(
                    values=tuple(r.primary for r in sorted(results, key=lambda r: r.doc["seed"])),
                    metric=results[0].doc["primary_metric"],
                    higher_is_better=results[0].higher_is_better,
                    task_version=int(results[0].doc["task"]["version"]),
                )
                for task, results in sorted(tasks.items())
            }
        tables.append(Table(profile, source, cells, generative))
    return tables
