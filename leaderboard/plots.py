"""Plots of a layout's tables (matplotlib, the ``plots`` extra), each written as PNG and SVG.

* invariance vs diversity: one point per row with seed error bars (± std over seeds, both axes), for every
  table holding a task's ``invariance`` and ``diversity`` columns (the picture of arXiv 2310.18850);
* bar charts: one panel per column, one bar per row with ± std error bars; missing cells get no bar
  (and a ``missing`` mark), never a zero bar; oracle rows hatched and labelled ``[ORACLE]``;
* training curves: every scalar ``train/*`` tag (loss first; throughput left out) of the runs in the
  tables of a (profile, data source), read from their TensorBoard event files with tensorboard's
  ``EventAccumulator``; one colour per row, one line per seed.

:func:`make_plots` returns ``{table id or "curves:<profile>-<source>": [PNG paths relative to the
markdown]}``; without matplotlib it raises :class:`PlotsUnavailable` (the caller writes the rest).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from leaderboard.layouts import slug
from leaderboard.model import Table

MAX_CURVE_TAGS = 4
SKIP_TAGS = ("train/images_per_second",)


class PlotsUnavailable(RuntimeError):
    """matplotlib is not installed."""


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise PlotsUnavailable(
            "plots skipped: matplotlib is not installed (pip install 'augbench[plots]')"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, out_dir: Path, name: str) -> str:
    out_dir.mkdir(parents=True, exist_ok=True)
    for ext in ("png", "svg"):
        tmp = out_dir / f".{name}.tmp.{ext}"
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format=ext)
        tmp.replace(out_dir / f"{name}.{ext}")
    return f"{name}.png"


def _subtitle(t: Table) -> str:
    return f"profile {t.profile}, data {t.data_source}, backend {', '.join(t.backends)}"


def scatter_invariance_diversity(plt: Any, t: Table, out_dir: Path, prefix: str) -> list[str]:
    by_task: dict[str, dict[str, str]] = defaultdict(dict)
    for c in t.columns:
        if c.metric in ("invariance", "diversity"):
            by_task[c.task][c.metric] = c.key
    files = []
    for task, keys in sorted(by_task.items()):
        if len(keys) < 2:
            continue
        fig, ax = plt.subplots(figsize=(6, 4.5))
        drawn = 0
        for row in t.rows:
            inv, div = t.get(row.label, keys["invariance"]).cell, t.get(row.label, keys["diversity"]).cell
            if inv is None or div is None:
                continue
            ax.errorbar(
                inv.mean,
                div.mean,
                xerr=inv.std,
                yerr=div.std,
                fmt="s" if row.oracle else "o",
                capsize=3,
                label=f"{row.display} (n={min(inv.n, div.n)})",
            )
            ax.annotate(
                row.label, (inv.mean, div.mean), textcoords="offset points", xytext=(4, 4), fontsize=7
            )
            drawn += 1
        if drawn:
            ax.set_xlabel("invariance (Linv)")
            ax.set_ylabel("diversity (Ldiv)")
            ax.set_title(f"{task}: invariance vs diversity (± std over seeds)\n{_subtitle(t)}", fontsize=9)
            ax.legend(fontsize=7, loc="best")
            files.append(_save(fig, out_dir, f"{prefix}{t.id}-{slug(task)}-invariance-diversity"))
        plt.close(fig)
    return files


def bars(plt: Any, t: Table, out_dir: Path, prefix: str) -> list[str]:
    cols = t.columns
    if not cols or not t.rows:
        return []
    ncol = min(3, len(cols))
    nrow = math.ceil(len(cols) / ncol)
    width = max(4.0, 0.45 * len(t.rows) + 1.5)
    fig, axes = plt.subplots(nrow, ncol, figsize=(width * ncol, 3.6 * nrow), squeeze=False)
    labels = [r.display for r in t.rows]
    for i, c in enumerate(cols):
        ax = axes[i // ncol][i % ncol]
        for j, row in enumerate(t.rows):
            tc = t.get(row.label, c.key)
            if tc.cell is None:
                ax.annotate(
                    "missing",
                    (j, 0),
                    rotation=90,
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    color="grey",
                    xycoords=("data", "axes fraction"),
                )
                continue
            ax.bar(
                j,
                tc.cell.mean,
                yerr=tc.cell.std,
                capsize=3,
                hatch="//" if row.oracle else None,
                color="tab:orange" if tc.best else "tab:blue",
                edgecolor="black",
                linewidth=0.5,
            )
        ax.set_xlim(-0.6, len(labels) - 0.4)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=7)
        kind = {"higher": "higher is better", "lower": "lower is better", "descriptive": "descriptive"}
        ax.set_title(f"{c.header} ({c.metric}, {kind[c.direction]})", fontsize=8)
    for k in range(len(cols), nrow * ncol):
        axes[k // ncol][k % ncol].set_visible(False)
    fig.suptitle(f"{t.title}: mean ± std over seeds (orange = best)\n{_subtitle(t)}", fontsize=9)
    fig.tight_layout()
    name = _save(fig, out_dir, f"{prefix}{t.id}-bars")
    plt.close(fig)
    return [name]


def read_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """``tag -> [(step, value)]`` from the TensorBoard event files in ``run_dir/tensorboard``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = run_dir / "tensorboard"
    if not tb.is_dir():
        return {}
    acc = EventAccumulator(str(tb), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags().get("scalars", [])}


def curves(plt: Any, tables: list[Table], out_dir: Path, prefix: str) -> dict[str, list[str]]:
    """One figure per (profile, data source): the training curves of the runs in its tables."""
    settings: dict[tuple[str, str], dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    oracle: dict[str, bool] = {}
    for t in tables:
        for row in t.rows:
            oracle[row.label] = row.oracle
        for label, dirs in t.run_dirs.items():
            settings[(t.profile, t.data_source)][label].update(dirs)
    out: dict[str, list[str]] = {}
    for (profile, source), runs in sorted(settings.items()):
        logs = {
            label: [(d, read_scalars(Path(d))) for d in sorted(dirs)] for label, dirs in sorted(runs.items())
        }
        tags = sorted(
            {tag for series in logs.values() for _, s in series for tag in s if tag not in SKIP_TAGS},
            key=lambda tag: (tag != "train/loss", tag),
        )[:MAX_CURVE_TAGS]
        if not tags:
            continue
        fig, axes = plt.subplots(1, len(tags), figsize=(5 * len(tags), 3.8), squeeze=False)
        colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for i, (label, series) in enumerate(logs.items()):
            colour = colours[i % len(colours)]
            for k, (_, scalars) in enumerate(series):
                for ax, tag in zip(axes[0], tags, strict=True):
                    points = scalars.get(tag)
                    if points:
                        name = (f"{label} [ORACLE]" if oracle.get(label) else label) if k == 0 else None
                        ax.plot(
                            *zip(*points, strict=True), color=colour, linewidth=0.9, alpha=0.8, label=name
                        )
        for ax, tag in zip(axes[0], tags, strict=True):
            ax.set_title(tag, fontsize=9)
            ax.set_xlabel("step")
        axes[0][0].legend(fontsize=7)
        fig.suptitle(f"training curves (one line per seed), profile {profile}, data {source}", fontsize=9)
        fig.tight_layout()
        out[f"curves:{profile}-{source}"] = [
            _save(fig, out_dir, f"{prefix}curves-{slug(profile + '-' + source)}")
        ]
        plt.close(fig)
    return out


def make_plots(tables: list[Table], out_dir: Path, rel: str, prefix: str = "") -> dict[str, list[str]]:
    """Write every plot into ``out_dir``; paths returned as ``rel/<name>.png`` (see module docstring)."""
    plt = _pyplot()
    links: dict[str, list[str]] = defaultdict(list)
    for t in tables:
        for name in [*scatter_invariance_diversity(plt, t, out_dir, prefix), *bars(plt, t, out_dir, prefix)]:
            links[t.id].append(f"{rel}/{name}")
    for key, names in curves(plt, tables, out_dir, prefix).items():
        links[key] += [f"{rel}/{n}" for n in names]
    return dict(links)
