"""Fan-out (`bench run --launcher local|slurm`): cell planning, option checks, the sbatch scripts submitit
would submit (a fake ``sbatch`` on PATH records them: there is no cluster here), the requeue hook, and a
local run of a 2-cell matrix with split task jobs."""

from __future__ import annotations

import json
import os
import pickle
import stat
from pathlib import Path

import pytest

from bench.cli import main
from bench.launch import Cell, CellJob, plan_cells

pytest.importorskip("submitit")

FAST = ["--set", "train.batch_size=32", "--set", "train.epochs=1"]


def test_plan_cells() -> None:
    assert plan_cells(["moco", "simclr"], [0, 1], ["knn/cifar10", "linear/cifar10"], split=False) == [
        Cell(r, s, "knn/cifar10,linear/cifar10", label=f"{r}-s{s}")
        for r in ("moco", "simclr")
        for s in (0, 1)
    ]
    split = plan_cells(["moco"], [None], ["a", "b"], split=True)
    assert split == [
        Cell("moco", None, "none", label="moco-sdefault-pretrain"),
        Cell("moco", None, "a", 0, "moco-sdefault-a"),
        Cell("moco", None, "b", 0, "moco-sdefault-b"),
    ]
    assert plan_cells(["/x/my.yaml"], [3], [], split=True) == [Cell("/x/my.yaml", 3, "none", label="my-s3")]
    argv = split[1].argv(["--profile", "smoke"])
    assert argv[:6] == ["run", "--recipe", "moco", "--tasks", "a", "--profile"] and "--resume" in argv


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--launcher", "local", "--fresh"], "--fresh cannot be combined with --launcher"),
        (["--launcher", "local", "--detach"], "--detach needs --launcher slurm"),
        (["--launcher", "local", "--gpus-per-node", "2"], "--launcher local runs one process per job"),
        (["--launcher", "slurm", "--nodes", "0"], "must be >= 1"),
        (["--launcher", "slurm"], "no Slurm on this machine (srun not found on PATH)"),
    ],
)
def test_launcher_option_errors(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", "--recipe", "moco", "--tasks", "knn/cifar10", "--runs-dir", str(tmp_path), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / ".submitit").exists()  # nothing submitted


@pytest.fixture
def fake_sbatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An ``sbatch`` that copies each submitted script to ``scripts/<job id>.sh`` and answers like Slurm."""
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(
        "#!/bin/sh\n"
        f'n=$(ls "{scripts}" | wc -l); id=$((1000 + n))\n'
        f'cp "$1" "{scripts}/$id.sh"\n'
        'echo "Submitted batch job $id"\n'
    )
    sbatch.chmod(sbatch.stat().st_mode | stat.S_IEXEC)
    srun = bin_dir / "srun"  # submitit only checks that it exists
    srun.write_text("#!/bin/sh\nexit 1\n")
    srun.chmod(srun.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return scripts


def test_slurm_scripts(fake_sbatch: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs, logs = tmp_path / "runs", tmp_path / "logs"
    argv = ["run", "--recipe", "moco", "--seeds", "0", "--tasks", "knn/cifar10,linear/cifar10",
            "--runs-dir", str(runs), "--launcher", "slurm", "--slurm-partition", "gpu", "--nodes", "2",
            "--gpus-per-node", "4", "--timeout-min", "90", "--split-tasks", "--detach",
            "--submitit-dir", str(logs), "--set", "train.epochs=3"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "moco-s0-pretrain: job 1000" in out and "moco-s0-knn/cifar10: job 1001" in out
    scripts = {p.stem: p.read_text() for p in fake_sbatch.glob("*.sh")}
    assert sorted(scripts) == ["1000", "1001", "1002"]
    for text in scripts.values():
        for flag in ("--partition=gpu", "--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--time=90"):
            assert f"#SBATCH {flag}" in text, flag
        assert "#SBATCH --signal=USR2@120" in text  # submitit's preemption signal: checkpoint + requeue
        assert "srun" in text
    assert "--dependency=afterok:1000" in scripts["1001"] and "--dependency=afterok:1000" in scripts["1002"]
    assert "dependency" not in scripts["1000"]
    # the pickled callable of each job: a multi-GPU (torchrun-style) `bench run` of its cell, resumable
    jobs = {}
    for path in logs.glob("*_submitted.pkl"):
        with path.open("rb") as handle:
            delayed = pickle.load(handle)  # submitit's own pickle of our callable (test-only)
        jobs[path.name.split("_")[0]] = delayed.function
    assert sorted(jobs) == ["1000", "1001", "1002"]
    first = jobs["1000"]
    assert isinstance(first, CellJob) and first.distributed
    assert first.argv[:6] == ["run", "--recipe", "moco", "--seeds", "0", "--tasks"]
    assert first.argv[6] == "none" and "--resume" in first.argv
    assert first.argv[first.argv.index("--set") : first.argv.index("--set") + 2] == [
        "--set",
        "train.epochs=3",
    ]
    assert jobs["1001"].argv[6] == "knn/cifar10"


def test_checkpoint_requeues_the_same_cell() -> None:
    job = CellJob(["run", "--recipe", "moco", "--resume"], distributed=True)
    delayed = job.checkpoint()
    again = delayed.function
    assert isinstance(again, CellJob) and again.argv == job.argv and again.distributed
    assert pickle.loads(pickle.dumps(delayed)).function.argv == job.argv


@pytest.mark.slow
def test_local_launcher_runs_cells_in_parallel(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """2 cells (seeds) pretrain as parallel local jobs, then their 2 task jobs each run side by side on one
    run directory (shared lock); a rerun submits nothing that recomputes, and the leaderboard is written."""
    root, runs = tmp_path / "data", tmp_path / "runs"
    assert (
        main(["data", "synth", "--root", str(root), "--scale", "tiny", "--datasets", "imagenet,cifar10"]) == 0
    )
    argv = ["run", "--recipe", "moco", "--seeds", "0,1", "--tasks", "knn/cifar10,linear/cifar10",
            "--data-root", str(root), "--runs-dir", str(runs), "--launcher", "local", "--split-tasks",
            "--max-parallel", "2", *FAST]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    for seed in (0, 1):
        for task in ("pretrain", "knn/cifar10", "linear/cifar10"):
            assert any(
                line.startswith(f"moco-s{seed}-{task} ") and line.endswith("done")
                for line in out.splitlines()
            )
    files = sorted(runs.glob("moco/*/results/*.json"))
    assert len(files) == 4
    assert {json.loads(f.read_text())["seed"] for f in files} == {0, 1}
    created = {f: json.loads(f.read_text())["created"] for f in files}
    assert "moco" in (runs / "LEADERBOARD.md").read_text()
    logs = list((runs / ".submitit").glob("*_log.err"))
    assert len(logs) == 6

    plain = [a for a in argv if a not in ("--split-tasks",)]
    assert main(plain) == 0  # one job per cell; both find their pretraining and results: nothing recomputed
    assert {f: json.loads(f.read_text())["created"] for f in files} == created
    assert "moco-s0 " in capsys.readouterr().out


def test_run_lock_shared_and_exclusive(tmp_path: Path) -> None:
    """Task jobs of a finished cell share the run directory; a pretraining (exclusive) excludes them all."""
    from bench.errors import BenchError
    from bench.fsutil import run_lock

    with run_lock(tmp_path, shared=True):
        with run_lock(tmp_path, shared=True):
            pass
        with pytest.raises(BenchError, match="in use by another bench run"), run_lock(tmp_path):
            pass
    holder = f"in use by another bench run \\(pid {os.getpid()}\\)"
    with run_lock(tmp_path), pytest.raises(BenchError, match=holder), run_lock(tmp_path, shared=True):
        pass
