"""``bench leaderboard``: collect -> layout -> plots -> markdown (+ CSV, JSON and index for a directory).

``out`` ending in ``.md``: that markdown file, plots in ``<stem>-plots/`` next to it.  Anything else is a
directory: ``<layout>.md``, ``<layout>.csv``, ``<layout>.json``, ``plots/<layout>-*.{png,svg}`` and
``index.md`` (:mod:`leaderboard.export`).  Without matplotlib the tables and exports are still written and
the report (and the markdown) say that plots were skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from core.results import atomic_write_text
from leaderboard.collect import Record, collect
from leaderboard.export import layout_stem, write_exports, write_index
from leaderboard.layouts import build_layout, check_layout
from leaderboard.plots import PlotsUnavailable, make_plots
from leaderboard.render import render_tables


@dataclass
class BoardReport:
    files: list[Path] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)
    plots_note: str = ""
    tables: int = 0


def write_board(
    root: Path,
    out: Path,
    layout: str = "families",
    *,
    plots: bool = True,
    records: list[Record] | None = None,
) -> BoardReport:
    """Render ``layout`` over every result under ``root`` (or only ``records``, e.g. a study's cells)."""
    check_layout(layout)
    tables = build_layout(layout, collect(root) if records is None else records)
    stem = layout_stem(layout)
    directory = out.suffix.lower() != ".md"
    base = out if directory else out.parent
    rel = "plots" if directory else f"{out.stem}-plots"
    report = BoardReport(tables=len(tables))
    links: dict[str, list[str]] = {}
    if plots and tables:
        try:
            links = make_plots(tables, base / rel, rel, prefix=f"{stem}-" if directory else "")
        except PlotsUnavailable as exc:
            report.plots_note = str(exc)
    report.plots = sorted({base / p for names in links.values() for p in names})
    markdown = render_tables(tables, root, layout, links, plots_note=report.plots_note)
    if directory:
        generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
        report.files = write_exports(tables, layout, root, out, markdown, generated)
        report.files.append(write_index(out))
    else:
        atomic_write_text(out, markdown)
        report.files = [out]
    return report
