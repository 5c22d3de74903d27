"""The method contract shared by every SSL method.

A method is an ``nn.Module`` built from a :class:`~pretrain.backbones.Backbone` and its typed config.
``forward(batch) -> StepOutput`` returns the loss to minimise and detached scalars to log;
``on_step_end(step, total_steps)`` runs after each optimiser step (EMA/momentum updates).  The optimiser,
schedule and logging belong to the trainer.  ``backbone`` is the network that gets exported.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


def mlp_head(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """The 2-layer MLP projection head of MoCo v2 / SimCLR: Linear -> ReLU -> Linear."""
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))
