"""Whole training steps under a real 2-process gloo group (CPU) equal one process on the same global batch.

For every method, :meth:`Trainer.train_step` runs 3 steps (forward through the DDP-wrapped method, MoCo's
shuffled key batch and queue, SimCLR's gathered negatives, BYOL's EMA target, SimSiam's stop-gradient,
Barlow Twins' all-reduced cross-correlation; backward with DDP's gradient averaging; the optimiser; the
momentum updates) with 2 processes of batch 4 and with one process of batch 8, on identical views (the
global batch's rows ``[4r, 4r + 4)`` go to rank ``r``).  Then:

* the per-step loss of one process equals the mean of the two processes' losses (DDP minimises that mean),
* every parameter and buffer of the method after 3 steps (backbone, heads, momentum encoders, MoCo's
  queue) is equal on both ranks and equal to the single process's,

within ``rtol = 1e-7, atol = 1e-10`` in float64 (the collectives and the batch split change the order of
float reductions; in float32, Barlow Twins' standardisation over 4-sample shards amplifies that noise to
~1e-3 relative in a few weights; a scaling or gather bug is off by factors, far outside either).  The
optimiser is SGD, whose update is linear in the gradient: Adam-type updates of near-zero gradients are
about ``lr * sign(g)`` and turn float noise into full-size differences.  BatchNorm layers run with frozen
statistics (eval mode) in both runs: per-process BN over 4 samples cannot equal BN over 8 (that is what
SyncBN is for, which torch runs on accelerators only), so the test isolates everything else.
A resumed 2-process MoCo run (2 steps, checkpoint, killed, new trainers, 2 more steps; BN in training mode
with MoCo's shuffled key batch) equals an uninterrupted one exactly.
"""

from __future__ import annotations

import queue as queue_module
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.modules.batchnorm import _BatchNorm

from pretrain.backbones import build_backbone
from pretrain.data import PretrainStream
from pretrain.methods import build_method
from pretrain.methods.base import ViewBatch
from pretrain.recipes import resolve_recipe
from pretrain.trainer import Trainer

WORLD, LOCAL, STEPS, SIZE = 2, 4, 3, 16
METHODS = ["moco", "simclr", "byol", "simsiam", "barlow"]
TINY = [
    f"augment.views.0.size={SIZE}", f"augment.views.1.size={SIZE}", "train.precision=fp32",
    "train.channels_last=false", "train.checkpoint_every=0", "optim.warmup_epochs=0", "train.epochs=100",
    "optim.name=sgd", "optim.lr=0.5",
]  # fmt: skip
SMALL_HEADS = {
    "moco": ["method.hidden_dim=32", "method.dim=16", "method.queue_size=32"],
    "simclr": ["method.hidden_dim=32", "method.dim=16"],
    "byol": ["method.hidden_dim=32", "method.dim=16", "method.pred_hidden_dim=32"],
    "simsiam": ["method.hidden_dim=32", "method.dim=16", "method.pred_hidden_dim=8"],
    "barlow": ["method.hidden_dim=32", "method.dim=16"],
}


def _views(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + step)
    return (
        torch.rand(WORLD * LOCAL, 3, SIZE, SIZE, generator=g),
        torch.rand(WORLD * LOCAL, 3, SIZE, SIZE, generator=g),
    )


def _trainer(method_name: str, batch: int, rank: int, run_dir: Path, *extra: str) -> Trainer:
    overrides = [*TINY, *SMALL_HEADS[method_name], f"train.batch_size={batch}", *extra]
    recipe = resolve_recipe(method_name, "smoke", overrides)
    torch.manual_seed(0)  # identical initial weights in every process
    method = build_method(recipe.method, build_backbone(recipe.backbone.name)).to(torch.float64)
    for module in method.modules():
        if isinstance(module, _BatchNorm):
            module.eval()  # frozen statistics: see the module docstring
    images = torch.zeros(64, 3, SIZE, SIZE, dtype=torch.uint8)
    world = dist.get_world_size() if dist.is_initialized() else 1
    stream = PretrainStream(images, np.full(64, -1), batch, 0, images=images, rank=rank, world_size=world)  # type: ignore[arg-type]
    trainer = Trainer(recipe, method, stream, run_dir, torch.device("cpu"), progress=False)
    shard = slice(rank * batch, (rank + 1) * batch)

    def policy(images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> ViewBatch:
        v0, v1 = _views(trainer.step)
        return ViewBatch(views=(v0[shard], v1[shard]), labels=torch.full((batch,), -1), mix=None)

    trainer.policy = policy  # type: ignore[assignment]
    return trainer


def _state(trainer: Trainer) -> dict[str, np.ndarray]:
    return {k: v.detach().double().numpy().copy() for k, v in trainer.method.state_dict().items()}


def _run(method_name: str, batch: int, rank: int, run_dir: Path) -> tuple[list[float], dict[str, np.ndarray]]:
    trainer = _trainer(method_name, batch, rank, run_dir)
    dummy = torch.zeros(batch, 3, SIZE, SIZE, dtype=torch.uint8)
    losses = [trainer.train_step(dummy, torch.full((batch,), -1))["loss"] for _ in range(STEPS)]
    return losses, _state(trainer)


RESUME = ("train.max_steps=4", "train.checkpoint_every=2")


def _resumed(rank: int, run_dir: Path, interrupt: bool) -> dict[str, np.ndarray]:
    """MoCo, 4 steps through ``fit``: straight, or killed after the step-2 checkpoint, then new trainers
    resume from it."""
    first = _trainer("moco", LOCAL, rank, run_dir, *RESUME)
    if not interrupt:
        first.fit()
        return _state(first)
    step = first.train_step

    def dying(*args: Any) -> dict[str, float]:
        if first.step == 2:  # the step-2 checkpoint exists; the process dies before step 3
            raise KeyboardInterrupt
        return step(*args)

    first.train_step = dying  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    dist.barrier()  # rank 0 has written the checkpoint
    second = _trainer("moco", LOCAL, rank, run_dir, *RESUME)
    second.fit(resume=True)
    assert second.step == 4
    return _state(second)


def _worker(rank: int, store: str, tmp: str, queue: Any) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    out: dict[str, Any] = {m: _run(m, LOCAL, rank, Path(tmp) / f"{m}-ddp") for m in METHODS}
    out["resume"] = {flag: _resumed(rank, Path(tmp) / f"resume-{flag}", flag) for flag in (False, True)}
    queue.put((rank, out))
    dist.barrier()
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp(tmp_path_factory: pytest.TempPathFactory) -> dict[int, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("ddp")
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, str(tmp / "store"), str(tmp), queue)) for r in range(WORLD)]
    for p in procs:
        p.start()
    results: dict[int, dict[str, Any]] = {}
    deadline = time.time() + 900
    while len(results) < WORLD:  # fail fast when a worker dies instead of waiting for its result
        try:
            rank, out = queue.get(timeout=1)
            results[rank] = out
        except queue_module.Empty:
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            assert not dead and time.time() < deadline, f"DDP worker failed (exit codes {dead})"
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return results


def _close(a: dict[str, np.ndarray], b: dict[str, np.ndarray], what: str) -> None:
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-7, atol=1e-10, err_msg=f"{what}: {key}")


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_two_processes_equal_one_on_the_global_batch(
    method: str, ddp: dict[int, dict[str, Any]], tmp_path: Path
) -> None:
    torch.set_num_threads(1)
    losses, state = _run(method, WORLD * LOCAL, 0, tmp_path / "single")
    (l0, s0), (l1, s1) = ddp[0][method], ddp[1][method]
    np.testing.assert_allclose((np.array(l0) + np.array(l1)) / 2, losses, rtol=1e-9, err_msg="loss")
    _close(s0, s1, "rank 0 vs rank 1")
    if method == "moco":  # MoCo counts its cross-process key shuffles (none in one process)
        assert s0.pop("shuffles") == STEPS and state.pop("shuffles") == 0
    _close(s0, state, "2 processes vs 1")
    if method == "moco":  # the queue holds the gathered keys of both processes, in rank order
        assert np.abs(state["queue"]).sum() > 0


@pytest.mark.slow
def test_resume_under_two_processes_matches_uninterrupted(ddp: dict[int, dict[str, Any]]) -> None:
    for rank in range(WORLD):
        straight, resumed = ddp[rank]["resume"][False], ddp[rank]["resume"][True]
        assert straight.keys() == resumed.keys()
        for key in straight:
            np.testing.assert_array_equal(straight[key], resumed[key], err_msg=key)
