"""SimSiam against Algorithm 1 of Chen & He 2020 (numpy float64), its architecture and its stop-gradient."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from pretrain.backbones import build_backbone
from pretrain.config import SimSiamConfig
from pretrain.methods import ViewBatch, build_method
from pretrain.methods.base import MixInfo
from pretrain.methods.simsiam import SimSiam, negative_cosine

pytestmark = pytest.mark.usefixtures("one_thread")


def reference_d(p: np.ndarray, z: np.ndarray) -> float:
    """Eq. 1: D(p, z) = -(p / ||p||_2) . (z / ||z||_2)."""
    return -sum(a * b for a, b in zip(p, z, strict=True)) / math.sqrt(float(p @ p) * float(z @ z))


def reference_simsiam(
    p: list[np.ndarray], z: list[np.ndarray], mix: tuple[int, np.ndarray, np.ndarray] | None
) -> float:
    """Eq. 4: L = D(p1, z2) / 2 + D(p2, z1) / 2, batch means; mixing as in ``reference_byol``."""
    n = p[0].shape[0]
    total = 0.0
    for src in (0, 1):
        pp, zz = p[src], z[1 - src]
        term = 0.0
        for i in range(n):
            if mix is None:
                term += reference_d(pp[i], zz[i])
                continue
            lam, j = mix[2][i], int(mix[1][i])
            if mix[0] == src:
                term += lam * reference_d(pp[i], zz[i]) + (1 - lam) * reference_d(pp[i], zz[j])
            else:
                term += lam * reference_d(pp[i], zz[i]) + (1 - lam) * reference_d(pp[j], zz[i])
        total += term / n / 2
    return total


def _simsiam(fix: bool = True) -> SimSiam:
    torch.manual_seed(0)
    cfg = SimSiamConfig(dim=8, hidden_dim=12, pred_hidden_dim=4, fix_pred_lr=fix)
    m = build_method(cfg, build_backbone("narrow_resnet18"))
    assert isinstance(m, SimSiam)
    return m


def _batch(b: int = 4, mix: MixInfo | None = None) -> ViewBatch:
    g = torch.Generator().manual_seed(2)
    x1, x2 = torch.rand(b, 3, 16, 16, generator=g), torch.rand(b, 3, 16, 16, generator=g)
    return ViewBatch(views=(x1, x2), labels=torch.full((b,), -1), mix=mix)


def test_negative_cosine_and_its_stop_gradient() -> None:
    g = torch.Generator().manual_seed(0)
    p = torch.randn(5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    z = torch.randn(5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    d = negative_cosine(p, z)
    want = np.mean([reference_d(p[i].detach().numpy(), z[i].detach().numpy()) for i in range(5)])
    assert d.item() == pytest.approx(want, rel=1e-12)
    d.backward()
    assert z.grad is None and p.grad is not None
    assert negative_cosine(p, 2 * p).item() == pytest.approx(-1.0, rel=1e-12)


def test_architecture_follows_the_paper() -> None:
    m = _simsiam()
    linears = [layer for layer in m.projector if isinstance(layer, nn.Linear)]
    norms = [layer for layer in m.projector if isinstance(layer, nn.BatchNorm1d)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(128, 12), (12, 12), (12, 8)]
    assert len(norms) == 3 and norms[-1].weight is None and norms[0].weight is not None
    assert isinstance(m.projector[-1], nn.BatchNorm1d)  # output BN, no ReLU
    pred = [layer for layer in m.predictor if isinstance(layer, nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in pred] == [(8, 4), (4, 8)]
    assert not isinstance(m.predictor[-1], nn.BatchNorm1d | nn.ReLU)


@pytest.mark.parametrize("view", [0, 1])
def test_forward_matches_reference(view: int) -> None:
    m = _simsiam()
    g = torch.Generator().manual_seed(9)
    perm, lam = torch.randperm(4, generator=g), torch.rand(4, generator=g)
    batch = _batch(4, MixInfo(view, perm, lam))
    with torch.no_grad():
        z = [m.projector(m.backbone(x)) for x in batch.views]
        p = [m.predictor(zv).double().numpy() for zv in z]
    zn = [zv.double().numpy() for zv in z]
    got = m(batch).loss.item()
    assert got == pytest.approx(reference_simsiam(p, zn, (view, perm.numpy(), lam.numpy())), rel=1e-5)
    plain = m(_batch(4)).loss
    assert plain.item() == pytest.approx(reference_simsiam(p, zn, None), rel=1e-5)
    assert torch.equal(m(_batch(4, MixInfo(view, perm, torch.ones(4)))).loss, plain)


def test_projections_get_gradient_only_through_the_predictor() -> None:
    """dL/dz1 of the method == d/dz1 [D(h(z1), sg(z2)) / 2]: the z1-as-target path is cut."""
    m = _simsiam()
    outputs: list[torch.Tensor] = []
    m.projector.register_forward_hook(lambda _mod, _inp, out: outputs.append(out))
    loss = m(_batch()).loss
    z1, z2 = outputs
    (got,) = torch.autograd.grad(loss, z1)
    leaf = z1.detach().clone().requires_grad_(True)
    (want,) = torch.autograd.grad(negative_cosine(m.predictor(leaf), z2.detach()) / 2, leaf)
    torch.testing.assert_close(got, want)


def test_param_groups_split_out_the_predictor() -> None:
    for fix in (True, False):
        m = _simsiam(fix)
        groups = m.param_groups()
        assert [g.get("fixed_lr", False) for g in groups] == [False, fix]
        assert {id(p) for p in groups[1]["params"]} == {id(p) for p in m.predictor.parameters()}
        every = [id(p) for g in groups for p in g["params"]]
        assert sorted(every) == sorted(id(p) for p in m.parameters()) and len(set(every)) == len(every)
