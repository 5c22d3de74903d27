"""The table model every layout produces and every output (markdown, CSV, JSON, plots) reads.

A :class:`Table` holds rows (recipes), columns (a task's metric) and one :class:`TableCell` per (row,
column): the seeds' values (``None`` = missing, never 0), whether it is the best of its column and its
paired-seed delta to the row's baseline.  :func:`build_table` applies the rules of ``docs/leaderboard.md``:

* **best**: per column, the highest (or lowest) mean among rows that are not oracle rows; ties are all
  marked; descriptive columns (``direction == "descriptive"``) never get one;
* **delta**: row minus its baseline row over paired seeds (:func:`leaderboard.stats.paired_delta`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.results import Direction
from leaderboard.stats import PairedDelta, mean, paired_delta, std


@dataclass(frozen=True)
class Cell:
    """The values of one (row, column) over seeds (sorted by seed)."""

    seeds: tuple[int, ...]
    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return mean(self.values)

    @property
    def std(self) -> float:
        return std(self.values)

    @property
    def by_seed(self) -> dict[int, float]:
        return dict(zip(self.seeds, self.values, strict=True))

    @staticmethod
    def from_seeds(by_seed: dict[int, float]) -> Cell:
        seeds = tuple(sorted(by_seed))
        return Cell(seeds, tuple(by_seed[s] for s in seeds))


@dataclass(frozen=True)
class Column:
    key: str  # unique within the table: "<task>|<metric>"
    header: str
    task: str
    metric: str
    direction: Direction
    protocol: str
    backend: str
    task_version: int


@dataclass(frozen=True)
class Row:
    label: str  # unique within the table (recipe name, or "recipe (cfg ..., store ...)")
    recipe: str
    oracle: bool = False
    generative: dict[str, Any] | None = None
    baseline: str | None = None  # label of the baseline row in this table (None: is one / has none)
    section: str = ""  # paper layouts: the row group (regime, method)
    name: str = ""  # paper layouts: the row's name within its section (none, erasing, +SD, ...)

    @property
    def display(self) -> str:
        """The label, marked ``[ORACLE]`` when the row's generative variants come from the oracle."""
        text = f"{self.name} ({self.label})" if self.name else self.label
        return f"{text} [ORACLE]" if self.oracle else text


@dataclass(frozen=True)
class TableCell:
    cell: Cell | None
    best: bool = False
    delta: PairedDelta | None = None


@dataclass
class Table:
    id: str  # slug, unique within a layout (file names, anchors)
    title: str
    profile: str
    data_source: str
    family: str
    backends: list[str]
    columns: list[Column]
    rows: list[Row]
    cells: dict[tuple[str, str], TableCell]
    notes: list[str] = field(default_factory=list)
    run_dirs: dict[str, list[str]] = field(default_factory=dict)  # row label -> run directories
    headers: tuple[str, str] = ("", "recipe")  # (section column, row column); no section column if ""

    def get(self, row: str, column: str) -> TableCell:
        return self.cells.get((row, column), TableCell(None))

    @property
    def task_versions(self) -> dict[str, int]:
        return {c.task: c.task_version for c in self.columns}

    @property
    def protocols(self) -> list[str]:
        return sorted({c.protocol for c in self.columns})


def best_rows(rows: list[Row], column: Column, values: dict[tuple[str, str], Cell]) -> set[str]:
    """Labels of the best non-oracle rows of ``column`` (empty for descriptive columns)."""
    if column.direction == "descriptive":
        return set()
    means = {
        r.label: values[(r.label, column.key)].mean
        for r in rows
        if not r.oracle and (r.label, column.key) in values
    }
    if not means:
        return set()
    top = max(means.values()) if column.direction == "higher" else min(means.values())
    return {label for label, m in means.items() if abs(m - top) <= 1e-9 * max(1.0, abs(top))}


def build_table(
    rows: list[Row], columns: list[Column], values: dict[tuple[str, str], Cell], **meta: Any
) -> Table:
    """A :class:`Table` with best markers and paired-seed deltas computed from ``values``."""
    cells: dict[tuple[str, str], TableCell] = {}
    for col in columns:
        best = best_rows(rows, col, values)
        for row in rows:
            cell = values.get((row.label, col.key))
            if cell is None:
                continue
            base = values.get((row.baseline, col.key)) if row.baseline else None
            delta = paired_delta(cell.by_seed, base.by_seed) if base is not None else None
            cells[(row.label, col.key)] = TableCell(cell, row.label in best, delta)
    return Table(rows=rows, columns=columns, cells=cells, **meta)
