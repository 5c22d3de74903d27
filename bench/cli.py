"""The ``bench`` command line.

    bench run --recipe moco[,moco_mixup|'moco*'] --tasks cifar10 [--profile smoke] [--data-root DIR]
              [--seeds 0,1] [--set k=v] [--rerun-tasks]
              [--launcher local|slurm [--slurm-partition P --gpus-per-node N --nodes K --timeout-min T]
               [--split-tasks] [--detach]]
    bench eval --checkpoint FILE [--backbone resnet50] --tasks linear [--allow-partial] [--label NAME]
    bench study NAME [--profile smoke|paper] [--seeds 0,1] [--data-root D] [--dry-run] [--launcher ...]
    bench ls recipes [--grid]|tasks|backbones|profiles|studies
    bench show recipe NAME [--profile P] [--set k=v] | bench show study NAME
    bench generate --generator sd-unclip|sd-variations|icgan|oracle [--model DIR] --dataset NAME [...]
    bench data synth --root DIR [--datasets cifar10,imagenet] [--scale smoke]
    bench data verify NAME|STORE_DIR [--root DIR]
    bench leaderboard [RUNS_DIR] [-o LEADERBOARD.md | -o DIR] [--layout families|paper:2310.18850|...]
    bench ci check --baseline FILE [RUNS_DIR] [--junit FILE] [--markdown FILE]
    bench ci baseline -o FILE [RUNS_DIR] [--recipes a,b] [--note TEXT]

User errors (unknown names, bad configs, missing data, bad checkpoints) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from core.errors import BenchError


def _add_common_recipe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="smoke", help="scale profile: smoke (CPU, minutes) or paper")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe field, e.g. --set train.epochs=5 (repeatable)",
    )


def _add_on_corrupt(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--on-corrupt",
        choices=["raise", "skip"],
        default="raise",
        help="unreadable images: fail naming the file (default) or skip them (counted in results)",
    )


def add_launcher_args(p: argparse.ArgumentParser) -> None:
    """Fan-out options (:mod:`bench.launch`): one submitit job per (recipe, seed) cell."""
    g = p.add_argument_group("fan-out (one job per recipe x seed cell, via submitit)")
    g.add_argument(
        "--launcher", choices=["local", "slurm"], help="run cells as jobs (default: in this process)"
    )
    g.add_argument("--slurm-partition", help="Slurm partition")
    g.add_argument("--gpus-per-node", type=int, default=0, help="GPUs (= processes) per node and job")
    g.add_argument("--nodes", type=int, default=1, help="nodes per pretraining job (Slurm)")
    g.add_argument("--cpus-per-task", type=int, default=8, help="CPUs per process (Slurm)")
    g.add_argument("--timeout-min", type=int, default=24 * 60, help="job time limit; on timeout it requeues")
    g.add_argument("--max-parallel", type=int, default=2, help="local launcher: jobs running at once")
    g.add_argument(
        "--split-tasks", action="store_true", help="each task in its own job after the cell's pretraining"
    )
    g.add_argument(
        "--detach", action="store_true", help="submit and return (collect later: bench leaderboard)"
    )
    g.add_argument("--submitit-dir", help="job logs and pickles (default: RUNS_DIR/.submitit)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench", description="augbench: SSL augmentation benchmark suite")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="pretrain a recipe and evaluate it on tasks")
    p.add_argument(
        "--recipe",
        required=True,
        help="recipe names, globs over the registry ('moco*') or recipe YAML files, comma-separated",
    )
    p.add_argument(
        "--tasks", default="all", help="comma-separated tasks or groups (bench ls tasks); none: pretrain only"
    )
    _add_common_recipe_args(p)
    p.add_argument("--data-root", help="dataset root (default: $BENCH_DATA, else synthetic stand-ins)")
    p.add_argument("--runs-dir", help="where runs and results go (default: $BENCH_RUNS or ./runs)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default: the recipe's train.seed)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted pretraining run")
    p.add_argument("--fresh", action="store_true", help="delete this run's directory and start over")
    p.add_argument(
        "--rerun-tasks",
        action="store_true",
        help="run tasks even when their result exists (same config, task version, profile, data root)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--leaderboard", help="leaderboard file to regenerate (default: RUNS_DIR/LEADERBOARD.md)")
    _add_on_corrupt(p)
    add_launcher_args(p)

    p = sub.add_parser("eval", help="evaluate an external checkpoint (no pretraining) on tasks")
    p.add_argument("--checkpoint", required=True, help="safetensors or torchvision/MoCo-style .pth file")
    p.add_argument("--backbone", default="resnet50", help="architecture to load it into (bench ls backbones)")
    p.add_argument("--tasks", default="all", help="comma-separated tasks or groups (bench ls tasks)")
    p.add_argument("--profile", default="smoke", help="eval resolutions/budgets: smoke or paper")
    p.add_argument(
        "--label", help="name of this checkpoint in results and leaderboards (default: ckpt:<file>)"
    )
    p.add_argument("--prefix", help="key prefix of the backbone tensors (default: detected)")
    p.add_argument(
        "--allow-partial",
        action="store_true",
        help="evaluate even if some backbone tensors are missing or mis-shaped (they stay random)",
    )
    p.add_argument("--data-root", help="dataset root (default: $BENCH_DATA, else synthetic stand-ins)")
    p.add_argument("--runs-dir", help="where results go (default: $BENCH_RUNS or ./runs)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--leaderboard", help="leaderboard file to regenerate (default: RUNS_DIR/LEADERBOARD.md)")
    _add_on_corrupt(p)

    p = sub.add_parser("generate", help="write generated variants of a dataset split (arXiv 2403.05966)")
    p.add_argument("--generator", required=True, help="sd-unclip, sd-variations, icgan or oracle")
    p.add_argument("--model", help="local model folder (never downloaded; the oracle takes none)")
    p.add_argument("--dataset", required=True, help="dataset whose images get variants (bench ls tasks)")
    p.add_argument("--split", default="train", help="split to generate for (default: train)")
    p.add_argument("--per-image", type=int, default=10, help="variants per source image (default 10)")
    p.add_argument("--steps", type=int, default=10, help="denoising steps of diffusion generators (10)")
    p.add_argument(
        "--size", type=int, help="output side in px (default: 224 SD, 256 IC-GAN, source size oracle)"
    )
    p.add_argument("--seed", type=int, default=0, help="base seed (variant seeds derive from it)")
    p.add_argument("--batch-size", type=int, default=8, help="source images per generator call")
    p.add_argument("--noise-level", type=int, default=0, help="sd-unclip: image-embedding noise level")
    p.add_argument(
        "--guidance-scale", type=float, help="guidance (diffusion; default 10 sd-unclip, 3 sd-variations)"
    )
    p.add_argument("--truncation", type=float, default=0.7, help="icgan: truncated-normal bound (0.7)")
    p.add_argument("--keep", type=float, default=0.5, help="oracle: closeness to the source instance, 0..1")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda[:i]")
    p.add_argument("--shard", help="i/n: this process's share of the sources (default: Slurm array or 0/1)")
    p.add_argument("--limit", type=int, help="only the first N source images (a quick look)")
    p.add_argument("--out", help="store directory (default: <data root>/<dataset>-variants/<generator>)")
    p.add_argument("--data-root", help="dataset root (default: $BENCH_DATA, else synthetic stand-ins)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser("study", help="run a declared study (a paper's grid) and write its tables")
    p.add_argument("name", help="study name (bench ls studies) or a study YAML file")
    p.add_argument("--profile", default="smoke", choices=["smoke", "paper"], help="the study's profile")
    p.add_argument("--seeds", help="comma-separated seeds (default: the study's, for this profile)")
    p.add_argument("--data-root", help="dataset root (default: $BENCH_DATA, else synthetic stand-ins)")
    p.add_argument("--runs-dir", help="where runs and results go (default: $BENCH_RUNS or ./runs)")
    p.add_argument("--dry-run", action="store_true", help="list cells, estimated cost, needed data/models")
    p.add_argument("--throughput", type=float, help="--dry-run: pretraining images/s assumed per cell")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_launcher_args(p)

    p = sub.add_parser("ls", help="list recipes, tasks, backbones, profiles or studies")
    p.add_argument("what", choices=["recipes", "tasks", "backbones", "profiles", "studies"])
    p.add_argument(
        "--grid", action="store_true", help="recipes: the grid as tables (methods x augmentations)"
    )
    p.add_argument("--data-root", help="data root whose dataset status `ls tasks` shows")

    p = sub.add_parser("show", help="print a resolved recipe or a study")
    p.add_argument("what", choices=["recipe", "study"])
    p.add_argument("name")
    _add_common_recipe_args(p)
    p.add_argument("--data-root", help="data root whose variant stores the recipe would read")

    p = sub.add_parser("data", help="synthetic data and dataset checks")
    dsub = p.add_subparsers(dest="data_command", required=True)
    q = dsub.add_parser("synth", help="write synthetic stand-ins in the real datasets' on-disk layouts")
    q.add_argument("--root", required=True)
    q.add_argument("--datasets", default="all", help="comma-separated dataset names (default: all)")
    q.add_argument("--scale", default="smoke", choices=["smoke", "tiny"])
    q = dsub.add_parser(
        "verify", help="check a dataset (or a variant store directory): layout, counts, images"
    )
    q.add_argument("name", help="dataset name, or the path of a variant store (bench generate --out)")
    q.add_argument("--root", help="data root (default: $BENCH_DATA)")
    q.add_argument("--no-images", action="store_true", help="skip decoding every image")

    p = sub.add_parser("leaderboard", help="render result files as leaderboard tables, exports and plots")
    p.add_argument("runs_dir", nargs="?", help="directory searched for results (default: ./runs)")
    p.add_argument(
        "-o",
        "--output",
        default="LEADERBOARD.md",
        help="FILE.md (markdown, plots in FILE-plots/) or a directory (markdown, CSV, JSON, plots, index.md)",
    )
    p.add_argument(
        "--layout", default="families", help="families (default), paper:2310.18850, paper:2403.05966"
    )
    p.add_argument("--no-plots", action="store_true", help="tables and exports only")

    p = sub.add_parser("ci", help="regression gate against stored baselines")
    csub = p.add_subparsers(dest="ci_command", required=True)
    q = csub.add_parser(
        "check", help="fail (exit 1) on regression, NaN/inf, missing result, task version or config change"
    )
    q.add_argument("runs_dir", nargs="?")
    q.add_argument("--baseline", required=True)
    q.add_argument("--junit", help="also write the findings as JUnit XML to this file")
    q.add_argument("--markdown", help="also write the findings as markdown (PR comment, job summary)")
    q = csub.add_parser("baseline", help="write a baseline file from current results (>= 3 seeds per entry)")
    q.add_argument("runs_dir", nargs="?")
    q.add_argument("-o", "--output", required=True)
    q.add_argument("--profile", default="smoke")
    q.add_argument("--data-source", default="synthetic", choices=["synthetic", "real"])
    q.add_argument("--recipes", help="comma-separated recipes or globs to include (default: all)")
    q.add_argument("--min-seeds", type=int, default=3, help="seeds required per entry (default 3, minimum 3)")
    q.add_argument("--alpha", type=float, help="per-entry false-alarm probability (default 0.005)")
    q.add_argument("--rel-floor", type=float, default=0.02, help="tolerance floor, fraction of the mean")
    q.add_argument("--abs-floor", type=float, default=0.001, help="tolerance floor, metric units")
    q.add_argument("--note", default="", help="how the runs were produced (stored in the baseline)")
    q.add_argument(
        "--reruns", help="runs directory with reruns of baseline seeds: measures rerun noise (paired gate)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from bench import commands

        return commands.dispatch(args)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # a collective of a multi-process job failed: a peer died or hangs
        from pretrain.distributed import collective_failure

        failure = collective_failure(exc)
        if failure is None:
            raise
        print(f"bench: error: {failure}", file=sys.stderr)
        return 2
    except OSError as exc:  # the environment: a full disk, an unwritable directory, a vanished file
        where = f": {exc.filename}" if exc.filename else ""
        print(f"bench: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted (pretraining resumes with --resume)", file=sys.stderr)
        return 130


def entry() -> None:  # pragma: no cover
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
