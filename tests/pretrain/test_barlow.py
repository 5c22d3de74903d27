"""Barlow Twins against Eq. 1-2 of Zbontar et al. 2021, transcribed with explicit loops (numpy float64)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from pretrain.backbones import build_backbone
from pretrain.config import BarlowConfig
from pretrain.methods import ViewBatch, build_method
from pretrain.methods.barlow import EPS, BarlowTwins, barlow_loss, batch_standardize, cross_correlation
from pretrain.methods.base import MixInfo

pytestmark = pytest.mark.usefixtures("one_thread")


def reference_standardize(z: np.ndarray, eps: float = EPS) -> np.ndarray:
    """Per dimension d: (z[:, d] - mean) / sqrt(biased variance + eps)."""
    n, d = z.shape
    out = np.empty_like(z)
    for j in range(d):
        mean = sum(z[b, j] for b in range(n)) / n
        var = sum((z[b, j] - mean) ** 2 for b in range(n)) / n
        for b in range(n):
            out[b, j] = (z[b, j] - mean) / math.sqrt(var + eps)
    return out


def reference_barlow(z1: np.ndarray, z2: np.ndarray, lambd: float) -> float:
    """Eq. 2: C_ij = sum_b z1n[b, i] z2n[b, j] / N; Eq. 1: sum_i (1 - C_ii)^2 + lambd sum_{i != j} C_ij^2."""
    a, b = reference_standardize(z1), reference_standardize(z2)
    n, d = a.shape
    loss = 0.0
    for i in range(d):
        for j in range(d):
            c = sum(a[k, i] * b[k, j] for k in range(n)) / n
            loss += (1 - c) ** 2 if i == j else lambd * c * c
    return loss


def _pair(n: int, d: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(n, d, generator=g, dtype=torch.float64) * 3 + 1
    return z1, torch.randn(n, d, generator=g, dtype=torch.float64) + z1 / 2


def test_standardisation_is_per_dimension_along_the_batch() -> None:
    z, _ = _pair(7)
    zn = batch_standardize(z)
    np.testing.assert_allclose(zn.numpy(), reference_standardize(z.numpy()), rtol=1e-12)
    torch.testing.assert_close(zn.mean(0), torch.zeros(6, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(
        zn.var(0, unbiased=False), torch.ones(6, dtype=torch.float64), atol=1e-5, rtol=0
    )
    bn = nn.BatchNorm1d(6, affine=False).double().train()  # what the official code uses
    torch.testing.assert_close(zn, bn(z))


@pytest.mark.parametrize(("n", "lambd"), [(2, 0.0051), (8, 0.0051), (5, 0.5), (6, 0.0)])
def test_loss_matches_equations(n: int, lambd: float) -> None:
    z1, z2 = _pair(n, seed=n)
    got = barlow_loss(z1, z2, lambd).item()
    assert got == pytest.approx(reference_barlow(z1.numpy(), z2.numpy(), lambd), rel=1e-10)
    assert got == pytest.approx(barlow_loss(z2, z1, lambd).item(), rel=1e-12)  # C -> C^T


def test_cross_correlation_of_a_view_with_itself() -> None:
    z, _ = _pair(16, d=4)
    zn = batch_standardize(z, eps=0.0)
    c = cross_correlation(zn, zn)
    torch.testing.assert_close(torch.diagonal(c), torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(c, torch.from_numpy(np.corrcoef(z.numpy(), rowvar=False)))
    # identical, decorrelated views (centred orthogonal columns): C = I / (1 + eps),
    # so the loss is D * (eps / (1 + eps))^2
    x = torch.randn(16, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    white, _ = torch.linalg.qr(x - x.mean(0))
    assert barlow_loss(white * 4, white * 4, 0.0051).item() == pytest.approx(
        4 * (EPS / (1 + EPS)) ** 2, rel=1e-6
    )


def _barlow() -> BarlowTwins:
    torch.manual_seed(0)
    m = build_method(BarlowConfig(dim=6, hidden_dim=10, lambd=0.0051), build_backbone("narrow_resnet18"))
    assert isinstance(m, BarlowTwins)
    return m


@pytest.mark.parametrize("view", [0, 1])
def test_forward_mixes_the_target_embeddings(view: int) -> None:
    m = _barlow()
    g = torch.Generator().manual_seed(3)
    x1, x2 = torch.rand(6, 3, 16, 16, generator=g), torch.rand(6, 3, 16, 16, generator=g)
    perm, lam = torch.randperm(6, generator=g), torch.rand(6, generator=g)
    with torch.no_grad():
        z = [m.projector(m.backbone(x)).double().numpy() for x in (x1, x2)]
    target = z[1 - view]
    mixed = np.stack(
        [lam[i].item() * target[i] + (1 - lam[i].item()) * target[int(perm[i])] for i in range(6)]
    )
    za, zb = (z[0], mixed) if view == 0 else (mixed, z[1])

    def run(mix: MixInfo | None) -> torch.Tensor:
        return m(ViewBatch(views=(x1, x2), labels=torch.full((6,), -1), mix=mix)).loss

    assert run(MixInfo(view, perm, lam)).item() == pytest.approx(reference_barlow(za, zb, 0.0051), rel=1e-5)
    plain = run(None)
    assert plain.item() == pytest.approx(reference_barlow(z[0], z[1], 0.0051), rel=1e-5)
    assert torch.equal(run(MixInfo(view, perm, torch.ones(6))), plain)
