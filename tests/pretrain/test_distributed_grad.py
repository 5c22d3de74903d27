"""Differentiable collectives under a real 2-process gloo group (CPU): SimCLR's gathered negatives and
Barlow Twins' all-reduced statistics give the single-process loss and, after DDP's gradient averaging,
the single-process gradient of the global batch."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pretrain.methods.barlow import barlow_loss
from pretrain.methods.base import MixInfo
from pretrain.methods.simclr import nt_xent

WORLD, N, D = 2, 6, 5
LOCAL_PERM = torch.tensor([2, 0, 1])  # per-process mixing partners (each process mixes within its shard)


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(N, D, generator=g, dtype=torch.float64)
    z2 = torch.randn(N, D, generator=g, dtype=torch.float64) + z1
    return z1, z2, torch.rand(N // WORLD, generator=g, dtype=torch.float64)


LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _grad(x: torch.Tensor) -> np.ndarray:
    assert x.grad is not None
    return x.grad.numpy().copy()


def _losses(lam: torch.Tensor, perm: torch.Tensor) -> dict[str, LossFn]:
    return {
        "simclr": lambda a, b: nt_xent(a, b, 0.3),
        "simclr_mixed": lambda a, b: nt_xent(a, b, 0.3, MixInfo(0, perm, lam)),
        "barlow": lambda a, b: barlow_loss(a, b, 0.1),
    }


def _worker(rank: int, store: str, queue: Any) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    z1, z2, lam = _inputs()
    shard = slice(rank * N // WORLD, (rank + 1) * N // WORLD)
    out = {}
    for name, fn in _losses(lam, LOCAL_PERM).items():
        a, b = z1[shard].clone().requires_grad_(True), z2[shard].clone().requires_grad_(True)
        loss = fn(a, b)
        loss.backward()
        out[name] = (loss.item(), _grad(a), _grad(b))
    queue.put((rank, out))
    dist.destroy_process_group()


@pytest.mark.slow
def test_gathered_and_reduced_losses_match_one_process(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, str(tmp_path / "store"), queue)) for r in range(WORLD)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    z1, z2, lam = _inputs()
    global_perm = torch.cat([LOCAL_PERM + r * (N // WORLD) for r in range(WORLD)])
    for name, fn in _losses(torch.cat([lam] * WORLD), global_perm).items():
        a, b = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
        loss = fn(a, b)
        loss.backward()
        per_rank = [results[r][name] for r in range(WORLD)]
        # DDP minimises the mean of the per-process losses and averages the gradients
        assert np.mean([r[0] for r in per_rank]) == pytest.approx(loss.item(), rel=1e-12), name
        np.testing.assert_allclose(np.concatenate([r[1] for r in per_rank]) / WORLD, _grad(a), rtol=1e-10)
        np.testing.assert_allclose(np.concatenate([r[2] for r in per_rank]) / WORLD, _grad(b), rtol=1e-10)
    assert results[0]["barlow"][0] == pytest.approx(results[1]["barlow"][0], rel=1e-12)  # one global loss
