"""SimSiam: simple Siamese representation learning (Chen & He 2020, arXiv 2011.10566).

* encoder ``f`` = backbone + projector of 3 layers, each ``Linear -> BN``, ReLU after the first two,
  the output BN without affine parameters (Sec. 4 "Projection MLP"; ``feature_dim -> hidden_dim ->
  hidden_dim -> dim``, 2048 everywhere in the paper);
* predictor ``h`` = bottleneck ``Linear -> BN -> ReLU -> Linear`` (``dim -> pred_hidden_dim -> dim``,
  2048 -> 512 -> 2048, no BN on its output);
* loss (Algorithm 1, Eq. 3-4): ``L = D(p1, stopgrad(z2)) / 2 + D(p2, stopgrad(z1)) / 2`` with
  ``D(p, z) = -cos(p, z)`` averaged over the batch, so ``L`` lies in [-1, 1];
* "fixed predictor lr" (Sec. 4.3, ``fix_pred_lr``): the predictor's parameters form a separate optimiser
  group marked ``fixed_lr`` (see :meth:`SSLMethod.param_groups`), which the trainer keeps at the base lr
  while everything else follows the schedule.

Mixed views follow :func:`~pretrain.methods.base.mixed_rows`, as in BYOL: a prediction from the mixed
view regresses ``lam`` towards its own (stop-gradient) target and ``1 - lam`` towards its partner's; a
mixed target ``z_j`` is the target of ``p_j`` (weight ``lam_j``) and of ``p_perm(j)`` (``1 - lam_j``).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F

from pretrain.backbones import Backbone
from pretrain.config import SimSiamConfig
from pretrain.methods.base import SSLMethod, StepOutput, ViewBatch, loss_dtype, mixed_rows, mlp, no_autocast


def negative_cosine(
    p: torch.Tensor, z: torch.Tensor, reduction: Literal["mean", "none"] = "mean"
) -> torch.Tensor:
    """SimSiam's ``D(p, z) = -(p / ||p||) . (z / ||z||)`` (Eq. 1); ``z`` is detached (the stop-gradient).

    Args:
        p: [B, D] predictions.  z: [B, D] projections of the other view.
        reduction: ``"mean"`` over the batch (scalar) or ``"none"`` ([B]).
    """
    d = -F.cosine_similarity(p, z.detach(), dim=1, eps=1e-12)
    return d.mean() if reduction == "mean" else d


def _negative_cosine_rows(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return negative_cosine(p, z, reduction="none")


class SimSiam(SSLMethod):
    """SimSiam (see module docstring).  ``forward`` consumes ``batch.views = (x_1, x_2)`` [B, 3, S, S]."""

    def __init__(self, backbone: Backbone, cfg: SimSiamConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        self.projector = mlp(
            [backbone.feature_dim, cfg.hidden_dim, cfg.hidden_dim, cfg.dim],
            out_bias=False,  # followed by BN
            out_bn=True,
            out_bn_affine=False,
        )
        self.predictor = mlp([cfg.dim, cfg.pred_hidden_dim, cfg.dim])

    def param_groups(self) -> list[dict[str, Any]]:
        """One group for backbone + projector; the predictor's own group is ``fixed_lr`` if configured."""
        predictor = list(self.predictor.parameters())
        ids = {id(p) for p in predictor}
        encoder = [p for p in self.parameters() if p.requires_grad and id(p) not in ids]
        return [{"params": encoder}, {"params": predictor, "fixed_lr": self.cfg.fix_pred_lr}]

    def forward(self, batch: ViewBatch) -> StepOutput:
        z = [loss_dtype(self.projector(self.backbone(x))) for x in batch.views]
        p = [loss_dtype(self.predictor(zv)) for zv in z]
        with no_autocast(z[0].device):
            terms = [
                mixed_rows(_negative_cosine_rows, p[v], z[1 - v], batch.mix, source_view=v).mean()
                for v in (0, 1)
            ]
            loss = terms[0] / 2 + terms[1] / 2
            with torch.no_grad():
                # collapse monitor (Sec. 4.1): per-dimension std of the l2-normalised outputs, ~1/sqrt(dim)
                std = F.normalize(z[0], dim=1).std(dim=0).mean()
        return StepOutput(loss=loss, logs={"loss": loss.detach(), "z_std": std})
