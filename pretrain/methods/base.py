"""The method contract shared by every SSL method.

A method is an ``nn.Module`` built from a :class:`~pretrain.backbones.Backbone` and its typed config.
``forward(batch) -> StepOutput`` returns the loss to minimise and detached scalars to log;
``on_step_end(step, total_steps)`` runs after each optimiser step (EMA/momentum updates);
``param_groups()`` optionally splits the trainable parameters into optimiser groups (method semantics,
e.g. SimSiam's fixed-lr predictor), and ``optimizer_groups(...)`` refines them for the optimiser (biases
and normalisation parameters apart, for LARS).  The optimiser, schedule and logging belong to the
trainer.  ``backbone`` is the network that gets exported.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from pretrain.backbones import Backbone


@dataclass
class MixInfo:
    """What a mixing stage (MixUp / CutMix) did to one view of the batch.

    Attributes:
        view: index of the mixed view (0 or 1).
        perm: [B] int64, the partner of each sample (one permutation of the batch).
        lam: [B] float, the weight of the sample's own image (1 = unmixed; CutMix: the kept area).

    Mixed-target rule (Un-Mix / i-Mix style): a method's per-sample loss for the mixed view becomes
    ``lam_i * L(i -> target_i) + (1 - lam_i) * L(i -> target_perm(i))``, so ``lam = 1`` gives exactly the
    unmixed loss.
    """

    view: int
    perm: torch.Tensor
    lam: torch.Tensor


@dataclass
class ViewBatch:
    """Augmented views of one batch.

    Attributes:
        views: two tensors [B, 3, S, S], float in [0, 1], on the training device.
        labels: [B] int64 class labels, ``-1`` where the recipe's label regime hides the label
            (every entry is -1 in self-supervised recipes).
        mix: set when a mixing stage mixed one of the views (see :class:`MixInfo`).
    """

    views: tuple[torch.Tensor, torch.Tensor]
    labels: torch.Tensor
    mix: MixInfo | None = None


@dataclass
class StepOutput:
    """What one forward pass returns: the loss and detached scalars for logging."""

    loss: torch.Tensor
    logs: dict[str, torch.Tensor] = field(default_factory=dict)


class SSLMethod(nn.Module):
    """Base class: subclasses set ``self.backbone`` and implement ``forward``."""

    backbone: Backbone

    def forward(self, batch: ViewBatch) -> StepOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def on_step_end(self, step: int, total_steps: int) -> None:
        """Hook run after every optimiser step (``step`` counts from 1)."""

    def param_groups(self) -> list[dict[str, Any]]:
        """The optimiser's parameter groups: dicts with ``"params"`` (trainable parameters only).

        A group may carry ``"fixed_lr": True``: the trainer then keeps that group's learning rate at the
        (batch-scaled) base lr instead of following the warm-up/cosine schedule (SimSiam's predictor),
        and ``"lr_scale": s``: the trainer multiplies that group's lr (scheduled or fixed) by ``s``.
        Every trainable parameter must be in exactly one group.  Default: one group of all of them.
        Subclasses override this; the trainer calls :meth:`optimizer_groups`.
        """
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def convert_sync_batchnorm_(self) -> int:
        """Replace every BatchNorm layer of the method by ``torch.nn.SyncBatchNorm``, in place.

        Batch statistics, and their gradients, then cover the global batch of all processes, as in SimCLR
        ("global BN", arXiv 2002.05709 Sec. 2.2), BYOL, SimSiam and Barlow Twins.  Every BN layer is
        converted: backbone, heads, and target/key copies.  The same parameter and buffer tensors move
        into the new layers under the same names, so optimiser groups, checkpoints and the exported
        backbone's state-dict keys are unchanged.  The trainer calls this before wrapping the method in
        DDP (``train.sync_bn`` with more than one process).  Returns the number of converted layers.
        Override to keep per-process BN (MoCo v2).
        """
        count = sum(
            isinstance(m, nn.modules.batchnorm._BatchNorm) and not isinstance(m, nn.SyncBatchNorm)
            for m in self.modules()
        )
        for name, child in list(self.named_children()):
            self.add_module(name, nn.SyncBatchNorm.convert_sync_batchnorm(child))
        return count

    def optimizer_groups(
        self, *, exclude_bias_and_norm: bool = False, bias_lr_scale: float = 1.0
    ) -> list[dict[str, Any]]:
        """The groups the trainer gives the optimiser: :meth:`param_groups`, each optionally split by
        :func:`split_bias_and_norm` (LARS with ``optim.exclude_bias_and_norm``; ``bias_lr_scale`` is
        ``optim.bias_lr_scale`` and needs the split)."""
        groups = self.param_groups()
        if not exclude_bias_and_norm:
            if bias_lr_scale != 1.0:
                raise ValueError("bias_lr_scale needs exclude_bias_and_norm (separate bias/norm groups)")
            return groups
        return split_bias_and_norm(groups, lr_scale=bias_lr_scale)


def is_bias_or_norm(p: torch.Tensor) -> bool:
    """Biases and normalisation (BN) weights/biases: the parameters with at most one dimension.

    Linear and convolution weights have two or more dimensions; every bias and every BatchNorm
    ``weight``/``bias`` has one.  This is the rule of Barlow Twins' official code (``p.ndim == 1``); SimCLR
    and BYOL select the same tensors by layer name.
    """
    return p.ndim <= 1


def split_bias_and_norm(groups: Sequence[dict[str, Any]], lr_scale: float = 1.0) -> list[dict[str, Any]]:
    """Split each group into its weights and its biases/normalisation parameters (:func:`is_bias_or_norm`).

    For every input group (all of its keys, e.g. ``fixed_lr``, are kept in both parts), in order: the
    weights part unchanged, then the biases/norm part with ``"weight_decay": 0.0`` and
    ``"lars_exclude": True`` -- excluded from weight decay and from LARS adaptation, as in SimCLR (arXiv
    2002.05709), BYOL (arXiv 2006.07733, Sec. 3.3) and Barlow Twins (arXiv 2103.03230, Sec. 4) -- and
    ``"lr_scale"`` multiplied by ``lr_scale`` (Barlow Twins' separate bias/BN lr, 0.0048 / 0.2).  Parts
    with no parameters are dropped.  Parameter order inside each part follows the input group.
    """
    out: list[dict[str, Any]] = []
    for group in groups:
        params = list(group["params"])
        weights = [p for p in params if not is_bias_or_norm(p)]
        rest = [p for p in params if is_bias_or_norm(p)]
        if weights:
            out.append({**group, "params": weights})
        if rest:
            scale = group.get("lr_scale", 1.0) * lr_scale
            out.append(
                {**group, "params": rest, "weight_decay": 0.0, "lars_exclude": True, "lr_scale": scale}
            )
    return out


@torch.no_grad()
def ema_update_(targets: Sequence[torch.Tensor], sources: Sequence[torch.Tensor], momentum: float) -> None:
    """In place, per pair: ``target <- m * target + (1 - m) * source`` (MoCo key / BYOL target encoders)."""
    for t, s in zip(targets, sources, strict=True):
        t.mul_(momentum).add_(s.detach(), alpha=1.0 - momentum)


def mlp_head(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """The 2-layer MLP projection head of MoCo v2: Linear -> ReLU -> Linear (no BN)."""
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))


def mlp(
    dims: Sequence[int],
    *,
    out_bias: bool = True,
    out_bn: bool = False,
    out_bn_affine: bool = True,
) -> nn.Sequential:
    """An MLP ``dims[0] -> dims[1] -> ... -> dims[-1]`` of the BN-ReLU family used by SimCLR/BYOL/SimSiam/BT.

    Every hidden layer is ``Linear(bias=False) -> BatchNorm1d -> ReLU`` (a bias before BN is redundant);
    the last layer is ``Linear(bias=out_bias)``, optionally followed by ``BatchNorm1d(affine=out_bn_affine)``.
    Shapes: [B, dims[0]] -> [B, dims[-1]].
    """
    if len(dims) < 2:
        raise ValueError(f"an MLP needs at least input and output sizes, got {list(dims)}")
    layers: list[nn.Module] = []
    for d_in, d_out in itertools.pairwise(dims[:-1]):
        layers += [nn.Linear(d_in, d_out, bias=False), nn.BatchNorm1d(d_out), nn.ReLU(inplace=True)]
    layers.append(nn.Linear(dims[-2], dims[-1], bias=out_bias))
    if out_bn:
        layers.append(nn.BatchNorm1d(dims[-1], affine=out_bn_affine))
    return nn.Sequential(*layers)


def no_autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """Disable autocast on ``device``: losses are computed in float32 (or wider) from :func:`loss_dtype`
    embeddings."""
    return torch.autocast(device_type=device.type, enabled=False)


def loss_dtype(x: torch.Tensor) -> torch.Tensor:
    """``x`` in at least float32: half/bfloat16 embeddings of autocast are upcast for the loss, float64
    models (used to check DDP equivalence to 1e-7) stay float64."""
    return x if x.dtype == torch.float64 else x.float()


def mixed_rows(
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    source: torch.Tensor,
    target: torch.Tensor,
    mix: MixInfo | None,
    source_view: int,
) -> torch.Tensor:
    """Per-row losses [B] of one directed loss term under the mixed-target rule of :class:`MixInfo`.

    A directed term scores row ``i`` of ``source`` (from view ``source_view``: queries / anchors /
    online predictions) against row ``i`` of ``target`` (from the other view: positive keys / target
    projections / positive column indices): ``loss(source, target) -> [B]``, row-wise.  ``L(i -> j)``
    below is row ``i`` of ``loss(source, target[partner])`` with ``partner[i] = j``.  With ``mix`` set:

    * the source view was mixed (``mix.view == source_view``): row ``i`` gets
      ``lam_i * L(i -> i) + (1 - lam_i) * L(i -> perm(i))``;
    * the target view was mixed: the mixed target ``j`` is the target of row ``j`` with weight
      ``lam_j`` and of row ``perm(j)`` with weight ``1 - lam_j``; per row ``m``, with
      ``j = perm^-1(m)``: ``lam_m * L(m -> m) + (1 - lam_j) * L(m -> j)``.

    The weights sum to ``B`` over the batch in both cases, and ``lam = 1`` reproduces the unmixed rows
    bit for bit (``1 * x + 0 * y == x``).
    """
    own = loss(source, target)
    if mix is None:
        return own
    lam = mix.lam.to(device=own.device, dtype=own.dtype)
    perm = mix.perm.to(own.device)
    if mix.view == source_view:
        return lam * own + (1.0 - lam) * loss(source, target[perm])
    inv = torch.argsort(perm)
    return lam * own + (1.0 - lam[inv]) * loss(source, target[inv])
