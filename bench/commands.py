"""Implementations of the ``bench`` sub-commands (argument parsing lives in :mod:`bench.cli`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml
from tabulate import tabulate

from core.config import to_dict
from core.errors import BenchError, ConfigError
from core.paths import resolve_data_root, resolve_runs_dir


def dispatch(args: argparse.Namespace) -> int:
    handlers = {
        "run": cmd_run,
        "eval": cmd_eval,
        "generate": cmd_generate,
        "ls": cmd_ls,
        "show": cmd_show,
        "data": cmd_data,
        "leaderboard": cmd_leaderboard,
        "ci": cmd_ci,
        "study": cmd_study,
    }
    return handlers[args.command](args)


def _seeds(text: str | None) -> list[int | None]:
    if text is None:
        return [None]
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds must be comma-separated integers, got {text!r}") from None


def cmd_run(args: argparse.Namespace) -> int:
    from bench import harness
    from bench.matrix import CellSummary, expand_recipes, summary_table
    from leaderboard.render import write_leaderboard
    from pretrain.recipes import check_profile, resolve_recipe
    from tasks.registry import resolve_tasks

    profile = check_profile(args.profile)
    names = expand_recipes(args.recipe)
    seeds = _seeds(args.seeds)
    tasks = [] if args.tasks.strip() == "none" else resolve_tasks(args.tasks)  # none: pretraining only
    data = resolve_data_root(args.data_root)
    runs = resolve_runs_dir(args.runs_dir)
    recipes = []
    for name in names:  # resolve every cell first: a bad name or override fails before any training
        for seed in seeds:
            overrides = [*args.overrides, *([f"train.seed={seed}"] if seed is not None else [])]
            recipes.append(resolve_recipe(name, profile, overrides))
    if args.launcher:
        from bench.launch import launch_matrix

        return launch_matrix(args, names, seeds, [t.name for t in tasks], runs)
    reports, cells = [], []
    for recipe in recipes:
        rep = harness.run(
            recipe,
            tasks,
            profile,
            data,
            runs,
            resume=args.resume,
            fresh=args.fresh,
            progress=not args.no_progress,
            on_corrupt=args.on_corrupt,
            rerun_tasks=args.rerun_tasks,
        )
        reports.append(rep)
        cells.append(
            CellSummary(recipe.name, recipe.train.seed, rep.pretrained, rep.ran, rep.skipped, rep.run_dir)
        )
    from pretrain import distributed

    if not distributed.is_main():
        return 0
    board = Path(args.leaderboard) if args.leaderboard else runs / "LEADERBOARD.md"
    write_leaderboard(runs, board)
    for rep in reports:
        print(f"run directory: {rep.run_dir}")
        for f in rep.result_files:
            print(f"result: {f}")
    print(summary_table(cells))
    print(f"leaderboard: {board}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from bench.evaluate import evaluate_checkpoint
    from leaderboard.render import write_leaderboard
    from pretrain.backbones import BACKBONES
    from pretrain.recipes import check_profile
    from tasks.registry import resolve_tasks

    profile = check_profile(args.profile)
    BACKBONES.get(args.backbone)
    tasks = resolve_tasks(args.tasks)
    path = Path(args.checkpoint).expanduser().resolve()
    runs = resolve_runs_dir(args.runs_dir)
    report = evaluate_checkpoint(
        path,
        args.backbone,
        tasks,
        profile,
        resolve_data_root(args.data_root),
        runs,
        label=args.label,
        prefix=args.prefix,
        allow_partial=args.allow_partial,
        on_corrupt=args.on_corrupt,
        progress=not args.no_progress,
    )
    board = Path(args.leaderboard) if args.leaderboard else runs / "LEADERBOARD.md"
    write_leaderboard(runs, board)
    print(report.load_summary)
    print(f"output directory: {report.out_dir}")
    for f in report.result_files:
        print(f"result: {f}")
    print(f"leaderboard: {board}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from pretrain.generative.base import GeneratorSettings
    from pretrain.generative.generate import generate, parse_shard
    from pretrain.generative.registry import GENERATORS
    from tasks.datasets.registry import DATASETS
    from tasks.datasets.synth.writer import ensure_synthetic

    spec = GENERATORS.get(args.generator)
    info = DATASETS.get(args.dataset)
    data = resolve_data_root(args.data_root)
    if data.synthetic:
        print(f"no data root configured: using SYNTHETIC stand-ins in {data.path}", file=sys.stderr)
        ensure_synthetic(data.path, [args.dataset], "smoke")
    size = args.size or spec.default_size or info.synthetic_image_size
    guidance = spec.default_guidance if args.guidance_scale is None else args.guidance_scale
    try:
        settings = GeneratorSettings(
            per_image=args.per_image, steps=args.steps, size=size, seed=args.seed, batch_size=args.batch_size,
            noise_level=args.noise_level, guidance_scale=guidance, truncation=args.truncation,
            keep=args.keep, device=args.device,
        )  # fmt: skip
    except ValueError as exc:
        raise ConfigError(f"bench generate: {exc}") from None
    if args.limit is not None and args.limit < 1:
        raise ConfigError("--limit must be a positive number of source images")
    report = generate(
        args.generator,
        Path(args.model).expanduser() if args.model else None,
        data.path,
        args.dataset,
        args.split,
        settings,
        out=Path(args.out).expanduser().resolve() if args.out else None,
        shard=parse_shard(args.shard),
        limit=args.limit,
        progress=not args.no_progress,
    )
    status = "complete" if report.complete else "incomplete (other shards or --limit: rerun to finish)"
    print(f"store: {report.store}")
    print(f"generated {report.generated} source images ({report.skipped} already done), {status}")
    print(f"manifest digest {report.digest}; {report.variants_per_second:.1f} variants/s")
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    if args.what == "recipes" and args.grid:
        from bench.matrix import grid_table

        print(grid_table())
    elif args.what == "recipes":
        from pretrain.recipes import RECIPES

        rows = [[n, e.method, e.aug or "-", e.regime or "ssl", e.description] for n, e in RECIPES.items()]
        print(tabulate(rows, headers=["recipe", "method", "augmentation", "labels", "description"]))
    elif args.what == "tasks":
        from tasks.datasets.registry import DATASETS
        from tasks.datasets.synth.writer import is_synthetic
        from tasks.registry import TASKS, task_groups

        data = resolve_data_root(args.data_root)
        task_rows = []
        for name, task in TASKS.items():
            status = []
            for ds in task.datasets:
                info = DATASETS.get(ds)
                if not (data.path / info.relpath).exists():
                    state = "synthetic (not generated yet)" if data.synthetic else "missing"
                elif is_synthetic(data.path, ds):
                    state = "synthetic"
                else:
                    state = "found"
                status.append(f"{ds}: {state}")
            task_rows.append([name, str(task.version), "; ".join(status), task.description])
        print(tabulate(task_rows, headers=["task", "version", f"data ({data.path})", "description"]))
        from tasks.registry import TEMPLATES

        template_rows = [
            [t.usage, "required" if t.needs_argument else "optional", "yes" * t.in_all, t.description]
            for _, t in TEMPLATES.items()
        ]
        print("\nparametrised tasks (<template>[:<argument>]):")
        print(tabulate(template_rows, headers=["template", "argument", "in all", "description"]))
        groups = task_groups()
        print("\ngroups: " + "; ".join(f"{g} = {', '.join(v)}" for g, v in groups.items()))
    elif args.what == "backbones":
        from pretrain.backbones import BACKBONES

        rows = [[n, str(s.feature_dim), s.description] for n, s in BACKBONES.items()]
        print(tabulate(rows, headers=["backbone", "feature dim", "description"]))
    elif args.what == "studies":
        from studies.registry import STUDIES

        rows = [[n, e.description] for n, e in STUDIES.items()]
        print(tabulate(rows, headers=["study", "description"], disable_numparse=True))
    else:
        from pretrain.recipes import PROFILES

        print("\n".join(PROFILES))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from pretrain.recipes import resolve_recipe

    if args.what == "study":
        from studies.registry import load_study, study_path

        load_study(args.name)  # validated
        print(f"# study file {study_path(args.name)} (validated)")
        print(study_path(args.name).read_text(), end="")
        return 0

    recipe = resolve_recipe(args.name, args.profile, args.overrides)
    print(f"# recipe {recipe.name}, profile {args.profile} (resolved)")
    print(yaml.safe_dump(to_dict(recipe), sort_keys=False), end="")
    if recipe.augment.sources:
        from pretrain.generative.training import describe_store

        print(describe_store(recipe, resolve_data_root(args.data_root)))
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from tasks.datasets.registry import DATASETS
    from tasks.datasets.synth.writer import ensure_synthetic

    if args.data_command == "synth":
        names = DATASETS.names() if args.datasets == "all" else [s.strip() for s in args.datasets.split(",")]
        for n in names:
            DATASETS.get(n)
        root = Path(args.root).expanduser().resolve()
        ensure_synthetic(root, names, args.scale)
        for n in names:
            print(f"{n}: {root / DATASETS.get(n).relpath}")
        return 0
    if args.name not in DATASETS and Path(args.name).expanduser().is_dir():
        return _verify_store(Path(args.name).expanduser(), args)
    info = DATASETS.get(args.name)
    data = resolve_data_root(args.root)
    if data.synthetic and not args.root:
        raise BenchError("no data root given: pass --root DIR or set BENCH_DATA")
    problems = info.verify(data.path, check_images=not args.no_images)
    if problems:
        for p in problems:
            print(f"problem: {p}")
        print(f"how to prepare {args.name}: {info.prepare_hint}")
        return 1
    print(f"{args.name}: ok ({data.path / info.relpath})")
    return 0


def _verify_store(path: Path, args: argparse.Namespace) -> int:
    """``bench data verify STORE_DIR``: the store against its source split (missing/corrupt variants)."""
    from pretrain.generative.sources import load_sources
    from pretrain.generative.store import VariantStore

    store = VariantStore(path)
    manifest = store.manifest()
    root = Path(args.root).expanduser() if args.root else Path(manifest["data_root"])
    sources = load_sources(root, manifest["dataset"], manifest["split"])
    problems = store.verify(sources, check_images=not args.no_images)
    for p in problems:
        print(f"problem: {p}")
    if problems:
        return 1
    label = " (ORACLE, synthetic data)" if manifest.get("oracle") else ""
    print(
        f"{path}: ok, {len(sources)} source images x {manifest['per_image']} variants by "
        f"{manifest['generator']}{label}, digest {store.digest()}"
    )
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from leaderboard.board import write_board

    runs = resolve_runs_dir(args.runs_dir)
    if not runs.is_dir():
        raise BenchError(f"runs directory not found: {runs}")
    report = write_board(runs, Path(args.output), args.layout, plots=not args.no_plots)
    for f in report.files:
        print(f"wrote {f}")
    if report.plots:
        print(f"plots: {len(report.plots)} figures (PNG + SVG) in {report.plots[0].parent}")
    if report.plots_note:
        print(report.plots_note, file=sys.stderr)
    print(f"leaderboard: {report.files[0]} ({report.tables} tables, layout {args.layout})")
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from studies.run import cmd_study as run_study

    return run_study(args)


def cmd_ci(args: argparse.Namespace) -> int:
    from ci import report
    from ci.baseline import ALPHA, MIN_SEEDS, make_baseline
    from ci.check import check

    runs = resolve_runs_dir(args.runs_dir)
    if args.ci_command == "baseline":
        if args.min_seeds < MIN_SEEDS:
            raise ConfigError(f"--min-seeds must be at least {MIN_SEEDS} (a spread needs seeds)")
        recipes = None
        if args.recipes:
            from bench.matrix import expand_recipes

            recipes = expand_recipes(args.recipes)
        doc = make_baseline(
            runs,
            Path(args.output),
            args.profile,
            args.data_source,
            recipes=recipes,
            min_seeds=args.min_seeds,
            alpha=ALPHA if args.alpha is None else args.alpha,
            rel_floor=args.rel_floor,
            abs_floor=args.abs_floor,
            note=args.note,
            reruns=Path(args.reruns) if args.reruns else None,
        )
        print(
            f"baseline with {len(doc['entries'])} entries over {len(doc['recipes'])} recipes: {args.output}"
        )
        return 0
    baseline = Path(args.baseline)
    findings = check(runs, baseline)
    print(report.format_table(findings))
    if args.junit:
        print(f"junit: {report.write(Path(args.junit), report.junit(findings, baseline, runs))}")
    if args.markdown:
        print(f"markdown: {report.write(Path(args.markdown), report.markdown(findings, baseline, runs))}")
    return 1 if any(f.failed for f in findings) else 0
