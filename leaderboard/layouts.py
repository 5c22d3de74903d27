"""Layouts: records -> tables (rules in ``docs/leaderboard.md``).

``families`` (default)
    One table per task family group (linear, kNN, augmented linear, detection, instance segmentation,
    semantic segmentation, representation = invariance + CKA + OPD) and per (profile, data source,
    backend, task version): tables never mix them.  Rows = recipe rows, columns = the family's metrics
    per task (:data:`FAMILY_METRICS`; other families: the primary metric), with each row's paired-seed
    delta to its baseline recipe (:func:`baseline_recipe`).
``paper:2310.18850``, ``paper:2403.05966``
    The two source papers' tables (:mod:`leaderboard.paper`).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable

from core.errors import UnknownNameError
from leaderboard.collect import Record
from leaderboard.model import Cell, Column, Row, Table, build_table

LAYOUTS = ("families", "paper:2310.18850", "paper:2403.05966")

#: family group -> title; families outside this map get their own group titled by name.
GROUP_TITLES = {
    "linear": "Linear probe (frozen features)",
    "knn": "kNN (frozen features)",
    "linear-aug": "Augmented linear evaluation",
    "det": "Object detection",
    "instseg": "Instance segmentation",
    "seg": "Semantic segmentation",
    "representation": "Representation metrics (descriptive)",
}
FAMILY_GROUPS = {"invariance": "representation", "cka": "representation", "opd": "representation"}
#: metrics shown per task of a family, when the result has them (else the primary metric)
FAMILY_METRICS = {
    "det": ("AP50", "AP", "AP75"),
    "instseg": ("bbox_AP", "segm_AP"),
    "seg": ("mIoU",),
    "invariance": ("invariance", "diversity"),
    "cka": ("cka",),
    "opd": ("opd",),
}
DATASET_ORDER = ("imagenet", "food101", "cifar10", "cifar100", "places365", "inat2018")
DATASET_TITLES = {
    "imagenet": "ImageNet",
    "food101": "Food-101",
    "cifar10": "CIFAR-10",
    "cifar100": "CIFAR-100",
    "places365": "Places365",
    "inat2018": "iNat2018",
}


def check_layout(name: str) -> str:
    if name not in LAYOUTS:
        raise UnknownNameError("layout", name, LAYOUTS)
    return name


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower()


def baseline_recipe(name: str) -> str | None:
    """The baseline of a registered recipe: its method and regime without the generative source and the
    augmentation (``moco_mixup`` -> ``moco``, ``simclr_sd`` -> ``simclr``, ``moco_semi_sd_mixup`` ->
    ``moco_semi``); ``None`` for a baseline itself, an unregistered name or an external checkpoint."""
    from pretrain.recipes import RECIPES

    if name not in RECIPES:
        return None
    entry = RECIPES.get(name)
    if not (entry.gen or entry.aug):
        return None
    return "_".join([entry.method, *([entry.regime] if entry.regime else [])])


def _recipe_order(name: str) -> tuple[int, str]:
    from pretrain.recipes import RECIPES

    names = RECIPES.names()
    return (names.index(name), "") if name in RECIPES else (len(names), name)


def _short_task(task: str, family: str) -> str:
    """``linear/cifar10`` -> ``cifar10``; ``det/voc07@detectron2`` -> ``voc07`` (backend in the caption)."""
    short = task.split("/", 1)[1] if task.startswith(f"{family}/") else task
    return short.split("@", 1)[0]


def _task_order(task: str) -> tuple[int, str]:
    tail = task.split("/", 1)[-1].split("@", 1)[0].split(":", 1)[0]
    return (DATASET_ORDER.index(tail), task) if tail in DATASET_ORDER else (len(DATASET_ORDER), task)


def generative_notes(rows: Iterable[Row]) -> list[str]:
    """One line per generative row: generator, store manifest digest, p and views (arXiv 2403.05966)."""
    lines = []
    for row in rows:
        gen = row.generative
        if not gen:
            continue
        kind = "ORACLE re-renderings of the synthetic stand-in" if gen.get("oracle") else gen["generator"]
        lines.append(
            f"`{row.label}`: variants from {kind} (store digest `{gen['digest']}`, "
            f"{gen['per_image']} per image), p = {gen['p']} on views {gen['views']}"
        )
    return lines


def cell_values(
    records: Iterable[Record], key: Callable[[Record], Iterable[tuple[str, str, str]]]
) -> dict[tuple[str, str], Cell]:
    """``(row label, column key) -> Cell`` from ``key(record) -> [(row label, column key, metric)]``."""
    seeds: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    for rec in records:
        for label, col, metric in key(rec):
            seeds[(label, col)][rec.seed] = rec.value(metric)
    return {k: Cell.from_seeds(v) for k, v in seeds.items()}


def _row(rec: Record, labels: set[str], **kw: str) -> Row:
    base = baseline_recipe(rec.recipe)
    return Row(rec.label, rec.recipe, rec.oracle, rec.generative, base if base in labels else None, **kw)


def run_dirs_of(records: Iterable[Record]) -> dict[str, list[str]]:
    dirs: dict[str, set[str]] = defaultdict(set)
    for rec in records:
        dirs[rec.label].add(str(rec.run_dir))
    return {k: sorted(v) for k, v in dirs.items()}


def shown_metrics(rec: Record) -> list[str]:
    """The metrics of ``rec`` that tables show (and the CI gate checks): :data:`FAMILY_METRICS`, else the
    primary metric."""
    wanted = FAMILY_METRICS.get(rec.family)
    shown = [m for m in wanted if m in rec.doc["metrics"]] if wanted else []
    return shown or [str(rec.doc["primary_metric"])]


def families(records: list[Record]) -> list[Table]:
    groups: dict[tuple[str, str, str, str, int], list[Record]] = defaultdict(list)
    for rec in records:
        group = FAMILY_GROUPS.get(rec.family, rec.family)
        groups[(rec.profile, rec.source, group, rec.backend, rec.version)].append(rec)
    order = list(GROUP_TITLES)
    tables = []
    for (profile, source, group, backend, version), recs in sorted(
        groups.items(), key=lambda kv: (kv[0][:2], order.index(kv[0][2]) if kv[0][2] in order else 99, kv[0])
    ):
        columns: dict[str, Column] = {}
        for rec in sorted(recs, key=lambda r: _task_order(r.task)):
            metrics = shown_metrics(rec)
            short = _short_task(rec.task, rec.family)
            for m in metrics:
                header = m if short == rec.family else short + (f" {m}" if len(metrics) > 1 else "")
                columns.setdefault(
                    f"{rec.task}|{m}",
                    Column(
                        f"{rec.task}|{m}",
                        header,
                        rec.task,
                        m,
                        rec.direction(m),
                        rec.protocol,
                        backend,
                        version,
                    ),
                )
        labels = {r.label for r in recs}
        first: dict[str, Record] = {}
        for rec in sorted(recs, key=lambda r: (_recipe_order(r.recipe), r.label)):
            first.setdefault(rec.label, rec)
        rows = [_row(rec, labels) for rec in first.values()]
        values = cell_values(recs, lambda r: [(r.label, f"{r.task}|{m}", m) for m in shown_metrics(r)])
        tables.append(
            build_table(
                rows,
                list(columns.values()),
                values,
                id=slug(f"{profile}-{source}-{group}-{backend}-v{version}"),
                title=GROUP_TITLES.get(group, group),
                profile=profile,
                data_source=source,
                family=group,
                backends=[backend],
                notes=generative_notes(rows),
                run_dirs=run_dirs_of(recs),
            )
        )
    return tables


def build_layout(name: str, records: list[Record]) -> list[Table]:
    """The tables of layout ``name`` (one of :data:`LAYOUTS`)."""
    from leaderboard.paper import paper_2310_18850, paper_2403_05966

    check_layout(name)
    if name == "families":
        return families(records)
    return paper_2310_18850(records) if name == "paper:2310.18850" else paper_2403_05966(records)
