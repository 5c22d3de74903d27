"""Runs over a matrix of recipes x seeds: recipe specs, the end-of-run summary and the grid listing.

``--recipe`` takes a comma-separated list whose items are recipe names, recipe YAML files or shell-style
globs over the registry (``'moco*'``, ``'*_mixup'``, ``'simclr_[sd]*'``); a glob matching nothing fails
with the closest names.  Order is kept, duplicates dropped.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

from core.errors import ConfigError, UnknownNameError

GLOB_CHARS = "*?["


def expand_recipes(spec: str) -> list[str]:
    """Recipe names / files from ``spec`` (see module docstring)."""
    from pretrain.recipes import RECIPES

    items = [s.strip() for s in spec.split(",") if s.strip()]
    if not items:
        raise ConfigError("--recipe is empty: give a recipe name, a comma-separated list or a glob")
    names: list[str] = []
    for item in items:
        if any(ch in item for ch in GLOB_CHARS) and not item.endswith((".yaml", ".yml")):
            matched = fnmatch.filter(RECIPES.names(), item)
            if not matched:
                plain = item.replace("*", "").replace("?", "").strip("[]")
                close = UnknownNameError("recipe", plain or item, RECIPES.names()).suggestions
                hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
                raise ConfigError(
                    f"recipe pattern {item!r} matches no recipe; {hint}(list: bench ls recipes --grid)"
                )
            names += matched
        else:
            names.append(item)
    return list(dict.fromkeys(names))


@dataclass(frozen=True)
class CellSummary:
    """One (recipe, seed) cell of a matrix run."""

    recipe: str
    seed: int
    pretrained: bool  # False: a finished pretraining was reused
    ran: list[str]
    skipped: list[str]
    run_dir: Path


def summary_table(cells: list[CellSummary]) -> str:
    rows = [
        [
            c.recipe,
            str(c.seed),
            "trained" if c.pretrained else "reused",
            len(c.ran),
            len(c.skipped),
            c.run_dir,
        ]
        for c in cells
    ]
    headers = ["recipe", "seed", "pretraining", "tasks run", "tasks skipped (result exists)", "run directory"]
    return tabulate(rows, headers=headers, disable_numparse=True)


def grid_table() -> str:
    """The recipe grid: one table per (regime, generative source), methods x augmentations."""
    from pretrain.recipes import RECIPES
    from pretrain.recipes.grid import AUGS, GENS, METHODS, REGIMES

    out = []
    for regime in [None, *REGIMES]:
        for gen in [None, *GENS]:
            rows = []
            for method in METHODS:
                names = [
                    "_".join(
                        [
                            method,
                            *([regime] if regime else []),
                            *([gen] if gen else []),
                            *([aug] if aug else []),
                        ]
                    )
                    for aug in [None, *AUGS]
                ]
                if any(n in RECIPES for n in names):
                    rows.append([method, *(n if n in RECIPES else "-" for n in names)])
            if rows:
                regime_text = {None: "self-supervised", "sup": "supervised", "semi": "semi-supervised"}[
                    regime
                ]
                gen_text = (
                    f"generative source {gen} ({GENS[gen][0]} store)" if gen else "no generative source"
                )
                out.append(f"{regime_text}, {gen_text}:")
                out.append(tabulate(rows, headers=["method", "none", *AUGS], disable_numparse=True))
                out.append("")
    return "\n".join(out).rstrip("\n")
