"""Barlow Twins: redundancy reduction of the cross-correlation (Zbontar et al. 2021, arXiv 2103.03230).

* encoder = backbone + projector of 3 linear layers, ``Linear -> BN -> ReLU`` twice then ``Linear``
  (``feature_dim -> hidden_dim -> hidden_dim -> dim``, 8192-8192-8192 in the paper; no biases, as in the
  official code);
* each view's embeddings [N, D] are standardised per dimension along the batch,
  ``z_n = (z - mean_b z) / sqrt(var_b z + eps)`` with the *biased* batch variance and ``eps = 1e-5``:
  what the official code does (``BatchNorm1d(affine=False)`` in training mode).  The paper's pseudo-code
  divides by ``z.std(0)`` (unbiased); the two differ by the factor ``sqrt((N - 1) / N)`` plus ``eps``;
* cross-correlation (Eq. 2) ``C = z1_n^T z2_n / N`` [D, D] (so ``C_ii`` is a correlation in [-1, 1]);
* loss (Eq. 1) ``L = sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2`` with lambd = 0.0051, unscaled.
  (An earlier release of the official code also multiplied the loss by a constant ``scale-loss``; that
  is a pure learning-rate rescaling and we do not apply it.)

Under DDP the statistics are global, as with the official code's SyncBatchNorm and all-reduced ``C``:
the batch mean/variance and ``C = sum over processes of z1_n^T z2_n / N_global`` are summed across
processes with :func:`pretrain.distributed.all_reduce_sum_with_grad` before the loss, so every process
evaluates the same loss of the global batch.  (The official code all-reduces ``C`` without a gradient
all-reduce, which scales the gradient by 1/world; ours is the exact gradient of that loss.)

Mixed views: Barlow Twins has no per-sample loss, so the mixed-target rule of
:class:`~pretrain.methods.base.MixInfo` is applied to the *target* embeddings instead.  When view ``v``
was mixed, the raw embeddings of the other view become ``z' = lam z + (1 - lam) z[perm]`` (row-wise,
before standardisation) and the standard loss is computed from ``(z_v, z')``.  ``lam = 1`` gives the
unmixed loss exactly.
"""

from __future__ import annotations

import torch

from pretrain import distributed
from pretrain.backbones import Backbone
from pretrain.config import BarlowConfig
from pretrain.methods.base import MixInfo, SSLMethod, StepOutput, ViewBatch, loss_dtype, mlp, no_autocast

EPS = 1e-5  # BatchNorm1d's default, as in the official code


def batch_standardize(z: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Per-dimension standardisation along the batch: ``(z - mean) / sqrt(var + eps)``, biased variance.

    Args:
        z: [N, D] embeddings of this process.  Under DDP mean and variance are over the global batch.

    Returns:
        [N, D].  Equals ``BatchNorm1d(D, affine=False)`` in training mode.
    """
    n = torch.tensor(float(z.shape[0]), device=z.device)
    n_all = distributed.all_reduce_sum_with_grad(n)
    mean = distributed.all_reduce_sum_with_grad(z.sum(dim=0)) / n_all
    centred = z - mean
    var = distributed.all_reduce_sum_with_grad((centred * centred).sum(dim=0)) / n_all
    return centred / torch.sqrt(var + eps)


def cross_correlation(z1n: torch.Tensor, z2n: torch.Tensor) -> torch.Tensor:
    """``C = z1n^T z2n / N`` [D, D] of standardised embeddings [N, D] (summed over processes under DDP)."""
    n = torch.tensor(float(z1n.shape[0]), device=z1n.device)
    n_all = distributed.all_reduce_sum_with_grad(n)
    return distributed.all_reduce_sum_with_grad(z1n.t() @ z2n) / n_all


def barlow_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float) -> torch.Tensor:
    """Barlow Twins loss (Eq. 1) of raw embeddings z1, z2 [N, D]: standardise, correlate, penalise.

    ``sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2`` with ``C = cross_correlation(...)``; a scalar.
    """
    c = cross_correlation(batch_standardize(z1), batch_standardize(z2))
    diag = torch.diagonal(c)
    on_diag = (1.0 - diag).pow(2).sum()
    off_diag = (c - torch.diag_embed(diag)).pow(2).sum()  # the diagonal subtracts to exactly 0
    return on_diag + lambd * off_diag


def mix_targets(z1: torch.Tensor, z2: torch.Tensor, mix: MixInfo | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace the unmixed view's embeddings by ``lam z + (1 - lam) z[perm]`` (see module docstring)."""
    if mix is None:
        return z1, z2
    target = z2 if mix.view == 0 else z1
    lam = mix.lam.to(device=target.device, dtype=target.dtype)[:, None]
    mixed = lam * target + (1.0 - lam) * target[mix.perm.to(target.device)]
    return (z1, mixed) if mix.view == 0 else (mixed, z2)


class BarlowTwins(SSLMethod):
    """Barlow Twins (see module docstring).  ``forward`` consumes ``batch.views = (x_A, x_B)``."""

    def __init__(self, backbone: Backbone, cfg: BarlowConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        dims = [backbone.feature_dim, cfg.hidden_dim, cfg.hidden_dim, cfg.dim]
        self.projector = mlp(dims, out_bias=False)

    def forward(self, batch: ViewBatch) -> StepOutput:
        z1, z2 = (loss_dtype(self.projector(self.backbone(x))) for x in batch.views)
        with no_autocast(z1.device):
            z1, z2 = mix_targets(z1, z2, batch.mix)
            loss = barlow_loss(z1, z2, self.cfg.lambd)
        return StepOutput(loss=loss, logs={"loss": loss.detach()})
