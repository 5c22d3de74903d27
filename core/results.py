"""Result files: one JSON document per (recipe run, task, seed), written atomically.

Schema ``augbench-result/1`` (all keys always present)::

    schema            "augbench-result/1"
    recipe            {name, config (the resolved RecipeConfig), config_hash (of the config without
                      train.seed: results of one config with different seeds share it)}
    task              {name, version, family, protocol (dict)}
    metrics           {metric name: float}
    primary_metric    name of the metric leaderboards and CI gates use
    higher_is_better  {metric name: true | false | null}; null = a *descriptive* metric (invariance,
                      diversity, CKA, OPD): it describes the representation and has no better direction,
                      so leaderboards never mark a best value for it and the CI gate checks it both ways.
                      Files written before null existed say true/false for them: :func:`metric_direction`
                      treats the families in ``DESCRIPTIVE_FAMILIES`` as descriptive whatever the file says.
    details           task-specific extras (e.g. selected probe hyper-parameters)
    seed, profile
    data              {source: "synthetic" | "real", root, datasets: {name: "synthetic" | "real"}}
    provenance        {code_version, libraries, hardware}
    timings           {pretrain_seconds, task_seconds}
    pretrain          the pretraining summary (steps, images/s, final loss, ...)
    created           ISO-8601 UTC timestamp

The leaderboard and the CI gate read nothing but these files.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from core.fsutil import atomic_path

Direction = Literal["higher", "lower", "descriptive"]

#: Task families whose metrics are descriptive (also for result files written before ``null`` existed).
DESCRIPTIVE_FAMILIES = ("invariance", "cka", "opd")

SCHEMA = "augbench-result/1"
REQUIRED = (
    "schema",
    "recipe",
    "task",
    "metrics",
    "primary_metric",
    "higher_is_better",
    "details",
    "seed",
    "profile",
    "data",
    "provenance",
    "timings",
    "pretrain",
    "created",
)


@dataclass(frozen=True)
class Result:
    """A loaded result file (the raw document plus its path)."""

    path: Path
    doc: dict[str, Any]

    @property
    def recipe(self) -> str:
        return str(self.doc["recipe"]["name"])

    @property
    def config_hash(self) -> str:
        return str(self.doc["recipe"]["config_hash"])

    @property
    def task(self) -> str:
        return str(self.doc["task"]["name"])

    @property
    def primary(self) -> float:
        return float(self.doc["metrics"][self.doc["primary_metric"]])

    @property
    def higher_is_better(self) -> bool | None:
        """The primary metric's direction as stored (``None``: descriptive)."""
        value = self.doc["higher_is_better"][self.doc["primary_metric"]]
        return None if value is None else bool(value)

    def direction(self, metric: str) -> Direction:
        return metric_direction(self.doc, metric)


def metric_direction(doc: dict[str, Any], metric: str) -> Direction:
    """``"higher"`` / ``"lower"`` is better, or ``"descriptive"`` (``higher_is_better`` null, or a task
    family listed in :data:`DESCRIPTIVE_FAMILIES`: files written before null existed stored true)."""
    value = doc["higher_is_better"].get(metric)
    if value is None or doc["task"].get("family") in DESCRIPTIVE_FAMILIES:
        return "descriptive"
    return "higher" if value else "lower"


def validate(doc: dict[str, Any]) -> None:
    """Raise ``ValueError`` if ``doc`` is not a schema-1 result document."""
    if doc.get("schema") != SCHEMA:
        raise ValueError(f"unsupported schema {doc.get('schema')!r} (expected {SCHEMA})")
    missing = [k for k in REQUIRED if k not in doc]
    if missing:
        raise ValueError(f"missing keys: {', '.join(missing)}")
    if doc["primary_metric"] not in doc["metrics"]:
        raise ValueError(f"primary metric {doc['primary_metric']!r} not among metrics")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file + fsync + rename (never a partial file); a failed
    write (e.g. a full disk) removes its temporary file and re-raises."""
    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def write_result(path: Path, doc: dict[str, Any]) -> Path:
    validate(doc)
    atomic_write_text(path, json.dumps(doc, indent=2, sort_keys=False) + "\n")
    return path


def iter_results(root: Path, *, warn: bool = True) -> Iterator[Result]:
    """Every valid result file under ``root`` (``**/results/*.json``); invalid files are reported."""
    for path in sorted(root.glob("**/results/*.json")):
        try:
            doc = json.loads(path.read_text())
            validate(doc)
        except (OSError, ValueError) as exc:
            if warn:
                print(f"warning: skipping {path}: {exc}", file=sys.stderr)
            continue
        yield Result(path, doc)
