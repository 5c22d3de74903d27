"""A multi-process `bench run` whose peer dies or hangs fails with one clear line instead of hanging.

Two processes run ``bench run`` with torchrun's environment variables (gloo on CPU, collective timeout 5 s
through ``BENCH_DIST_TIMEOUT``); process 1 dies (``os._exit``) or hangs (sleeps) at its third training
step.  Process 0 must return exit status 2 with one ``bench: error:`` line naming the failed collective.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch.multiprocessing as mp

from tasks.datasets.synth.writer import ensure_synthetic


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, port: int, peer: str, root: str, tmp: str, queue: Any) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank), BENCH_DIST_TIMEOUT="5", OMP_NUM_THREADS="1",
                      BENCH_CACHE=f"{tmp}/cache-{rank}")  # fmt: skip
    from bench.cli import main
    from pretrain.trainer import Trainer

    if rank == 1:
        step = Trainer.train_step

        def misbehave(self: Trainer, *args: Any) -> dict[str, float]:
            if self.step == 2:
                if peer == "hangs":
                    time.sleep(120)
                os._exit(1)
            return step(self, *args)

        Trainer.train_step = misbehave  # type: ignore[method-assign]
    sys.stderr = open(f"{tmp}/stderr-{rank}.txt", "w")  # noqa: SIM115
    argv = ["run", "--recipe", "moco", "--tasks", "knn/cifar10", "--data-root", root, "--runs-dir",
            f"{tmp}/runs", "--no-progress", "--set", "train.batch_size=16",
            "--set", "train.epochs=2"]  # fmt: skip
    code = main(argv)
    sys.stderr.flush()
    queue.put((rank, code))
    queue.close()
    queue.join_thread()  # the queue's feeder thread must deliver before the process exits
    os._exit(0)


@pytest.mark.slow
@pytest.mark.parametrize("peer", ["dies", "hangs"])
def test_peer_failure_stops_the_job_with_a_clear_message(peer: str, tmp_path: Path) -> None:
    root = ensure_synthetic(tmp_path / "data", ["imagenet", "cifar10"], "tiny")
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _port()
    procs = [
        ctx.Process(target=_worker, args=(r, port, peer, str(root), str(tmp_path), queue)) for r in range(2)
    ]
    for p in procs:
        p.start()
    try:
        rank, code = queue.get(timeout=180)  # process 0 reports instead of waiting forever
    finally:
        for p in procs:
            p.kill()
            p.join(10)
    assert (rank, code) == (0, 2)
    errors = [
        line for line in (tmp_path / "stderr-0.txt").read_text().splitlines() if "bench: error:" in line
    ]
    assert len(errors) == 1 and "Traceback" not in (tmp_path / "stderr-0.txt").read_text()
    assert "process 0 of 2: a collective operation failed" in errors[0]
    assert "another process of the job died or hangs (collective timeout 5 s" in errors[0]
