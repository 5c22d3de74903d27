"""BYOL: bootstrap your own latent (Grill et al. 2020, arXiv 2006.07733).

* online network = backbone ``f_theta`` + projector ``g_theta`` + predictor ``q_theta``; projector and
  predictor are ``Linear -> BN -> ReLU -> Linear`` (4096 -> 256 in the paper, Sec. 3.3);
* target network = backbone ``f_xi`` + projector ``g_xi``, a copy of the online ones at initialisation,
  never given gradients, updated after every optimiser step by ``xi <- tau xi + (1 - tau) theta``
  (Eq. 1; BN running statistics of the target follow its own forward passes);
* ``tau`` rises from ``tau_base`` to 1 along a cosine: ``tau = 1 - (1 - tau_base)(cos(pi k / K) + 1) / 2``
  (Sec. 3.3), ``K`` the number of training steps and ``k`` the 0-based index of the optimiser step just
  taken (``k = step - 1`` in :meth:`BYOL.on_step_end`, whose ``step`` counts from 1), so the first update
  uses ``tau_base`` as in the official implementation;
* loss (Eq. 2): ``L = ||q_bar - z'_bar||^2 = 2 - 2 cos(q, z')`` per sample, with ``q`` the prediction of
  one view and ``z'`` the target projection of the other view; the symmetrised loss is the *sum*
  ``L + L~`` of the two view orders (Eq. 2, as in the paper), each averaged over the batch, so it lies
  in [0, 8].

Mixed views follow :func:`~pretrain.methods.base.mixed_rows`: a prediction from the mixed view regresses
``lam`` towards its own target and ``1 - lam`` towards its partner's; a mixed target projection ``z'_j``
is the target of the prediction of ``j`` (weight ``lam_j``) and of ``perm(j)`` (weight ``1 - lam_j``).
"""

from __future__ import annotations

import copy
import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from pretrain.backbones import Backbone
from pretrain.config import BYOLConfig
from pretrain.methods.base import (
    SSLMethod,
    StepOutput,
    ViewBatch,
    ema_update_,
    loss_dtype,
    mixed_rows,
    mlp,
    no_autocast,
)


def byol_loss(p: torch.Tensor, z: torch.Tensor, reduction: Literal["mean", "none"] = "mean") -> torch.Tensor:
    """BYOL's regression loss ``||p/|p| - z/|z|||^2 = 2 - 2 cos(p, z)`` (Eq. 2).

    Args:
        p: [B, D] online predictions.  z: [B, D] target projections (the caller detaches them).
        reduction: ``"mean"`` over the batch (scalar) or ``"none"`` ([B]).
    """
    loss = 2.0 - 2.0 * F.cosine_similarity(p, z, dim=1, eps=1e-12)
    return loss.mean() if reduction == "mean" else loss


def _regression_rows(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return byol_loss(p, z, reduction="none")


def byol_momentum(step: int, total: int, base: float) -> float:
    """BYOL's target decay rate ``tau = 1 - (1 - base) * (cos(pi * step / total) + 1) / 2`` (Sec. 3.3).

    ``base`` at ``step = 0``, rising monotonically to 1 at ``step = total``.
    """
    return 1.0 - (1.0 - base) * (math.cos(math.pi * step / total) + 1.0) / 2.0


class BYOL(SSLMethod):
    """BYOL (see module docstring).  ``forward`` consumes ``batch.views = (x_0, x_1)`` [B, 3, S, S]."""

    def __init__(self, backbone: Backbone, cfg: BYOLConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        self.projector = mlp([backbone.feature_dim, cfg.hidden_dim, cfg.dim])
        self.predictor = mlp([cfg.dim, cfg.pred_hidden_dim, cfg.dim])
        self.target_backbone = copy.deepcopy(backbone)
        self.target_projector = copy.deepcopy(self.projector)
        for p in self._target_params():
            p.requires_grad_(False)

    def _online_params(self) -> list[nn.Parameter]:
        return [*self.backbone.parameters(), *self.projector.parameters()]

    def _target_params(self) -> list[nn.Parameter]:
        return [*self.target_backbone.parameters(), *self.target_projector.parameters()]

    def forward(self, batch: ViewBatch) -> StepOutput:
        views = batch.views
        preds = [loss_dtype(self.predictor(self.projector(self.backbone(x)))) for x in views]
        with torch.no_grad():
            targets = [loss_dtype(self.target_projector(self.target_backbone(x))) for x in views]
        with no_autocast(preds[0].device):
            # prediction of view v regresses the target projection of view 1 - v; sum of both orders
            terms = [
                mixed_rows(_regression_rows, preds[v], targets[1 - v], batch.mix, source_view=v).mean()
                for v in (0, 1)
            ]
            loss = terms[0] + terms[1]
        return StepOutput(loss=loss, logs={"loss": loss.detach()})

    @torch.no_grad()
    def on_step_end(self, step: int, total_steps: int) -> None:
        tau = byol_momentum(step - 1, total_steps, self.cfg.base_momentum)
        ema_update_(self._target_params(), self._online_params(), tau)
