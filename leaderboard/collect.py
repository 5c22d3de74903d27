"""Collect result files into records: one per (row, task, task version, backend, seed).

A *row* is a recipe run under one identity: its seedless config hash (``recipe.config_hash``) plus, for a
generative recipe, its variant store's manifest digest (``recipe.generative.digest``).  A recipe with more
than one identity under the same (profile, data source) gets one row per identity, labelled
``recipe (cfg abcdef[, store 123456])``; otherwise the row is the recipe's name.  When a (row, task,
task version, backend, seed) has several result files, the newest (``created``) wins.  Layouts
(:mod:`leaderboard.layouts`) turn records into tables; they never mix profiles, data sources, task
versions or backends.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.results import Direction, Result, iter_results

#: Label of tasks whose protocol names no backend / framework (frozen features, computed in-process).
IN_PROCESS = "in-process (PyTorch)"


def backend_of(doc: dict[str, Any]) -> str:
    """The protocol's ``backend`` (detection: detectron2 / torchvision) or ``framework`` (mmsegmentation)."""
    proto = doc["task"].get("protocol") or {}
    return str(proto.get("backend") or proto.get("framework") or IN_PROCESS)


def identity_of(doc: dict[str, Any]) -> str:
    gen = doc["recipe"].get("generative")
    return str(doc["recipe"]["config_hash"]) + (f"+{gen['digest']}" if gen else "")


def _short(identity: str) -> str:
    """``cfg abcdef`` or, for a generative recipe, ``cfg abcdef, store 123456``."""
    chash, _, digest = identity.partition("+")
    return f"cfg {chash[:6]}" + (f", store {digest[:6]}" if digest else "")


@dataclass(frozen=True)
class Record:
    """One result file (newest of its key) and the label of its leaderboard row."""

    result: Result
    label: str

    @property
    def doc(self) -> dict[str, Any]:
        return self.result.doc

    @property
    def recipe(self) -> str:
        return self.result.recipe

    @property
    def task(self) -> str:
        return self.result.task

    @property
    def family(self) -> str:
        return str(self.doc["task"].get("family") or self.task.split("/")[0])

    @property
    def version(self) -> int:
        return int(self.doc["task"]["version"])

    @property
    def seed(self) -> int:
        return int(self.doc["seed"])

    @property
    def profile(self) -> str:
        return str(self.doc["profile"])

    @property
    def source(self) -> str:
        return str(self.doc["data"]["source"])

    @property
    def backend(self) -> str:
        return backend_of(self.doc)

    @property
    def protocol(self) -> str:
        """The protocol's ``name`` (segmentation protocols: their ``model``, e.g. ``fcn``)."""
        proto = self.doc["task"].get("protocol") or {}
        return str(proto.get("name") or proto.get("model") or "unnamed")

    @property
    def identity(self) -> str:
        return identity_of(self.doc)

    @property
    def generative(self) -> dict[str, Any] | None:
        gen = self.doc["recipe"].get("generative")
        return dict(gen) if gen else None

    @property
    def oracle(self) -> bool:
        gen = self.generative
        return bool(gen and gen.get("oracle"))

    @property
    def run_dir(self) -> Path:
        """The run (or eval output) directory: ``<run>/results/<task>.json``."""
        return self.result.path.parent.parent

    def value(self, metric: str) -> float:
        return float(self.doc["metrics"][metric])

    def direction(self, metric: str) -> Direction:
        return self.result.direction(metric)

    def nonfinite(self) -> list[str]:
        """Names of metrics whose value is NaN or infinite (or not a number at all)."""
        bad = []
        for name, v in self.doc["metrics"].items():
            try:
                ok = math.isfinite(float(v))
            except (TypeError, ValueError):
                ok = False
            if not ok:
                bad.append(name)
        return bad


def collect(root: Path, *, warn: bool = True, keep: Callable[[Result], bool] | None = None) -> list[Record]:
    """Every result under ``root`` as records (newest file per key, rows labelled; see module docstring).

    ``keep`` selects result files *before* the newest-per-key choice and the labelling (a study keeps its
    own cells: a newer result of another data root must not hide one of them)."""
    latest: dict[tuple[Any, ...], Result] = {}
    for res in iter_results(root, warn=warn):
        if keep is not None and not keep(res):
            continue
        d = res.doc
        key = (
            d["profile"],
            d["data"]["source"],
            res.recipe,
            identity_of(d),
            res.task,
            int(d["task"]["version"]),
            backend_of(d),
            int(d["seed"]),
        )
        if key not in latest or d["created"] >= latest[key].doc["created"]:
            latest[key] = res
    identities: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for profile, source, recipe, identity, *_ in latest:
        identities[(profile, source, recipe)].add(identity)
    records = []
    for (profile, source, recipe, identity, *_), res in sorted(latest.items(), key=lambda kv: kv[0]):
        several = len(identities[(profile, source, recipe)]) > 1
        records.append(Record(res, f"{recipe} ({_short(identity)})" if several else recipe))
    return records
