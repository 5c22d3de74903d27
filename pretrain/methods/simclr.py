"""SimCLR: contrastive learning with NT-Xent over 2N views (Chen et al. 2020, arXiv 2002.05709).

* encoder ``f`` = backbone, projector ``g`` = ``Linear -> BN -> ReLU -> Linear``
  (``feature_dim -> hidden_dim -> dim``).  The paper writes ``g(h) = W2 ReLU(W1 h)`` (Sec. 2.1); its
  official implementation puts batch normalisation in the head, which we follow for the hidden layer;
* loss: NT-Xent (Sec. 2.1, Algorithm 1).  With ``s_ab = cos(z_a, z_b)`` over the 2N projections of a
  batch of N samples, every one of the 2N anchors ``a`` has its other view as positive ``p(a)`` and the
  remaining ``2N - 2`` projections as negatives:
  ``l(a) = -log exp(s_{a,p(a)}/T) / sum_{b != a} exp(s_ab/T)``, loss = mean of ``l`` over the 2N anchors
  (the paper's ``1/2N sum_k [l(2k-1, 2k) + l(2k, 2k-1)]``).

Under DDP the candidates (positives and negatives) are the projections of *all* processes, gathered with
gradient (:func:`pretrain.distributed.all_gather_with_grad`), as in the paper's large-batch training
(global batch 4096); each process averages over its own 2N anchors and DDP averages across processes.
Mixed views (:class:`~pretrain.methods.base.MixInfo`) follow :func:`~pretrain.methods.base.mixed_rows`:
for an anchor of the mixed view the positive becomes the soft target ``lam`` on its own other view and
``1 - lam`` on its partner's other view (a lam-weighted sum of two cross-entropies over the same logits
row); an anchor of the unmixed view keeps its own positive, with weight ``lam_m``, and additionally takes
the mixed view of ``j = perm^-1(m)`` as positive with weight ``1 - lam_j`` (that mixed image contains
``m`` with weight ``1 - lam_j``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pretrain import distributed
from pretrain.backbones import Backbone
from pretrain.config import SimCLRConfig
from pretrain.methods.base import (
    MixInfo,
    SSLMethod,
    StepOutput,
    ViewBatch,
    loss_dtype,
    mixed_rows,
    mlp,
    no_autocast,
)


def _cross_entropy_rows(logits: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """[N] cross-entropies of ``logits`` [N, C] rows against the column indices ``cols`` [N]."""
    return F.cross_entropy(logits, cols, reduction="none")


def nt_xent(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float, mix: MixInfo | None = None
) -> torch.Tensor:
    """NT-Xent loss (SimCLR Eq. 1, mean over the 2N anchors) of two views' projections.

    Args:
        z1, z2: [N, D] projections of view 0 and view 1 of the same N samples (any norm: cosine
            similarity is used).  N >= 1; with N = 1 each anchor has only its positive as candidate.
        temperature: T > 0.
        mix: optional mixing info of one view (see module docstring).

    Returns:
        A scalar tensor.  Under DDP the candidates are gathered from every process (with gradient).
    """
    n = z1.shape[0]
    a1, a2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    c1, c2 = distributed.all_gather_with_grad(a1), distributed.all_gather_with_grad(a2)
    total = c1.shape[0]  # world * N
    candidates = torch.cat([c1, c2], dim=0)  # [2 * world * N, D]: every view-0 row, then every view-1 row
    local = torch.arange(n, device=z1.device) + distributed.rank() * n  # global sample index of local rows
    rows = []
    for view, anchors in ((0, a1), (1, a2)):
        logits = anchors @ candidates.t() / temperature  # [N, 2 * world * N]
        self_mask = F.one_hot(local + view * total, num_classes=logits.shape[1]).bool()
        logits = logits.masked_fill(self_mask, float("-inf"))
        positives = local + (1 - view) * total  # the other view of the same sample
        rows.append(mixed_rows(_cross_entropy_rows, logits, positives, mix, source_view=view))
    return torch.cat(rows).mean()


class SimCLR(SSLMethod):
    """SimCLR (see module docstring).  ``forward`` consumes ``batch.views = (x_0, x_1)`` [B, 3, S, S]."""

    def __init__(self, backbone: Backbone, cfg: SimCLRConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        self.projector = mlp([backbone.feature_dim, cfg.hidden_dim, cfg.dim])

    def forward(self, batch: ViewBatch) -> StepOutput:
        x1, x2 = batch.views
        n = x1.shape[0]
        # one pass over both views: BN statistics over the 2N images, as with the paper's global BN
        z = loss_dtype(self.projector(self.backbone(torch.cat([x1, x2], dim=0))))
        z1, z2 = z[:n], z[n:]
        with no_autocast(z.device):
            loss = nt_xent(z1, z2, self.cfg.temperature, batch.mix)
            with torch.no_grad():
                sim = F.normalize(z1, dim=1) @ F.normalize(z2, dim=1).t()
                acc = (sim.argmax(dim=1) == torch.arange(n, device=sim.device)).float().mean()
        return StepOutput(loss=loss, logs={"loss": loss.detach(), "pos_top1": acc})
