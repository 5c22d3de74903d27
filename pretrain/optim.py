"""Optimisers of the recipe grid: LARS, and the factory that builds a recipe's optimiser.

LARS, layer-wise adaptive rate scaling (You, Gitman & Ginsburg 2017, arXiv 1708.03888), in the form
SimCLR (Chen et al. 2020, arXiv 2002.05709), BYOL (Grill et al. 2020, arXiv 2006.07733) and Barlow
Twins (Zbontar et al. 2021, arXiv 2103.03230) train with.  Per parameter tensor ``w`` with gradient
``g``, in a group with learning rate ``lr``, momentum ``m``, weight decay ``wd`` and trust coefficient
``eta``:

* ``d = g + wd * w`` (weight decay is added to the gradient first; a group with ``wd = 0`` skips it);
* if the group is adapted (``lars_exclude`` false): ``d <- trust * d`` with the trust ratio
  ``trust = eta * ||w|| / ||d||`` (Frobenius norms of the whole tensor), and ``trust = 1`` when
  ``||w|| = 0`` or ``||d|| = 0``;
* momentum as in :class:`torch.optim.SGD`: ``buf <- d`` on the first step, then ``buf <- m * buf + d``;
* ``w <- w - lr * buf``.

Two details differ between the papers' published implementations and are fixed here as follows:

* the denominator is the norm of the decayed gradient, ``||g + wd * w||`` (SimCLR's, BYOL's and Barlow
  Twins' code).  You et al. write ``eta * ||w|| / (||g|| + wd * ||w||)``, an upper bound of it by the
  triangle inequality; the two agree when ``wd = 0`` and differ by at most a factor ``1 + wd ||w|| / ||g||``
  otherwise (negligible at the papers' ``wd`` of 1e-6 to 1.5e-6).
* the learning rate multiplies the momentum buffer (as in torch's SGD, BYOL's optax chain and Barlow
  Twins' PyTorch LARS), not each increment before it is accumulated (SimCLR's TensorFlow LARS); the
  two agree while ``lr`` is constant and differ slightly while the schedule moves.

Biases and normalisation parameters are excluded from both weight decay and adaptation in all three
papers.  The exclusion is expressed by parameter groups, not by names: a group carrying
``"lars_exclude": True`` is not adapted, and its ``"weight_decay"`` (0 for the excluded group built by
:func:`pretrain.methods.base.split_bias_and_norm`) applies as in any torch optimiser.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from pretrain.config import OptimConfig


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (update rule: see the module docstring).

    Args:
        params: parameters or parameter groups; a group may set ``lr``, ``momentum``, ``weight_decay``,
            ``eta`` and ``lars_exclude`` (default False) and carry extra keys (kept, ignored here).
        lr: learning rate (>= 0).  momentum: momentum factor in [0, 1).  weight_decay: >= 0, added to the
            gradient.  eta: the trust coefficient (> 0; 0.001 in SimCLR, BYOL and Barlow Twins).

    The state of a parameter is its ``momentum_buffer`` (created at its first step with a gradient);
    parameters whose ``grad`` is None are skipped.  Sparse gradients are not supported.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 0.001,
    ) -> None:
        if lr < 0:
            raise ValueError(f"lr must be non-negative, got {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be non-negative, got {weight_decay}")
        if eta <= 0:
            raise ValueError(f"eta must be positive, got {eta}")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "eta": eta,
            "lars_exclude": False,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One update of every parameter that has a gradient; returns ``closure()`` if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum, wd, eta = group["lr"], group["momentum"], group["weight_decay"], group["eta"]
            adapt = not group["lars_exclude"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("LARS does not support sparse gradients")
                d = p.grad.add(p, alpha=wd) if wd != 0 else p.grad.clone()
                if adapt:
                    d.mul_(trust_ratio(p, d, eta))
                state = self.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    state["momentum_buffer"] = buf = d
                else:
                    buf.mul_(momentum).add_(d)
                p.add_(buf, alpha=-lr)
        return loss


def trust_ratio(w: torch.Tensor, d: torch.Tensor, eta: float) -> torch.Tensor:
    """``eta * ||w|| / ||d||`` as a 0-d tensor, or 1 when either norm is 0 (see the module docstring)."""
    w_norm = torch.linalg.vector_norm(w)
    d_norm = torch.linalg.vector_norm(d)
    ok = (w_norm > 0) & (d_norm > 0)
    # the unselected branch may be inf/nan (0 / 0); torch.where does not propagate it
    return torch.where(ok, eta * w_norm / d_norm, torch.ones_like(w_norm))


def build_optimizer(cfg: OptimConfig, groups: list[dict[str, Any]], base_lr: float) -> torch.optim.Optimizer:
    """The optimiser ``cfg.name`` over ``groups`` (see :meth:`SSLMethod.optimizer_groups`).

    Group keys override the defaults built from ``cfg`` (e.g. ``weight_decay: 0`` for excluded biases);
    extra keys such as ``fixed_lr``, ``lr_scale`` and ``lars_exclude`` stay in the optimiser's groups,
    where the trainer's schedule reads them.  ``base_lr`` is the batch-scaled lr.
    """
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=base_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.name == "lars":
        return LARS(groups, lr=base_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, eta=cfg.eta)
    return torch.optim.AdamW(groups, lr=base_lr, weight_decay=cfg.weight_decay)
