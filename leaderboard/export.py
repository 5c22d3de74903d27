"""CSV and JSON exports of the same cells as the markdown, and the index of an output directory.

JSON (``augbench-leaderboard/1``): ``{schema, layout, root, generated, tables: [{id, title, profile,
data_source, family, backends, task_versions, protocols, caption, notes, columns, rows, cells}]}`` with one
cell per (row, column) -- missing ones too, as ``status: "missing"`` with ``mean: null`` (never 0).
Non-finite numbers are written as the strings ``"nan"``, ``"inf"``, ``"-inf"`` (JSON has no NaN).
CSV: one line per cell with the table's and the row's fields repeated (:data:`CSV_FIELDS`); lists are
``;``-joined, missing numbers are empty.  ``bench leaderboard RUNS -o DIR`` writes ``<layout>.md``,
``<layout>.csv``, ``<layout>.json``, ``plots/`` and ``index.md`` (every export found in ``DIR``).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from core.results import atomic_write_text
from leaderboard.model import Table, TableCell
from leaderboard.render import caption

SCHEMA = "augbench-leaderboard/1"
CSV_FIELDS = (
    "table",
    "title",
    "profile",
    "data_source",
    "family",
    "backend",
    "task_version",
    "protocol",
    "section",
    "row",
    "display",
    "recipe",
    "oracle",
    "baseline",
    "column",
    "header",
    "task",
    "metric",
    "direction",
    "status",
    "n",
    "seeds",
    "values",
    "mean",
    "std",
    "best",
    "delta",
    "delta_lo",
    "delta_hi",
    "delta_n",
    "within_noise",
)


def num(x: float | None) -> float | str | None:
    """A JSON-safe number: finite floats as is, NaN / infinities as strings."""
    if x is None or math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def cell_doc(tc: TableCell) -> dict[str, Any]:
    c, d = tc.cell, tc.delta
    return {
        "status": "missing" if c is None else "ok",
        "n": c.n if c else 0,
        "seeds": list(c.seeds) if c else [],
        "values": [num(v) for v in c.values] if c else [],
        "mean": num(c.mean) if c else None,
        "std": num(c.std) if c else None,
        "best": tc.best,
        "delta": None
        if d is None
        else {
            "n": d.n,
            "seeds": list(d.seeds),
            "mean": num(d.mean),
            "lo": num(d.lo),
            "hi": num(d.hi),
            "within_noise": d.within_noise,
        },
    }


def table_doc(t: Table) -> dict[str, Any]:
    return {
        "id": t.id,
        "title": t.title,
        "profile": t.profile,
        "data_source": t.data_source,
        "family": t.family,
        "backends": t.backends,
        "task_versions": t.task_versions,
        "protocols": t.protocols,
        "caption": caption(t).strip("_"),
        "notes": t.notes,
        "columns": [vars(c) for c in t.columns],
        "rows": [{**vars(r), "display": r.display} for r in t.rows],
        "cells": [
            {"row": r.label, "column": c.key, **cell_doc(t.get(r.label, c.key))}
            for r in t.rows
            for c in t.columns
        ],
    }


def to_json(tables: list[Table], layout: str, root: Path, generated: str) -> str:
    doc = {
        "schema": SCHEMA,
        "layout": layout,
        "root": str(root),
        "generated": generated,
        "tables": [table_doc(t) for t in tables],
    }
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"


def _csv_value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, list):
        return ";".join(_csv_value(x) for x in v)
    return str(v)


def to_csv(tables: list[Table]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for t in tables:
        for r in t.rows:
            for c in t.columns:
                doc = cell_doc(t.get(r.label, c.key))
                d = doc["delta"] or {}
                line = {
                    "table": t.id,
                    "title": t.title,
                    "profile": t.profile,
                    "data_source": t.data_source,
                    "family": t.family,
                    "backend": c.backend,
                    "task_version": c.task_version,
                    "protocol": c.protocol,
                    "section": r.section,
                    "row": r.label,
                    "display": r.display,
                    "recipe": r.recipe,
                    "oracle": r.oracle,
                    "baseline": r.baseline,
                    "column": c.key,
                    "header": c.header,
                    "task": c.task,
                    "metric": c.metric,
                    "direction": c.direction,
                    "status": doc["status"],
                    "n": doc["n"],
                    "seeds": doc["seeds"],
                    "values": doc["values"],
                    "mean": doc["mean"],
                    "std": doc["std"],
                    "best": doc["best"],
                    "delta": d.get("mean"),
                    "delta_lo": d.get("lo"),
                    "delta_hi": d.get("hi"),
                    "delta_n": d.get("n"),
                    "within_noise": d.get("within_noise"),
                }
                writer.writerow({k: _csv_value(v) for k, v in line.items()})
    return buf.getvalue()


def layout_stem(layout: str) -> str:
    """File stem of a layout's exports: ``families``, ``paper-2310.18850``, ..."""
    return layout.replace(":", "-")


def write_exports(
    tables: list[Table], layout: str, root: Path, out_dir: Path, markdown: str, generated: str
) -> list[Path]:
    """Write ``<layout>.md``, ``.csv`` and ``.json`` into ``out_dir``; returns the paths."""
    stem = layout_stem(layout)
    paths = [out_dir / f"{stem}.md", out_dir / f"{stem}.csv", out_dir / f"{stem}.json"]
    atomic_write_text(paths[0], markdown)
    atomic_write_text(paths[1], to_csv(tables))
    atomic_write_text(paths[2], to_json(tables, layout, root, generated))
    return paths


def write_index(out_dir: Path) -> Path:
    """``index.md``: every layout export in ``out_dir`` (its files and tables) and the plots."""
    lines = [
        "# augbench leaderboard index",
        "",
        "_Generated by `bench leaderboard -o DIR`; do not edit._",
        "",
    ]
    for path in sorted(out_dir.glob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
            continue
        stem = path.stem
        lines += [
            f"## layout `{doc['layout']}` (generated {doc['generated']} from `{doc['root']}`)",
            "",
            f"[markdown]({stem}.md) · [CSV]({stem}.csv) · [JSON]({stem}.json)",
            "",
        ]
        for t in doc["tables"]:
            filled = sum(c["status"] == "ok" for c in t["cells"])
            lines.append(
                f"- {t['title']}: profile `{t['profile']}`, data `{t['data_source']}`, backend "
                f"{', '.join(t['backends'])}; {len(t['rows'])} rows x {len(t['columns'])} columns, "
                f"{filled} of {len(t['cells'])} cells filled"
            )
        lines.append("")
    plots = sorted((out_dir / "plots").glob("*.png")) if (out_dir / "plots").is_dir() else []
    if plots:
        lines += [
            "## plots",
            "",
            *(f"- [{p.stem}](plots/{p.name}) ([SVG](plots/{p.stem}.svg))" for p in plots),
            "",
        ]
    index = out_dir / "index.md"
    atomic_write_text(index, "\n".join(lines))
    return index
