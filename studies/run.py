"""``bench study NAME``: plan a study's cells, run the unfinished ones via ``bench run``, write its tables.

* Cells are (recipe, seed) pairs with their tasks (:func:`plan_cells`).  A cell is *finished* when every one
  of its tasks has a result for the same seedless config hash (the recipe resolved with the study's
  overrides), profile and data root (:func:`study_records`); finished cells are not run again.
* Unfinished cells are grouped by (task list, seeds) and each group is ONE ``bench run`` call through
  :func:`bench.cli.main` (``--recipe r1,r2 --seeds ... --tasks ... --profile ... --runs-dir ...
  [--data-root ...] [--set ...]`` plus the launcher options, passed through verbatim): the study never
  re-implements the harness.
* The tables are built from the study's own records only (other recipes, configs, seeds or data roots in
  the same runs directory never appear) for each of the study's layouts, with exports and plots, into
  ``<runs>/studies/<name>/`` (:func:`write_study_tables`).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

from core.errors import ConfigError
from core.paths import DataRoot, resolve_data_root, resolve_runs_dir
from core.results import Result
from leaderboard.collect import Record, collect
from studies.schema import StudyConfig


@dataclass(frozen=True)
class Cell:
    """One (recipe, seed) of a study with the tasks it must have results for (resolved task names)."""

    recipe: str
    seed: int
    specs: tuple[str, ...]  # the study file's task specs (passed to bench run)
    tasks: tuple[str, ...]  # resolved task names, as results name them


def plan_cells(study: StudyConfig, profile: str, seeds: list[int] | None = None) -> list[Cell]:
    """The cells of ``study`` under ``profile`` (``seeds`` replaces the declared seeds; a block's
    ``max_seeds`` takes the first of them); a (recipe, seed) in several blocks gets the union of their
    tasks, in order."""
    from tasks.registry import resolve_tasks

    prof = study.profile(profile)
    study_seeds = seeds if seeds is not None else list(prof.seeds)
    specs: dict[tuple[str, int], list[str]] = {}
    for block in prof.blocks:
        for recipe in block.recipes:
            for seed in block.seeds(study_seeds):
                cell = specs.setdefault((recipe, seed), [])
                cell += [t for t in block.tasks if t not in cell]
    names = {s: tuple(t.name for t in resolve_tasks(",".join(s))) for s in {tuple(v) for v in specs.values()}}
    return [
        Cell(recipe, seed, tuple(task_specs), names[tuple(task_specs)])
        for (recipe, seed), task_specs in specs.items()
    ]


def config_hashes(study: StudyConfig, profile: str) -> dict[str, str]:
    """recipe -> the seedless config hash its results carry under the study's overrides."""
    from bench.harness import seedless_hash
    from pretrain.recipes import resolve_recipe

    recipes = dict.fromkeys(r for b in study.profile(profile).blocks for r in b.recipes)
    return {r: seedless_hash(resolve_recipe(r, profile, study.overrides(profile))) for r in recipes}


def study_records(
    cells: list[Cell], hashes: dict[str, str], profile: str, data: DataRoot, runs: Path
) -> list[Record]:
    """The records of ``runs`` that belong to ``cells``: same recipe, seed, task, profile, data root and
    seedless config hash, selected before the newest-per-key choice (so results of other data roots or
    configs never hide the study's own); rows are labelled within the study (plain recipe names when a
    recipe has one identity there)."""
    wanted = {(c.recipe, c.seed, t) for c in cells for t in c.tasks}
    if not runs.is_dir():
        return []

    def mine(res: Result) -> bool:
        d = res.doc
        return (
            (res.recipe, int(d["seed"]), res.task) in wanted
            and d["profile"] == profile
            and d["data"].get("root") == str(data.path)
            and d["recipe"].get("config_hash") == hashes.get(res.recipe)
        )

    return collect(runs, warn=False, keep=mine)


def done_tasks(cells: list[Cell], records: list[Record]) -> dict[tuple[str, int], set[str]]:
    have: dict[tuple[str, int], set[str]] = {(c.recipe, c.seed): set() for c in cells}
    for r in records:
        have.setdefault((r.recipe, r.seed), set()).add(r.task)
    return have


def run_groups(
    cells: list[Cell], have: dict[tuple[str, int], set[str]]
) -> list[tuple[list[str], list[int], tuple[str, ...]]]:
    """Unfinished cells grouped into ``bench run`` calls: ``[(recipes, seeds, task specs)]`` (each group
    is the product recipes x seeds; recipes sharing task specs and unfinished seeds share a call)."""
    seeds_of: dict[tuple[str, tuple[str, ...]], list[int]] = {}
    for c in cells:
        if not set(c.tasks) <= have.get((c.recipe, c.seed), set()):
            seeds_of.setdefault((c.recipe, c.specs), []).append(c.seed)
    groups: dict[tuple[tuple[str, ...], tuple[int, ...]], list[str]] = {}
    for (recipe, specs), seeds in seeds_of.items():
        groups.setdefault((specs, tuple(seeds)), []).append(recipe)
    return [(recipes, list(seeds), specs) for (specs, seeds), recipes in groups.items()]


def launcher_argv(args: argparse.Namespace) -> list[str]:
    """The launcher options of ``args`` as ``bench run`` flags (every option of
    :func:`bench.cli.add_launcher_args` whose value differs from its default), passed through verbatim."""
    from bench.cli import add_launcher_args

    probe = argparse.ArgumentParser(add_help=False)
    add_launcher_args(probe)
    out: list[str] = []
    for action in probe._actions:  # the options, as defined by bench run's own helper
        value = getattr(args, action.dest, action.default)
        if not action.option_strings or value == action.default or value is None:
            continue
        flag = action.option_strings[0]
        out += [flag] if isinstance(value, bool) else [flag, str(value)]
    return out


def run_argv(
    recipes: list[str], seeds: list[int], specs: tuple[str, ...], profile: str, overrides: list[str],
    runs: Path, data_root: str | None, extra: list[str],
) -> list[str]:  # fmt: skip
    """The ``bench run`` command line of one group."""
    argv = ["run", "--recipe", ",".join(recipes), "--seeds", ",".join(map(str, seeds))]
    argv += ["--tasks", ",".join(specs), "--profile", profile, "--runs-dir", str(runs)]
    argv += ["--data-root", data_root] if data_root else []
    for override in overrides:
        argv += ["--set", override]
    return argv + extra


def write_study_tables(study: StudyConfig, records: list[Record], runs: Path, out: Path) -> list[Path]:
    """Each layout of ``study`` over ``records`` into ``out`` (markdown, CSV, JSON, plots, index.md)."""
    from leaderboard.board import write_board

    files: list[Path] = []
    for layout in study.layouts:
        report = write_board(runs, out, layout, records=records)
        files += report.files[:1]
        if report.plots_note:
            print(report.plots_note, file=sys.stderr)
    return files


def parse_seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds must be comma-separated integers, got {text!r}") from None
    if not seeds:
        raise ConfigError("--seeds is empty")
    return seeds


def cmd_study(args: argparse.Namespace) -> int:
    """``bench study NAME [--profile P] [--seeds ...] [--data-root D] [--runs-dir R] [--dry-run]``."""
    from bench.cli import main
    from studies.plan import print_dry_run
    from studies.registry import load_study

    study = load_study(args.name)
    profile = args.profile
    cells = plan_cells(study, profile, parse_seeds(args.seeds))
    data = resolve_data_root(args.data_root)
    runs = resolve_runs_dir(args.runs_dir)
    hashes = config_hashes(study, profile)
    have = done_tasks(cells, study_records(cells, hashes, profile, data, runs))
    groups = run_groups(cells, have)
    out = runs / "studies" / study.name
    if args.dry_run:
        print_dry_run(study, profile, cells, have, data, args.throughput)
        print(f"\n{len(groups)} bench run call(s) would run; tables would go to {out}")
        return 0
    extra = launcher_argv(args) + (["--no-progress"] if args.no_progress else [])
    for recipes, seeds, specs in groups:
        argv = run_argv(recipes, seeds, specs, profile, study.overrides(profile), runs, args.data_root, extra)
        print(f"study {study.name}: bench {' '.join(argv)}", file=sys.stderr, flush=True)
        code = main(argv)
        if code != 0:
            print(
                f"study {study.name}: bench run failed (exit {code}); finished cells are kept",
                file=sys.stderr,
            )
            return code
    if getattr(args, "detach", False) and groups:
        print(f"jobs submitted; when they finish, `bench study {args.name}` again writes the tables to {out}")
        return 0
    records = study_records(cells, hashes, profile, data, runs)
    have = done_tasks(cells, records)
    ran = {(c.recipe, c.seed) for c in cells if any(c.recipe in g[0] and c.seed in g[1] for g in groups)}
    rows = [
        [c.recipe, str(c.seed), f"{len(set(c.tasks) & have[(c.recipe, c.seed)])}/{len(c.tasks)}",
         "ran" if (c.recipe, c.seed) in ran else "skipped (finished)"]
        for c in cells
    ]  # fmt: skip
    print(tabulate(rows, headers=["recipe", "seed", "results", "this call"], disable_numparse=True))
    files = write_study_tables(study, records, runs, out)
    skipped = len(cells) - len(ran)
    print(
        f"study {study.name} ({profile}): {len(cells)} cells, {len(cells) - skipped} run, {skipped} skipped"
    )
    for f in files:
        print(f"table: {f}")
    print(f"study outputs: {out} (index: {out / 'index.md'})")
    return 0
