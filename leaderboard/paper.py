"""The paper layouts (rules in ``docs/leaderboard.md``).

``paper:2310.18850``
    MoCo v2 rows none / erasing / cutout / cutmix / mixup grouped by regime (self-supervised,
    semi-supervised, supervised); columns ImageNet-100 top-1 (the paper's pretraining set),
    ImageNet top-1, Linv, Ldiv, detection AP, instance-seg AP,
    semantic-seg mIoU.  One table per (profile, data source).
``paper:2403.05966``
    Rows method x {baseline, +IC-GAN, +SD} (+ the oracle's rows when they have results, marked
    ``[ORACLE]``); columns the six linear-probe datasets.  One table per (profile, data source, linear
    protocol family: ``linear`` cached features, ``linear-aug`` the augmented protocol).

A section (regime, method) appears when one of its recipes has a result in the table's columns; its other
rows then show as missing.  A column matching several tasks (two backends, two segmentation datasets,
two task versions) becomes one column per task, named in its header: nothing shares a column.  A recipe
with results under several configs (or variant stores) has its cells left missing, with a note.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from leaderboard.collect import Record
from leaderboard.layouts import (
    DATASET_ORDER,
    DATASET_TITLES,
    baseline_recipe,
    cell_values,
    generative_notes,
    run_dirs_of,
    slug,
)
from leaderboard.model import Column, Row, Table, build_table


@dataclass(frozen=True)
class PaperColumn:
    header: str
    match: Callable[[Record], bool]
    metric: str


def _paper_table(
    records: list[Record],
    sections: list[tuple[str, list[tuple[str, str]]]],
    specs: list[PaperColumn],
    **meta: Any,
) -> Table | None:
    """Rows ``sections = [(section, [(row name, recipe)])]`` x columns ``specs`` (see module docstring)."""
    wanted = {recipe for _, rows in sections for _, recipe in rows}
    recs = [r for r in records if r.recipe in wanted and any(spec.match(r) for spec in specs)]
    labels_of: dict[str, set[str]] = defaultdict(set)
    for r in recs:
        labels_of[r.recipe].add(r.label)
    unique = {recipe for recipe, labels in labels_of.items() if labels == {recipe}}
    notes = [
        f"`{recipe}` has results under several configs or variant stores ({', '.join(sorted(ls))}): "
        "its cells show as missing here (see the families layout)"
        for recipe, ls in sorted(labels_of.items())
        if recipe not in unique
    ]
    columns: list[Column] = []
    picked: dict[str, tuple[PaperColumn, str, int]] = {}
    for spec in specs:
        matches = sorted({(r.task, r.backend, r.version) for r in recs if spec.match(r)}, key=lambda m: m)
        for task, backend, version in matches:
            header = spec.header
            if len(matches) > 1:
                header += f" [{task}" + ("" if backend in task else f", {backend}") + f", v{version}]"
            key = f"{task}|{spec.metric}|{backend}|v{version}"
            sample = next(r for r in recs if (r.task, r.backend, r.version) == (task, backend, version))
            columns.append(
                Column(
                    key,
                    header,
                    task,
                    spec.metric,
                    sample.direction(spec.metric),
                    sample.protocol,
                    backend,
                    version,
                )
            )
            picked[key] = (spec, task, version)
    rows: list[Row] = []
    for section, entries in sections:
        if not any(recipe in labels_of for _, recipe in entries):
            continue
        present = {recipe for _, recipe in entries if recipe in unique}
        for name, recipe in entries:
            rec = next((r for r in recs if r.recipe == recipe), None)
            base = baseline_recipe(recipe)
            if name.startswith("+oracle") and recipe not in labels_of:
                continue  # the oracle's row only when it has results
            rows.append(
                Row(
                    recipe,
                    recipe,
                    bool(rec and rec.oracle),
                    rec.generative if rec else None,
                    base if base in present else None,
                    section,
                    name,
                )
            )

    def cells_of(r: Record) -> list[tuple[str, str, str]]:
        if r.recipe not in unique:
            return []
        return [
            (r.label, key, spec.metric)
            for key, (spec, task, version) in picked.items()
            if (r.task, r.version) == (task, version)
            and key.endswith(f"|{r.backend}|v{r.version}")
            and spec.metric in r.doc["metrics"]
        ]

    if not rows or not columns:
        return None
    values = cell_values(recs, cells_of)
    meta_notes = [*notes, *generative_notes(rows)]
    return build_table(
        rows,
        columns,
        values,
        notes=meta_notes,
        run_dirs=run_dirs_of(recs),
        backends=sorted({c.backend for c in columns}),
        **meta,
    )


P2310_AUGS = [
    ("none", None),
    ("erasing", "erasing"),
    ("cutout", "cutout"),
    ("cutmix", "cutmix"),
    ("mixup", "mixup"),
]
P2310_REGIMES = [("self-supervised", None), ("semi-supervised (50% labels)", "semi"), ("supervised", "sup")]
P2310_COLUMNS = [
    PaperColumn("ImageNet-100 top-1", lambda r: r.task == "linear/imagenet100", "top1"),
    PaperColumn("ImageNet top-1", lambda r: r.task == "linear/imagenet", "top1"),
    PaperColumn("Linv", lambda r: r.task == "invariance", "invariance"),
    PaperColumn("Ldiv", lambda r: r.task == "invariance", "diversity"),
    PaperColumn("det AP", lambda r: r.family == "det", "AP"),
    PaperColumn("inst-seg AP", lambda r: r.family == "instseg", "segm_AP"),
    PaperColumn("sem-seg mIoU", lambda r: r.family == "seg", "mIoU"),
]


def _by_setting(records: list[Record]) -> dict[tuple[str, str], list[Record]]:
    out: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for r in records:
        out[(r.profile, r.source)].append(r)
    return dict(sorted(out.items()))


def paper_2310_18850(records: list[Record]) -> list[Table]:
    sections = [
        (
            regime_title,
            [
                (aug_title, "_".join(["moco", *([regime] if regime else []), *([aug] if aug else [])]))
                for aug_title, aug in P2310_AUGS
            ],
        )
        for regime_title, regime in P2310_REGIMES
    ]
    tables = []
    for (profile, source), recs in _by_setting(records).items():
        table = _paper_table(
            recs,
            sections,
            P2310_COLUMNS,
            id=slug(f"{profile}-{source}-2310.18850"),
            title="MoCo v2 augmentations x regimes (arXiv 2310.18850)",
            profile=profile,
            data_source=source,
            family="paper:2310.18850",
            headers=("regime", "augmentation (recipe)"),
        )
        if table:
            tables.append(table)
    return tables


def _task_is(task: str) -> Callable[[Record], bool]:
    return lambda r: r.task == task


def paper_2403_05966(records: list[Record]) -> list[Table]:
    from pretrain.recipes.grid import METHODS

    sections = [
        (title, [("baseline", m), ("+IC-GAN", f"{m}_icgan"), ("+SD", f"{m}_sd"), ("+oracle", f"{m}_oracle")])
        for m, title in METHODS.items()
    ]
    tables = []
    for (profile, source), recs in _by_setting(records).items():
        for family, what in (
            ("linear", "cached-feature linear probe"),
            ("linear-aug", "augmented linear eval"),
        ):
            specs = [PaperColumn(DATASET_TITLES[d], _task_is(f"{family}/{d}"), "top1") for d in DATASET_ORDER]
            table = _paper_table(
                recs,
                sections,
                specs,
                id=slug(f"{profile}-{source}-2403.05966-{family}"),
                title=f"Generative augmentation, {what} top-1 (arXiv 2403.05966)",
                profile=profile,
                data_source=source,
                family="paper:2403.05966",
                headers=("method", "variant (recipe)"),
            )
            if table:
                tables.append(table)
    return tables
