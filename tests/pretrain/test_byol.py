"""BYOL against the paper's equations (Grill et al. 2020): Eq. 2 loss, Eq. 1 EMA, Sec. 3.3 tau schedule."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from pretrain.backbones import build_backbone
from pretrain.config import BYOLConfig
from pretrain.methods import ViewBatch, build_method
from pretrain.methods.base import MixInfo
from pretrain.methods.byol import BYOL, byol_loss, byol_momentum

pytestmark = pytest.mark.usefixtures("one_thread")


def reference_regression(p: np.ndarray, z: np.ndarray) -> float:
    """Eq. 2 as written: ||p / ||p||_2 - z / ||z||_2||_2^2 (a squared Euclidean distance, not 2 - 2 cos)."""
    diff = p / math.sqrt(float(p @ p)) - z / math.sqrt(float(z @ z))
    return float(sum(d * d for d in diff))


def reference_byol(
    preds: list[np.ndarray], targets: list[np.ndarray], mix: tuple[int, np.ndarray, np.ndarray] | None
) -> float:
    """L + L~ (prediction of view v vs target projection of view 1 - v), each a batch mean.

    Mixed view v: its predictions regress lam_i to their own target and 1 - lam_i to the partner's; the
    mixed target projection j is the target of prediction j (lam_j) and of prediction perm_j (1 - lam_j).
    """
    n = preds[0].shape[0]
    total = 0.0
    for src in (0, 1):
        p, z = preds[src], targets[1 - src]
        term = 0.0
        for i in range(n):
            if mix is None:
                term += reference_regression(p[i], z[i])
            elif mix[0] == src:
                lam, j = mix[2][i], int(mix[1][i])
                term += lam * reference_regression(p[i], z[i]) + (1 - lam) * reference_regression(p[i], z[j])
            else:  # the mixed target i serves prediction i and prediction perm_i
                lam, j = mix[2][i], int(mix[1][i])
                term += lam * reference_regression(p[i], z[i]) + (1 - lam) * reference_regression(p[j], z[i])
        total += term / n
    return total


def test_byol_loss_is_normalised_squared_distance() -> None:
    g = torch.Generator().manual_seed(0)
    p, z = (
        torch.randn(5, 7, generator=g, dtype=torch.float64),
        torch.randn(5, 7, generator=g, dtype=torch.float64),
    )
    want = np.mean([reference_regression(p[i].numpy(), z[i].numpy()) for i in range(5)])
    assert byol_loss(p, z).item() == pytest.approx(want, rel=1e-12)
    assert byol_loss(p, p * 3).item() == pytest.approx(0.0, abs=1e-12)
    assert byol_loss(p, -p).item() == pytest.approx(4.0, rel=1e-12)
    assert byol_loss(p, z, reduction="none").shape == (5,)


@pytest.mark.parametrize("base", [0.996, 0.99, 0.0])
def test_cosine_momentum_schedule(base: float) -> None:
    total = 100
    assert byol_momentum(0, total, base) == pytest.approx(base)
    assert byol_momentum(total, total, base) == pytest.approx(1.0)
    assert byol_momentum(total // 2, total, base) == pytest.approx(1 - (1 - base) / 2)
    for k in (10, 37, 80):
        assert byol_momentum(k, total, base) == pytest.approx(
            1 - (1 - base) * (math.cos(math.pi * k / total) + 1) / 2
        )
    taus = [byol_momentum(k, total, base) for k in range(total + 1)]
    assert all(a <= b for a, b in itertools.pairwise(taus))


def _byol(base: float = 0.9) -> BYOL:
    torch.manual_seed(0)
    cfg = BYOLConfig(dim=8, hidden_dim=16, pred_hidden_dim=16, base_momentum=base)
    m = build_method(cfg, build_backbone("narrow_resnet18"))
    assert isinstance(m, BYOL)
    return m


def _batch(b: int = 4, mix: MixInfo | None = None) -> ViewBatch:
    g = torch.Generator().manual_seed(1)
    x1, x2 = torch.rand(b, 3, 16, 16, generator=g), torch.rand(b, 3, 16, 16, generator=g)
    return ViewBatch(views=(x1, x2), labels=torch.full((b,), -1), mix=mix)


def test_target_starts_equal_and_gets_no_gradient() -> None:
    m = _byol()
    for pt, po in zip(m._target_params(), m._online_params(), strict=True):
        assert torch.equal(pt, po) and not pt.requires_grad
    m(_batch()).loss.backward()
    assert all(p.grad is None for p in m._target_params())
    for module in (m.backbone, m.projector, m.predictor):
        assert all(p.grad is not None for p in module.parameters())


def test_ema_update_uses_the_scheduled_tau() -> None:
    m = _byol(base=0.9)
    with torch.no_grad():
        for p in m._online_params():
            p.add_(1.0)
    before = [p.clone() for p in m._target_params()]
    online = [p.clone() for p in m._online_params()]
    m.on_step_end(4, 10)  # the 4th optimiser step: k = 3 of K = 10
    tau = 1 - (1 - 0.9) * (math.cos(math.pi * 3 / 10) + 1) / 2
    for pt, t0, po in zip(m._target_params(), before, online, strict=True):
        torch.testing.assert_close(pt, tau * t0 + (1 - tau) * po)


@pytest.mark.parametrize("view", [0, 1])
def test_forward_matches_reference_with_and_without_mixing(view: int) -> None:
    m = _byol()
    g = torch.Generator().manual_seed(7)
    perm, lam = torch.randperm(4, generator=g), torch.rand(4, generator=g)
    batch = _batch(4, MixInfo(view, perm, lam))
    with torch.no_grad():
        preds = [m.predictor(m.projector(m.backbone(x))).double().numpy() for x in batch.views]
        targets = [m.target_projector(m.target_backbone(x)).double().numpy() for x in batch.views]
    got = m(batch).loss.item()
    assert got == pytest.approx(reference_byol(preds, targets, (view, perm.numpy(), lam.numpy())), rel=1e-5)
    plain = m(_batch(4)).loss
    assert plain.item() == pytest.approx(reference_byol(preds, targets, None), rel=1e-5)
    assert torch.equal(m(_batch(4, MixInfo(view, perm, torch.ones(4)))).loss, plain)
