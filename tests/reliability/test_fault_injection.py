"""Fault injection: SIGKILL a `bench run` at seeded random moments in every phase, rerun, compare.

One uninterrupted reference run (pretraining, feature caching + kNN, the augmented linear protocol, result
writing) is computed first.  Then the same command, in a fresh runs directory and feature cache, is
started ``len(KILLS)`` times, each time with ``--resume``, and SIGKILLed at a point of the phase the
schedule names: the first moment a file of that phase is written *by this attempt* (a checkpoint, the
feature cache's temporary file, the linear protocol's per-epoch state, a result, ...), plus a seeded
random delay.  Each restart skips what is complete, so the kills walk through the phases.  Finally the
run is allowed to finish.  Required afterwards:

* the final metrics are identical to the uninterrupted run's (every stage resumes exactly on CPU);
* no temporary file (``*.tmp-<pid>``) is left in the runs directory or the feature cache, and every
  result file is complete JSON (atomic writes: a partial file is never read as complete).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.datasets.synth.writer import ensure_synthetic

SEED = 20261130
#: (phase, glob under the attempt's runs dir or feature cache, max extra delay in s): kill when a file
#: matching the glob is written by the attempt, after a uniform random extra delay.
KILLS = [
    ("start-up", "", 3.0),
    ("pretraining", "runs/*/*/checkpoints/last.pt", 0.4),
    ("pretraining", "runs/*/*/checkpoints/last.pt", 0.4),
    ("backbone export", "runs/*/*/backbone.safetensors", 0.05),
    ("feature caching", "cache/features/*.tmp-*", 0.2),
    ("feature caching", "cache/features/*.f16", 0.1),
    ("kNN / result writing", "runs/*/*/results/*.json", 0.05),
    ("augmented linear eval", "runs/*/*/tasks/linear-aug-*.pt", 0.3),
    ("augmented linear eval", "runs/*/*/tasks/linear-aug-*.pt", 0.3),
    ("result writing", "runs/*/*/results/linear-aug-*.json", 0.02),
    ("leaderboard", "runs/LEADERBOARD.md", 0.0),
]


def _argv(root: Path, runs: Path) -> list[str]:
    return [
        sys.executable, "-m", "bench.cli", "run", "--recipe", "moco",
        "--tasks", "knn/cifar10,linear-aug/cifar10", "--data-root", str(root), "--runs-dir", str(runs),
        "--no-progress", "--resume",
        "--set", "train.batch_size=32", "--set", "train.epochs=3", "--set", "train.checkpoint_every=2",
    ]  # fmt: skip


def _env(cache: Path) -> dict[str, str]:
    return {**os.environ, "BENCH_CACHE": str(cache), "OMP_NUM_THREADS": "1"}


def _metrics(runs: Path) -> dict[str, dict[str, float]]:
    out = {}
    for path in sorted(runs.rglob("results/*.json")):
        doc = json.loads(path.read_text())  # complete JSON, or this fails
        out[doc["task"]["name"]] = doc["metrics"]
    return out


def _kill_at(proc: subprocess.Popen[bytes], base: Path, pattern: str, delay: float, start: float) -> bool:
    """SIGKILL ``proc`` ``delay`` s after it writes a file matching ``pattern`` (or after ``delay`` s if
    ``pattern`` is empty); returns whether it was killed (False: it finished first)."""
    while proc.poll() is None:
        if not pattern or any(p.stat().st_mtime >= start for p in base.glob(pattern) if p.exists()):
            time.sleep(delay)
            if proc.poll() is not None:
                return False
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.005)
    return False


@pytest.mark.slow
def test_killed_runs_resume_to_identical_metrics(tmp_path: Path) -> None:
    root = ensure_synthetic(tmp_path / "data", ["imagenet", "cifar10"], "tiny")
    ref_runs, runs = tmp_path / "ref-runs", tmp_path / "runs"  # KILLS' globs are relative to tmp_path
    t0 = time.perf_counter()
    done = subprocess.run(
        _argv(root, ref_runs), env=_env(tmp_path / "ref-cache"), capture_output=True, text=True
    )
    duration = time.perf_counter() - t0
    assert done.returncode == 0, done.stderr
    reference = _metrics(ref_runs)
    assert set(reference) == {"knn/cifar10", "linear-aug/cifar10"}

    rng = random.Random(SEED)
    killed = []
    for phase, pattern, max_delay in KILLS:
        start = time.time() - 0.01
        proc = subprocess.Popen(_argv(root, runs), env=_env(tmp_path / "cache"), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)  # fmt: skip
        if _kill_at(proc, tmp_path, pattern, rng.uniform(0.0, max_delay), start):
            killed.append(phase)
        else:
            assert proc.returncode == 0, proc.stderr.read().decode() if proc.stderr else ""
    final = subprocess.run(_argv(root, runs), env=_env(tmp_path / "cache"), capture_output=True, text=True)
    assert final.returncode == 0, final.stderr
    print(f"killed during: {killed} (reference run {duration:.1f} s)")
    assert len(killed) >= 10 and len(set(killed)) >= 6
    assert _metrics(runs) == reference
    leftovers = [p for folder in (runs, tmp_path / "cache") for p in folder.rglob("*.tmp-*")]
    assert not leftovers, leftovers
