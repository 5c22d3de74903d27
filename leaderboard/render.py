"""Markdown (tabulate) of a layout's tables, grouped by (profile, data source), with plots linked.

Cell text: ``mean ± std (n=k)`` over the seeds (``**mean**`` when best of its column), ``—`` when missing
(never 0).  Families layout: a ``Δ <column>`` column after each value column; paper layouts: the delta
inside the cell.  Delta text: ``+1.02`` outside seed noise, ``+0.31 ≈`` within it, ``+0.50 ?`` untested
(one paired seed).  :func:`write_leaderboard` is what the harness calls after every run (no plots).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

from tabulate import tabulate

from core.results import atomic_write_text
from leaderboard.collect import collect
from leaderboard.layouts import build_layout
from leaderboard.model import Column, Table, TableCell

MISSING = "—"
LEGEND = (
    "_Cells: mean ± std over seeds (n = number of seeds); " + MISSING + " = no result. **Bold** = best of "
    "its column (oracle rows excluded; never for descriptive metrics). Δ = row minus its baseline recipe "
    "(same method and regime without the generative source and the augmentation: `moco_mixup` vs `moco`, "
    "`simclr_sd` vs `simclr`) over paired seeds; ≈ = within seed noise (the 95% paired-t interval of the "
    "per-seed differences contains 0), ? = a single paired seed (untested). Rules: `docs/leaderboard.md`._"
)


def digits(table: Table, column: Column) -> int:
    """3 decimals for metrics living in [-2, 2] (invariance, CKA, OPD), else 2."""
    means = [tc.cell.mean for (_, key), tc in table.cells.items() if key == column.key and tc.cell]
    return 3 if means and max(abs(m) for m in means) < 2.0 else 2


def format_cell(tc: TableCell, nd: int = 2) -> str:
    if tc.cell is None:
        return MISSING
    c = tc.cell
    value = f"**{c.mean:.{nd}f}**" if tc.best else f"{c.mean:.{nd}f}"
    spread = f" ± {c.std:.{nd}f}" if c.n > 1 else ""
    return f"{value}{spread} (n={c.n})"


def format_delta(tc: TableCell, nd: int = 2) -> str:
    if tc.delta is None:
        return ""
    d = tc.delta
    return f"{d.mean:+.{nd}f}" + (f" {d.marker}" if d.marker else "")


def _direction(column: Column) -> str:
    return {"higher": "higher is better", "lower": "lower is better", "descriptive": "descriptive"}[
        column.direction
    ]


def caption(table: Table) -> str:
    source = {
        "synthetic": "synthetic stand-ins: compares recipes with each other only",
        "real": "real data",
    }.get(table.data_source, f"{table.data_source} data")
    versions = sorted(set(table.task_versions.values()))
    version = (
        f"task version {versions[0]}"
        if len(versions) == 1
        else "task versions " + ", ".join(f"{t} v{v}" for t, v in table.task_versions.items())
    )
    metrics = sorted({f"{c.metric} ({_direction(c)})" for c in table.columns})
    protocols = ", ".join(f"`{p}`" for p in table.protocols)
    return (
        f"_profile `{table.profile}` · data `{table.data_source}` ({source}) · protocol {protocols} · "
        f"backend {', '.join(table.backends)} · {version} · metrics: {'; '.join(metrics)}._"
    )


def render_table(table: Table, *, inline_delta: bool = False, plots: Sequence[str] = ()) -> str:
    nds = {c.key: digits(table, c) for c in table.columns}
    sectioned = any(r.section for r in table.rows)
    headers = ([table.headers[0] or "section", table.headers[1]] if sectioned else [table.headers[1]]) + [
        h for c in table.columns for h in ([c.header] if inline_delta else [c.header, f"Δ {c.header}"])
    ]
    body = []
    last_section = None
    for row in table.rows:
        first = (
            [row.section if row.section != last_section else "", row.display] if sectioned else [row.display]
        )
        last_section = row.section
        cells = []
        for c in table.columns:
            tc = table.get(row.label, c.key)
            text, delta = format_cell(tc, nds[c.key]), format_delta(tc, nds[c.key])
            cells += [f"{text} Δ {delta}" if delta else text] if inline_delta else [text, delta]
        body.append(first + cells)
    out = [f"### {table.title}", "", caption(table), ""]
    out.append(tabulate(body, headers=headers, tablefmt="github", disable_numparse=True))
    if table.notes:
        out += ["", "Notes:", "", *(f"- {n}" for n in table.notes)]
    out += _plot_links(plots)
    return "\n".join(out) + "\n"


def _plot_links(plots: Sequence[str]) -> list[str]:
    lines = []
    for png in plots:
        if png.endswith(".png"):
            svg = png[: -len(".png")] + ".svg"
            lines += ["", f"![{Path(png).stem}]({png}) ([SVG]({svg}))"]
    return lines


def render_tables(
    tables: list[Table],
    root: Path,
    layout: str = "families",
    plots: Mapping[str, Sequence[str]] | None = None,
    plots_note: str = "",
) -> str:
    """The whole markdown document; ``plots``: table id (or ``curves:<profile>-<source>``) -> PNG paths
    relative to the markdown file."""
    plots = plots or {}
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "# augbench leaderboard",
        "",
        f"_Generated by `bench leaderboard` (layout `{layout}`) from the result files under `{root}` on "
        f"{stamp}. Do not edit by hand._",
    ]
    if plots_note:
        out += ["", f"_{plots_note}_"]
    if not tables:
        return (
            "\n".join(
                [
                    *out,
                    "",
                    "No result files found."
                    if layout == "families"
                    else f"No results for the rows of layout `{layout}`.",
                ]
            )
            + "\n"
        )
    out += ["", LEGEND]
    setting = None
    for table in tables:
        if (table.profile, table.data_source) != setting:
            if setting is not None:
                out += _curves(plots, setting)
            setting = (table.profile, table.data_source)
            out += ["", f"## profile `{table.profile}`, data `{table.data_source}`"]
        out += ["", render_table(table, inline_delta=layout != "families", plots=plots.get(table.id, ()))]
    if setting is not None:
        out += _curves(plots, setting)
    return "\n".join(out).rstrip("\n") + "\n"


def _curves(plots: Mapping[str, Sequence[str]], setting: tuple[str, str]) -> list[str]:
    links = _plot_links(plots.get(f"curves:{setting[0]}-{setting[1]}", ()))
    return ["", "### Training curves (TensorBoard logs of the runs above)", *links] if links else []


def render(root: Path, layout: str = "families") -> str:
    return render_tables(build_layout(layout, collect(root)), root, layout)


def write_leaderboard(root: Path, out: Path, layout: str = "families") -> Path:
    """Markdown only (no plots): what the harness regenerates after every run."""
    atomic_write_text(out, render(root, layout))
    return out
