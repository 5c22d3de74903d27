"""MoCo v2: momentum contrast with an MLP head (Chen et al. 2020, arXiv 2003.04297).

Built on MoCo (He et al. 2019, arXiv 1911.05722), Algorithm 1:

* query encoder ``f_q`` = backbone + 2-layer MLP head (``feature_dim -> hidden_dim -> dim``);
* key encoder ``f_k``: a copy of ``f_q`` updated only by EMA, ``theta_k <- m theta_k + (1 - m) theta_q``
  (here in :meth:`MoCoV2.on_step_end`, after the optimiser step; equivalent to the paper's update at the
  start of the next forward);
* a queue of ``K`` L2-normalised keys [K, dim] from previous batches (FIFO);
* loss: InfoNCE over logits ``[q.k+, q.queue] / T`` of shape [B, 1 + K] with the positive at index 0.

The loss is asymmetric as in the paper (view 1 -> queries, view 2 -> keys).

Mixed views (:class:`~pretrain.methods.base.MixInfo`, rule implemented by
:func:`~pretrain.methods.base.mixed_rows`), with the same queue of negatives in every term:

* query view 0 mixed: ``L_i = lam_i InfoNCE(q_i, k_i) + (1 - lam_i) InfoNCE(q_i, k_perm(i))``;
* key view 1 mixed (symmetrically): the mixed key ``k_j`` is the positive of ``q_j`` with weight
  ``lam_j`` and of ``q_perm(j)`` with weight ``1 - lam_j``.

The loss is the mean of the per-query rows; the (possibly mixed) keys are enqueued as usual.

Label regimes (supervised / semi-supervised contrastive MoCo v2 of arXiv 2310.18850): keys are queued with
their labels (``-1`` = hidden).  For a target key ``k_j`` whose label ``y_j`` is known, every queued key
with the same label is a positive too, SupCon-style (Khosla et al. 2020, arXiv 2004.11362, the
"L_out" form): ``L = -1/|P| sum_{p in P} log softmax(logits)[p]`` with ``P = {k_j} + {queue_m : y_m = y_j}``
over the same logits ``[q.k_j, q.queue] / T``.  Rows whose target is unlabelled keep the instance
positive only (plain InfoNCE).  Self-supervised recipes hide every label (``label_fraction = 0``), so
their loss is exactly the InfoNCE above and labels never leak into them.

Under DDP the key batch is shuffled across processes before the key encoder and unshuffled after
("shuffling BN", Sec. 3.3), and the keys of all processes are enqueued.  In a single process there is
nothing to shuffle across.  Shuffling BN relies on per-process BN statistics, so with ``shuffle_bn`` (the
paper's setting) ``train.sync_bn`` leaves MoCo's BN layers alone (:meth:`MoCoV2.convert_sync_batchnorm_`);
with ``shuffle_bn`` off, ``train.sync_bn`` converts query and key encoders alike.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from pretrain import distributed
from pretrain.backbones import Backbone
from pretrain.config import MocoConfig
from pretrain.methods.base import (
    SSLMethod,
    StepOutput,
    ViewBatch,
    ema_update_,
    loss_dtype,
    mixed_rows,
    mlp_head,
)


def info_nce(
    q: torch.Tensor,
    k: torch.Tensor,
    queue: torch.Tensor,
    temperature: float,
    reduction: Literal["mean", "none"] = "mean",
) -> torch.Tensor:
    """InfoNCE of MoCo: mean over i of ``-log softmax([q_i.k_i, q_i.queue_j for j] / T)[0]``.

    Args:
        q: [B, D] L2-normalised queries.  k: [B, D] L2-normalised positive keys.
        queue: [K, D] L2-normalised negatives.  temperature: T > 0.
        reduction: ``"mean"`` over the batch (scalar) or ``"none"`` (the [B] per-query losses).
    """
    l_pos = (q * k).sum(dim=1, keepdim=True)  # [B, 1]
    l_neg = q @ queue.t()  # [B, K]
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature
    target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, target, reduction=reduction)


def moco_rows(
    q: torch.Tensor,
    k: torch.Tensor,
    key_labels: torch.Tensor,
    queue: torch.Tensor,
    queue_labels: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """Per-query losses [B] with label-aware positives (see module docstring).

    Args:
        q, k: [B, D] L2-normalised queries and their target keys.  key_labels: [B] labels of the
            targets (-1 = unknown).  queue: [K, D].  queue_labels: [K] (-1 = unknown).
    """
    logits = torch.cat([(q * k).sum(dim=1, keepdim=True), q @ queue.t()], dim=1) / temperature
    log_prob = F.log_softmax(logits, dim=1)  # [B, 1 + K]
    same = (queue_labels[None, :] == key_labels[:, None]) & (key_labels[:, None] >= 0)  # [B, K]
    pos = torch.cat([torch.ones_like(same[:, :1]), same], dim=1).to(log_prob.dtype)
    return -(log_prob * pos).sum(dim=1) / pos.sum(dim=1)


#: Base seed of the shuffled-BN permutations (one per key batch, numbered by the ``shuffles`` buffer).
SHUFFLE_SEED = 0x5_4FF1E


class MoCoV2(SSLMethod):
    """MoCo v2 (see module docstring).  ``forward`` consumes ``batch.views = (x_q, x_k)``."""

    queue: torch.Tensor
    queue_labels: torch.Tensor
    queue_ptr: torch.Tensor
    shuffles: torch.Tensor

    def __init__(self, backbone: Backbone, cfg: MocoConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        self.head = mlp_head(backbone.feature_dim, cfg.hidden_dim, cfg.dim)
        self.key_backbone = copy.deepcopy(backbone)
        self.key_head = copy.deepcopy(self.head)
        for p in self._key_params():
            p.requires_grad_(False)
        self.register_buffer("queue", F.normalize(torch.randn(cfg.queue_size, cfg.dim), dim=1))
        self.register_buffer("queue_labels", torch.full((cfg.queue_size,), -1, dtype=torch.long))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        # key batches shuffled so far: seeds the next shuffle (a resumed run shuffles as an uninterrupted one)
        self.register_buffer("shuffles", torch.zeros((), dtype=torch.long))

    def convert_sync_batchnorm_(self) -> int:
        """MoCo v2 keeps per-process BN in both encoders and shuffles the key batch across processes
        instead (shuffling BN, MoCo Sec. 3.3): with ``cfg.shuffle_bn`` nothing is converted (returns 0).
        Global statistics would make the shuffle pointless, and the paper does not use them.  With
        ``shuffle_bn`` off, every BN layer (query and key encoders) is converted as for the other methods.
        """
        if self.cfg.shuffle_bn:
            return 0
        return super().convert_sync_batchnorm_()

    def _key_params(self) -> list[nn.Parameter]:
        return [*self.key_backbone.parameters(), *self.key_head.parameters()]

    def _query_params(self) -> list[nn.Parameter]:
        return [*self.backbone.parameters(), *self.head.parameters()]

    @torch.no_grad()
    def _keys(self, x: torch.Tensor) -> torch.Tensor:
        """Keys [B, dim] for ``x`` [B, 3, S, S]; shuffles the batch across processes under DDP."""
        if distributed.is_distributed() and self.cfg.shuffle_bn:
            x_all = distributed.all_gather_nograd(x)
            g = torch.Generator().manual_seed(SHUFFLE_SEED + int(self.shuffles))
            perm = torch.randperm(x_all.shape[0], generator=g).to(x.device)  # the same on every process
            self.shuffles += 1
            b, r = x.shape[0], distributed.rank()
            mine = perm.view(distributed.world_size(), b)[r]
            k_mine = F.normalize(loss_dtype(self.key_head(self.key_backbone(x_all[mine]))), dim=1)
            k_all = distributed.all_gather_nograd(k_mine)
            unshuffled = torch.empty_like(k_all)
            unshuffled[perm] = k_all
            return unshuffled[r * b : (r + 1) * b]
        return F.normalize(loss_dtype(self.key_head(self.key_backbone(x))), dim=1)

    def forward(self, batch: ViewBatch) -> StepOutput:
        x_q, x_k = batch.views
        q = F.normalize(loss_dtype(self.head(self.backbone(x_q))), dim=1)
        k = self._keys(x_k)
        queue = self.queue.clone().detach()
        labels = batch.labels.to(q.device)
        if bool((labels >= 0).any()) or bool((self.queue_labels >= 0).any()):
            queue_labels = self.queue_labels.clone()

            def rows(q: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
                return moco_rows(q, k[j], labels[j], queue, queue_labels, self.cfg.temperature)

        else:  # self-supervised: plain InfoNCE

            def rows(q: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
                return info_nce(q, k[j], queue, self.cfg.temperature, reduction="none")

        index = torch.arange(q.shape[0], device=q.device)
        loss = mixed_rows(rows, q, index, batch.mix, source_view=0).mean()
        with torch.no_grad():
            pos = (q * k).sum(dim=1, keepdim=True)
            acc = (pos > (q @ queue.t()).max(dim=1, keepdim=True).values).float().mean()
        self._enqueue(k, labels)
        return StepOutput(loss=loss, logs={"loss": loss.detach(), "pos_top1": acc})

    @torch.no_grad()
    def _enqueue(self, k: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        if not self.training:
            return
        if labels is None:
            labels = torch.full((k.shape[0],), -1, dtype=torch.long, device=k.device)
        keys = distributed.all_gather_nograd(k)
        key_labels = distributed.all_gather_nograd(labels.to(device=k.device, dtype=torch.long))
        n, size = keys.shape[0], self.queue.shape[0]
        if n >= size:
            self.queue.copy_(keys[-size:])
            self.queue_labels.copy_(key_labels[-size:])
            self.queue_ptr.zero_()
            return
        ptr = int(self.queue_ptr)
        idx = (torch.arange(n, device=keys.device) + ptr) % size
        self.queue[idx] = keys.to(self.queue.dtype)
        self.queue_labels[idx] = key_labels
        self.queue_ptr.fill_((ptr + n) % size)

    @torch.no_grad()
    def on_step_end(self, step: int, total_steps: int) -> None:
        ema_update_(self._key_params(), self._query_params(), self.cfg.momentum)
        # BN running statistics of the key encoder follow their own forward passes (as in the paper).
