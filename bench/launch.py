"""Fan-out of a recipe x seed matrix over submitit executors (``bench run --launcher local|slurm``).

One *cell* = one (recipe, seed).  Each cell becomes one job that runs ``bench run`` for that cell (its
pretraining, then its tasks) with ``--resume``, so a requeued job continues from its checkpoint; cells whose
results already exist are skipped by ``bench run`` itself.  With ``split_tasks`` a cell's pretraining is one
job and each task another job that starts once the pretraining job has succeeded (Slurm: ``afterok``
dependency; local: submitted when it finishes), so slow dense tasks do not wait behind each other.

* ``local``: :class:`submitit.LocalExecutor`, every job a subprocess on this machine (the tests' path);
* ``slurm``: :class:`submitit.SlurmExecutor`: ``--nodes K`` x ``--gpus-per-node N`` tasks per job
  (one process per GPU, torch.distributed environment exported from submitit's, i.e. a torchrun-style
  job), ``--slurm-partition``, ``--timeout-min``; preempted or timed-out jobs are requeued and resume from
  their checkpoint (:meth:`CellJob.checkpoint`, submitit's checkpointing hook).

The launching process waits for every job (unless ``detach``), reports failures with each job's log path
and regenerates the leaderboard from the result files.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bench.errors import BenchError, ConfigError

Launcher = Literal["local", "slurm"]


@dataclass(frozen=True)
class LaunchConfig:
    """Where and how cell jobs run (``bench run --launcher ...`` options)."""

    launcher: Launcher
    folder: Path  # submitit's logs and pickles (default: <runs>/.submitit)
    partition: str | None = None
    gpus_per_node: int = 0
    nodes: int = 1
    timeout_min: int = 60 * 24
    cpus_per_task: int = 8
    split_tasks: bool = False
    detach: bool = False
    max_parallel: int = 2  # local launcher: jobs running at once on this machine

    def __post_init__(self) -> None:
        if self.nodes < 1 or self.gpus_per_node < 0 or self.timeout_min < 1 or self.cpus_per_task < 1:
            raise ConfigError("--nodes, --timeout-min and --cpus-per-task must be >= 1, --gpus-per-node >= 0")
        if self.launcher == "local" and (self.nodes > 1 or self.gpus_per_node > 1):
            raise ConfigError("--launcher local runs one process per job: use --nodes 1 and at most one GPU")


@dataclass(frozen=True)
class Cell:
    """One job's ``bench run`` arguments: a recipe, a seed and the tasks (``none`` = pretraining only)."""

    recipe: str
    seed: int | None
    tasks: str
    depends_on: int | None = None  # index of the cell whose job must succeed first
    label: str = field(default="")

    def argv(self, common: Sequence[str]) -> list[str]:
        seeds = ["--seeds", str(self.seed)] if self.seed is not None else []
        return [
            "run",
            "--recipe",
            self.recipe,
            *seeds,
            "--tasks",
            self.tasks,
            *common,
            "--resume",
            "--no-progress",
        ]


def plan_cells(
    recipes: Sequence[str], seeds: Sequence[int | None], tasks: Sequence[str], split: bool
) -> list[Cell]:
    """Cells of the matrix; with ``split`` a pretraining cell per (recipe, seed) then one per task.
    No tasks: one pretraining-only cell (``--tasks none``) per (recipe, seed)."""
    cells: list[Cell] = []
    for recipe in recipes:
        for seed in seeds:
            name = Path(recipe).stem if recipe.endswith((".yaml", ".yml")) else recipe
            tag = f"{name}-s{seed if seed is not None else 'default'}"
            if not split or not tasks:
                cells.append(Cell(recipe, seed, ",".join(tasks) or "none", label=tag))
                continue
            cells.append(Cell(recipe, seed, "none", label=f"{tag}-pretrain"))
            parent = len(cells) - 1
            cells.extend(Cell(recipe, seed, task, parent, f"{tag}-{task}") for task in tasks)
    return cells


class CellJob:
    """The callable a submitit job runs: ``bench run`` for one cell (picklable, checkpointable)."""

    def __init__(self, argv: list[str], distributed: bool) -> None:
        self.argv, self.distributed = argv, distributed

    def __call__(self) -> int:
        if self.distributed:  # a multi-GPU Slurm job: one task per GPU, torchrun-style environment
            import submitit

            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        from bench.cli import main

        code = main(self.argv)
        if code != 0:
            raise RuntimeError(f"bench {' '.join(self.argv)} exited with status {code}")
        return code

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit's hook on preemption/timeout: requeue the same cell; ``--resume`` continues it."""
        import submitit

        return submitit.helpers.DelayedSubmission(CellJob(self.argv, self.distributed))


def make_executor(cfg: LaunchConfig, name: str) -> Any:
    try:
        import submitit
    except ImportError:
        raise BenchError("--launcher needs submitit: pip install 'augbench[cluster]'") from None
    if cfg.launcher == "local":
        executor = submitit.LocalExecutor(folder=str(cfg.folder))
        executor.update_parameters(timeout_min=cfg.timeout_min, gpus_per_node=min(cfg.gpus_per_node, 1))
        return executor
    try:
        slurm = submitit.SlurmExecutor(folder=str(cfg.folder), max_num_timeout=10)
    except RuntimeError:  # submitit: no `srun` on PATH
        raise BenchError("--launcher slurm: no Slurm on this machine (srun not found on PATH)") from None
    tasks = max(1, cfg.gpus_per_node)
    params: dict[str, Any] = {
        "job_name": name,
        "nodes": cfg.nodes,
        "ntasks_per_node": tasks,
        "cpus_per_task": cfg.cpus_per_task,
        "time": cfg.timeout_min,
        "signal_delay_s": 120,
    }
    if cfg.gpus_per_node:
        params["gpus_per_node"] = cfg.gpus_per_node
    if cfg.partition:
        params["partition"] = cfg.partition
    slurm.update_parameters(**params)
    return slurm


@dataclass(frozen=True)
class Submitted:
    cell: Cell
    job: Any


def _parent_state(cell: Cell, jobs: dict[int, Any]) -> str:
    """``ok`` (no parent, or it succeeded), ``waiting`` or ``failed``."""
    if cell.depends_on is None:
        return "ok"
    parent = jobs.get(cell.depends_on)
    if parent is None or not parent.done():
        return "waiting"
    return "failed" if parent.exception() is not None else "ok"


def submit(cells: list[Cell], cfg: LaunchConfig, common: Sequence[str]) -> list[Submitted]:
    """Submit every cell (see the module docstring).  Slurm: all at once, dependent cells with an
    ``afterok`` dependency.  Local: at most ``cfg.max_parallel`` jobs at a time, a dependent cell once its
    parent succeeded; returns when every local job was submitted (the last ones may still run)."""
    distributed = cfg.launcher == "slurm" and cfg.nodes * max(1, cfg.gpus_per_node) > 1
    jobs: dict[int, Any] = {}

    def launch(i: int) -> None:
        cell = cells[i]
        executor = make_executor(cfg, f"augbench-{cell.label}")
        if cell.depends_on is not None and cfg.launcher == "slurm":
            dependency = f"afterok:{jobs[cell.depends_on].job_id}"
            executor.update_parameters(additional_parameters={"dependency": dependency})
        jobs[i] = executor.submit(CellJob(cell.argv(common), distributed))
        print(
            f"submitted {cell.label}: job {jobs[i].job_id} (logs: {cfg.folder})", file=sys.stderr, flush=True
        )

    if cfg.launcher == "slurm":
        for i in range(len(cells)):
            launch(i)
    else:
        pending = list(range(len(cells)))
        while pending:
            states = {i: _parent_state(cells[i], jobs) for i in pending}
            pending = [i for i in pending if states[i] != "failed"]  # a failed pretraining: no tasks
            ready = [i for i in pending if states[i] == "ok"]
            if ready and sum(not job.done() for job in jobs.values()) < cfg.max_parallel:
                launch(ready[0])
                pending.remove(ready[0])
            else:
                time.sleep(0.5)
    return [Submitted(cells[i], jobs[i]) for i in sorted(jobs)]


def wait(submitted: list[Submitted]) -> list[tuple[Cell, str]]:
    """Wait for every job; returns ``(cell, failure message)`` for the jobs that failed."""
    failures = []
    for item in submitted:
        try:
            item.job.result()
        except Exception as exc:  # submitit re-raises the job's exception with its traceback text
            lines = [line for line in str(exc).strip().splitlines() if line.strip()]
            log = getattr(getattr(item.job, "paths", None), "stderr", "")
            failures.append((item.cell, f"{lines[-1] if lines else type(exc).__name__} (log: {log})"))
    return failures


def common_args(args: Any, runs: Path) -> list[str]:
    """The ``bench run`` options every cell job shares (from the launching command's arguments)."""
    out = ["--profile", args.profile, "--runs-dir", str(runs), "--on-corrupt", args.on_corrupt]
    if args.data_root:
        out += ["--data-root", str(Path(args.data_root).expanduser().resolve())]
    for override in args.overrides:
        out += ["--set", override]
    return out


def default_folder(runs: Path) -> Path:
    return Path(os.environ.get("BENCH_SUBMITIT_DIR", str(runs / ".submitit")))


def config_from_args(args: Any, runs: Path) -> LaunchConfig:
    """:class:`LaunchConfig` from ``bench run``'s fan-out options (checked before anything is submitted)."""
    if args.fresh:
        raise ConfigError(
            "--fresh cannot be combined with --launcher (a requeued job would delete its own progress): "
            "delete the run directory first or use --rerun-tasks"
        )
    if args.detach and args.launcher == "local":
        raise ConfigError("--detach needs --launcher slurm (local jobs are children of this process)")
    folder = Path(args.submitit_dir).expanduser() if args.submitit_dir else default_folder(runs)
    return LaunchConfig(
        launcher=args.launcher,
        folder=folder.resolve(),
        partition=args.slurm_partition,
        gpus_per_node=args.gpus_per_node,
        nodes=args.nodes,
        timeout_min=args.timeout_min,
        cpus_per_task=args.cpus_per_task,
        split_tasks=args.split_tasks,
        detach=args.detach,
        max_parallel=max(1, args.max_parallel),
    )


def job_recipe(name: str) -> str:
    """A recipe argument a job can use from any working directory (YAML files made absolute)."""
    path = Path(name).expanduser()
    return str(path.resolve()) if name.endswith((".yaml", ".yml")) and path.is_file() else name


def launch_matrix(
    args: Any, recipes: Sequence[str], seeds: Sequence[int | None], tasks: Sequence[str], runs: Path
) -> int:
    """``bench run --launcher ...``: submit the matrix's cells, wait for them (unless ``--detach``),
    regenerate the leaderboard and print one line per cell; exit status 2 when any job failed."""
    from tabulate import tabulate

    from leaderboard.render import write_leaderboard

    cfg = config_from_args(args, runs)
    cells = plan_cells([job_recipe(r) for r in recipes], seeds, list(tasks), cfg.split_tasks)
    common = common_args(args, runs)
    if args.rerun_tasks:
        common.append("--rerun-tasks")
    submitted = submit(cells, cfg, common)
    if cfg.detach:
        for item in submitted:
            print(f"{item.cell.label}: job {item.job.job_id}")
        print(f"jobs submitted (logs: {cfg.folder}); collect results with: bench leaderboard {runs}")
        return 0
    failures = dict((c.label, msg) for c, msg in wait(submitted))
    board = Path(args.leaderboard) if args.leaderboard else runs / "LEADERBOARD.md"
    write_leaderboard(runs, board)
    rows = [[s.cell.label, s.job.job_id, failures.get(s.cell.label, "done")] for s in submitted]
    never = [c.label for c in cells if c.label not in {s.cell.label for s in submitted}]
    rows += [[label, "-", "not submitted (its pretraining job failed)"] for label in never]
    print(tabulate(rows, headers=["cell", "job", "state"], disable_numparse=True))
    print(f"leaderboard: {board}")
    if failures or never:
        print(f"bench: error: {len(failures)} job(s) failed, {len(never)} not submitted", file=sys.stderr)
        return 2
    return 0
