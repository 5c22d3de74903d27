"""Optimisers of the linear probe (:mod:`tasks.linear`): many heads trained in one pass over the features.

* ``FeatureSource``: the fit/val rows of a feature matrix, resident on the device when they fit in
  ``max_memory_gb`` (full-batch path) or streamed from the fp16 memmap in chunks otherwise.
* ``BatchedLBFGS``: full-batch L-BFGS batched over heads (per-head curvature history, Armijo line search and
  stopping test), preconditioned by the feature covariance; minimises mean cross-entropy
  ``+ 0.5 * wd_h * ||W_h||^2`` per head (bias not regularised), i.e. scikit-learn's ``C = 1/(wd n)``.
* ``fit_adam``: the streamed fallback, mini-batch Adam with per-head learning rates and cosine decay.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from core.errors import DatasetError

if TYPE_CHECKING:
    from tasks.linear import ProbeConfig


def read_chunks(xs: np.ndarray, rows: np.ndarray, chunk_rows: int) -> Iterator[tuple[np.ndarray, Tensor]]:
    """``(rows_chunk, float32 CPU tensor of their features)``, at most ``chunk_rows`` rows at a time."""
    for s in range(0, len(rows), chunk_rows):
        r = rows[s : s + chunk_rows]
        block = np.array(xs[r[0] : r[-1] + 1] if r[-1] - r[0] + 1 == len(r) else xs[r])  # own, writable
        yield r, torch.from_numpy(block).to(torch.float32)


@dataclass(frozen=True)
class FeatureSource:
    """A split's features and labels, served standardised (mean/std of ``rows``) with a ones column."""

    xs: np.ndarray
    labels: np.ndarray
    chunk_rows: int
    device: torch.device
    mean: Tensor
    std: Tensor

    @classmethod
    def fitted_on(
        cls, xs: np.ndarray, labels: np.ndarray, rows: np.ndarray, cfg: ProbeConfig, dev: torch.device
    ) -> FeatureSource:
        n, mean = 0, torch.zeros(xs.shape[1], dtype=torch.float64)
        m2 = torch.zeros_like(mean)
        for _, x in read_chunks(xs, rows, cfg.chunk_rows):  # chunk-wise merge of means and squared deviations
            mean_b = x.mean(0)
            nb, delta = x.shape[0], mean_b.double() - mean
            m2 += (x - mean_b).square_().sum(0).double() + delta**2 * (n * nb / (n + nb))
            mean += delta * (nb / (n + nb))
            n += nb
        std = (m2 / n).sqrt()
        std[std < 1e-8] = 1.0
        return cls(xs, labels, cfg.chunk_rows, dev, mean.float(), std.float())

    def chunks(self, rows: np.ndarray) -> Iterator[tuple[Tensor, Tensor]]:
        """``(x [n, D + 1], y [n])`` on the device, ``chunk_rows`` rows at a time."""
        for r, x in read_chunks(self.xs, rows, self.chunk_rows):
            out = torch.empty(x.shape[0], x.shape[1] + 1)
            torch.sub(x, self.mean, out=out[:, :-1]).div_(self.std)
            out[:, -1] = 1.0
            if not math.isfinite(float(out.sum())):  # any NaN/inf makes the sum non-finite
                raise DatasetError("features contain NaN or infinity")
            yield out.to(self.device), torch.from_numpy(self.labels[r]).to(self.device)

    def load(self, rows: np.ndarray) -> tuple[Tensor, Tensor]:
        xs, ys = zip(*self.chunks(rows), strict=True)
        return torch.cat(xs), torch.cat(ys)


def _objective(x: Tensor, y: Tensor, theta: Tensor, wd: Tensor) -> tuple[Tensor, Tensor]:
    """Per-head loss (float64 ``[H]``) and gradient (``[H, D + 1, C]``) at ``theta [H, D + 1, C]``."""
    (n, d1), (h, _, c) = x.shape, theta.shape
    z = (x @ theta.transpose(0, 1).reshape(d1, h * c)).view(n, h, c)
    top = z.amax(2, keepdim=True)
    p = (z - top).exp_()
    norm = p.sum(2, keepdim=True)
    y_idx = y.view(n, 1, 1).expand(n, h, 1)
    nll = (norm.log() + top - z.gather(2, y_idx)).squeeze(2)
    w = theta[:, :-1]
    loss = nll.sum(0, dtype=torch.float64) / n + 0.5 * wd.double() * w.square().sum((1, 2)).double()
    g = p.div_(norm).scatter_add_(2, y_idx, torch.full((n, h, 1), -1.0, device=x.device)).mul_(1.0 / n)
    grad = (x.T @ g.view(n, h * c)).view(d1, h, c).transpose(0, 1).contiguous()
    grad[:, :-1] += wd.view(h, 1, 1) * w
    return loss, grad


def _hdot(a: Tensor, b: Tensor) -> Tensor:
    """Per-head inner products of two ``[H, D + 1, C]`` tensors (float64 ``[H]``)."""
    return (a * b).sum((1, 2)).double()


def _ph(v: Tensor) -> Tensor:
    return v.to(torch.float32).view(-1, 1, 1)


class BatchedLBFGS:
    """Full-batch L-BFGS over a batch of heads, each with its own curvature pairs, step and stopping test.

    The initial inverse Hessian of head ``h`` is ``gamma_h * (Sigma + C wd_h)^-1`` on the weights (1 on
    the bias), ``Sigma = U diag(lam) U^T`` being the features' second moments; ``gamma_h`` starts at
    ``C`` (the softmax curvature at uniform predictions is ``1 / C``), then follows the latest pair.
    """

    def __init__(
        self, x: Tensor, y: Tensor, wd: Tensor, cfg: ProbeConfig, eig: tuple[Tensor, Tensor] | None
    ) -> None:
        if eig is None:  # second moments of the features (of >= 64 D of them: costs a few evaluations)
            sub = x[:: max(1, x.shape[0] // (64 * x.shape[1])), :-1]
            lam, u = torch.linalg.eigh(sub.T @ sub / sub.shape[0])
            eig = (lam.clamp_min(1e-6 * float(lam.abs().mean()) + 1e-12), u)  # finite even for wd = 0
        self.x, self.y, self.wd, self.cfg, self.eig = x, y, wd, cfg, eig
        self.scale = torch.ones(1)

    def precondition(self, q: Tensor) -> Tensor:
        """Weights rotated into the eigenbasis, scaled per head, rotated back; the bias row is kept."""
        (h, d1, c), out = q.shape, q.clone()
        t = (self.eig[1].T @ q[:, :-1].transpose(0, 1).reshape(d1 - 1, h * c)).view(d1 - 1, h, c) * self.scale
        out[:, :-1] = (self.eig[1] @ t.view(d1 - 1, h * c)).view(d1 - 1, h, c).transpose(0, 1)
        return out

    def run(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """Minimise every head's objective from ``theta [H, D + 1, C]``; returns ``(theta, loss [H])``."""
        (h, _, c), dev = theta.shape, theta.device
        self.scale = 1.0 / (self.eig[0].view(-1, 1, 1) + c * self.wd.view(1, -1, 1))  # [D, H, 1]
        loss, grad = _objective(self.x, self.y, theta, self.wd)
        gamma = torch.full((h,), float(c), dtype=torch.float64, device=dev)
        pairs: list[tuple[Tensor, Tensor, Tensor]] = []
        active = torch.ones(h, dtype=torch.bool, device=dev)
        for _ in range(self.cfg.max_iter):
            active &= grad.abs().amax((1, 2)) > self.cfg.tol
            if not bool(active.any()):
                break
            q, alphas = grad.clone(), []  # two-loop recursion
            for s, yv, rho in reversed(pairs):
                alphas.append(rho * _hdot(s, q))
                q -= _ph(alphas[-1]) * yv
            q = self.precondition(q) * _ph(gamma)
            for (s, yv, rho), a in zip(pairs, reversed(alphas), strict=True):
                q += _ph(a - rho * _hdot(yv, q)) * s
            step = q.neg_()
            slope = _hdot(grad, step)
            uphill = slope >= 0  # numerical breakdown: steepest descent for that head
            if bool(uphill.any()):
                step[uphill] = -grad[uphill]
                slope = torch.where(uphill, -_hdot(grad, grad), slope)
            new_theta, new_loss, new_grad, moved = self.line_search(theta, loss, grad, step, slope, active)
            s, yv = new_theta - theta, new_grad - grad
            sy, ypy = _hdot(s, yv), _hdot(yv, self.precondition(yv))
            good = moved & (sy > 1e-10 * (ypy.clamp_min(0) * _hdot(s, s)).sqrt())
            rho = torch.where(good, 1.0 / sy, torch.zeros_like(sy))
            pairs = [*pairs, (s, yv, rho)][-self.cfg.history :]
            gamma = torch.where(good, sy / ypy, gamma)
            active &= moved  # a failed line search: no further progress possible in float32
            theta, loss, grad = new_theta, new_loss, new_grad
        return theta, loss

    def line_search(
        self, theta: Tensor, loss: Tensor, grad: Tensor, step: Tensor, slope: Tensor, active: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Backtracking from step 1 (quadratic interpolation, Armijo ``c1 = 1e-4``) for the active heads."""
        new_theta, new_loss, new_grad = theta.clone(), loss.clone(), grad.clone()
        moved = torch.zeros_like(active)
        pend = active.nonzero().squeeze(1)
        t = torch.ones(pend.numel(), dtype=torch.float64, device=theta.device)
        for _ in range(30):
            trial = theta[pend] + _ph(t) * step[pend]
            f, g = _objective(self.x, self.y, trial, self.wd[pend])
            f0, sl = loss[pend], slope[pend]
            ok = torch.isfinite(f) & (f <= f0 + 1e-4 * t * sl)
            acc = pend[ok]
            new_theta[acc], new_grad[acc], new_loss[acc], moved[acc] = trial[ok], g[ok], f[ok], True
            if bool(ok.all()):
                break
            bad = ~ok
            tb, sb = t[bad], sl[bad]
            t_quad = -sb * tb**2 / (2.0 * (f[bad] - f0[bad] - sb * tb))
            t_quad = torch.where(torch.isfinite(t_quad), t_quad, 0.1 * tb)
            t, pend = torch.minimum(torch.maximum(t_quad, 0.1 * tb), 0.5 * tb), pend[bad]
        return new_theta, new_loss, new_grad, moved


def fit_adam(
    src: FeatureSource, rows: np.ndarray, wd: Tensor, lr: Tensor, num_classes: int, cfg: ProbeConfig
) -> Tensor:
    """Mini-batch Adam (per-head lr, cosine decay) over ``rows`` streamed in chunks; returns theta."""
    theta = torch.zeros(wd.numel(), src.xs.shape[1] + 1, num_classes, device=src.device)
    m, v = torch.zeros_like(theta), torch.zeros_like(theta)
    rng = np.random.default_rng(cfg.seed + 1)
    parts = [rows[s : s + cfg.chunk_rows] for s in range(0, len(rows), cfg.chunk_rows)]
    total = cfg.epochs * sum(math.ceil(len(p) / cfg.batch_size) for p in parts)
    resident: tuple[Tensor, Tensor] | None = None
    step, b1, b2 = 0, 0.9, 0.999
    for _ in range(cfg.epochs):
        for pi in rng.permutation(len(parts)):
            if resident is None or len(parts) > 1:
                resident = src.load(parts[pi])
            xc, yc = resident
            perm = torch.from_numpy(rng.permutation(xc.shape[0])).to(src.device)
            for s in range(0, xc.shape[0], cfg.batch_size):
                b = perm[s : s + cfg.batch_size]
                _, g = _objective(xc[b], yc[b], theta, wd)
                step += 1
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                rate = lr * (0.5 * (1.0 + math.cos(math.pi * (step - 1) / total)) / (1 - b1**step))
                theta -= _ph(rate) * m / (v / (1 - b2**step)).sqrt_().add_(1e-8)
    return theta
