"""Minimal torch.distributed helpers (no-ops in a single process).

Under ``torchrun`` every process calls :func:`init_from_env`; the trainer shards data by rank and the
methods gather keys/negatives across processes with :func:`all_gather_nograd` (no gradient) or with the
differentiable :func:`all_gather_with_grad` / :func:`all_reduce_sum_with_grad`.
"""

from __future__ import annotations

import datetime
import os
import re

import torch
import torch.distributed as dist

from core.errors import BenchError


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


#: Seconds a collective may wait for the other processes before failing (``BENCH_DIST_TIMEOUT``).
DEFAULT_TIMEOUT = 1800


def timeout_seconds() -> float:
    return float(os.environ.get("BENCH_DIST_TIMEOUT", DEFAULT_TIMEOUT))


def init_from_env() -> torch.device:
    """Initialise the process group when launched by torchrun (``WORLD_SIZE > 1``); return the device.

    Collectives time out after :func:`timeout_seconds`, so a process whose peer hangs fails instead of
    waiting forever (a peer that dies closes its connections and fails the others at once).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not is_distributed():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_seconds()))
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


_COLLECTIVE_FAILURE = re.compile(r"gloo|nccl|connection closed|timed out|timeout|broken pipe", re.IGNORECASE)


def collective_failure(exc: BaseException) -> BenchError | None:
    """A one-line :class:`BenchError` when ``exc`` is a failed collective of a multi-process job (a peer
    died or hung), else ``None``."""
    if not is_distributed() or not isinstance(exc, RuntimeError):
        return None
    text = str(exc).strip()
    if not _COLLECTIVE_FAILURE.search(text) and "Dist" not in type(exc).__name__:
        return None
    first = text.splitlines()[0] if text else type(exc).__name__
    return BenchError(
        f"process {rank()} of {world_size()}: a collective operation failed ({first[:160]}); another "
        f"process of the job died or hangs (collective timeout {timeout_seconds():.0f} s, BENCH_DIST_TIMEOUT)"
    )


@torch.no_grad()
def all_gather_nograd(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` [B, ...] from every process along dim 0 -> [world*B, ...] (no gradient)."""
    if not is_distributed():
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def broadcast_(x: torch.Tensor, src: int = 0) -> torch.Tensor:
    if is_distributed():
        dist.broadcast(x, src)
    return x


class _AllGatherWithGrad(torch.autograd.Function):
    """``all_gather`` whose backward sums the incoming gradients over processes and keeps this rank's slice.

    Every process computes its own loss from the gathered tensor, so the gradient of the sum of all
    processes' losses w.r.t. this rank's input is the sum over processes of their gradients w.r.t. this
    rank's slice of the gathered tensor (an all-reduce).  DDP then averages parameter gradients, which
    gives exactly the gradient of the mean of the per-process losses.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor) -> torch.Tensor:
        ctx.batch = x.shape[0]  # type: ignore[attr-defined]
        parts = [torch.empty_like(x) for _ in range(world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        b = ctx.batch  # type: ignore[attr-defined]
        return grad[rank() * b : (rank() + 1) * b]


class _AllReduceSumWithGrad(torch.autograd.Function):
    """``y = sum over processes of x`` (same on every process); backward all-reduces (sums) the gradient.

    Same reasoning as :class:`_AllGatherWithGrad`: rank r's input influences every process's loss.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor) -> torch.Tensor:
        y = x.contiguous().clone()
        dist.all_reduce(y, op=dist.ReduceOp.SUM)
        return y

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` [B, ...] from every process along dim 0 -> [world*B, ...], with gradient.

    Every process must pass the same ``B``.  Rows ``rank*B : (rank+1)*B`` of the result are this
    process's ``x``.  The gradient reaching ``x`` is the sum, over processes, of the gradients of their
    losses w.r.t. this slice (see :class:`_AllGatherWithGrad`).  Single process: returns ``x`` itself.
    """
    if not is_distributed():
        return x
    out: torch.Tensor = _AllGatherWithGrad.apply(x)
    return out


def all_reduce_sum_with_grad(x: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of ``x`` over processes (a new tensor), differentiable; single process: ``x``."""
    if not is_distributed():
        return x
    out: torch.Tensor = _AllReduceSumWithGrad.apply(x)
    return out
