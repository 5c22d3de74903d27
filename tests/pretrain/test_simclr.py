"""SimCLR's NT-Xent against a loop transcription of the paper's Eq. 1 / Algorithm 1 (numpy float64)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pretrain import distributed
from pretrain.backbones import build_backbone
from pretrain.config import SimCLRConfig
from pretrain.methods import ViewBatch, build_method
from pretrain.methods.base import MixInfo
from pretrain.methods.simclr import SimCLR, nt_xent

pytestmark = pytest.mark.usefixtures("one_thread")


def reference_nt_xent(
    z1: np.ndarray, z2: np.ndarray, t: float, mix: tuple[int, np.ndarray, np.ndarray] | None = None
) -> float:
    """Algorithm 1: s = cosine similarities of the 2N projections; for each anchor a and a target b,
    l(a, b) = -log(exp(s_ab / t) / sum_{c != a} exp(s_ac / t)); loss = weighted sum / 2N.

    Weights: every anchor scores its other view with weight 1.  With ``mix = (v, perm, lam)``: an anchor
    of view v (sample i) scores the other view of i with lam_i and of perm_i with 1 - lam_i; each mixed
    projection (v, j) is the positive of the other-view anchor of j with lam_j and of perm_j with
    1 - lam_j (and these replace the unit weights of the other view's anchors).
    """
    n = z1.shape[0]
    z = [z1[i] / np.linalg.norm(z1[i]) for i in range(n)] + [z2[i] / np.linalg.norm(z2[i]) for i in range(n)]

    def idx(view: int, sample: int) -> int:
        return view * n + sample

    def ell(a: int, b: int) -> float:
        denom = sum(math.exp(float(z[a] @ z[c]) / t) for c in range(2 * n) if c != a)
        return -math.log(math.exp(float(z[a] @ z[b]) / t) / denom)

    total = 0.0
    if mix is None:
        for view in (0, 1):
            for i in range(n):
                total += ell(idx(view, i), idx(1 - view, i))
        return total / (2 * n)
    v, perm, lam = mix
    for i in range(n):  # anchors of the mixed view
        a = idx(v, i)
        total += lam[i] * ell(a, idx(1 - v, i)) + (1 - lam[i]) * ell(a, idx(1 - v, int(perm[i])))
    for j in range(n):  # the mixed projection (v, j) as a positive of the other view's anchors
        total += lam[j] * ell(idx(1 - v, j), idx(v, j))
        total += (1 - lam[j]) * ell(idx(1 - v, int(perm[j])), idx(v, j))
    return total / (2 * n)


def _pair(n: int, d: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(
        n, d, generator=g, dtype=torch.float64
    )


@pytest.mark.parametrize(("n", "t"), [(2, 0.5), (6, 0.1), (4, 1.0), (7, 0.07)])
def test_nt_xent_matches_algorithm_1(n: int, t: float) -> None:
    z1, z2 = _pair(n, seed=n)
    got = nt_xent(z1, z2, t).item()
    assert got == pytest.approx(reference_nt_xent(z1.numpy(), z2.numpy(), t), rel=1e-10)


def test_nt_xent_edge_cases() -> None:
    z1, z2 = _pair(4)
    # symmetric in the two views, invariant to the projections' norms
    assert nt_xent(z1, z2, 0.2).item() == pytest.approx(nt_xent(z2, z1, 0.2).item(), rel=1e-12)
    assert nt_xent(3 * z1, 0.5 * z2, 0.2).item() == pytest.approx(nt_xent(z1, z2, 0.2).item(), rel=1e-12)
    # a single sample: the positive is the only candidate
    assert nt_xent(z1[:1], z2[:1], 0.2).item() == pytest.approx(0.0, abs=1e-12)
    # identical, orthogonal views at low temperature: loss -> 0; at infinite temperature -> log(2N - 1)
    eye = torch.eye(4, dtype=torch.float64)
    assert nt_xent(eye, eye, 0.01).item() == pytest.approx(0.0, abs=1e-12)
    assert nt_xent(z1, z2, 1e6).item() == pytest.approx(math.log(7), rel=1e-5)


@pytest.mark.parametrize("view", [0, 1])
def test_nt_xent_mixed_targets(view: int) -> None:
    n, t = 6, 0.3
    z1, z2 = _pair(n, seed=3)
    g = torch.Generator().manual_seed(5)
    perm = torch.randperm(n, generator=g)
    lam = torch.rand(n, generator=g, dtype=torch.float64)
    got = nt_xent(z1, z2, t, MixInfo(view, perm, lam)).item()
    want = reference_nt_xent(z1.numpy(), z2.numpy(), t, (view, perm.numpy(), lam.numpy()))
    assert got == pytest.approx(want, rel=1e-10)
    ones = MixInfo(view, perm, torch.ones(n, dtype=torch.float64))
    assert torch.equal(nt_xent(z1, z2, t, ones), nt_xent(z1, z2, t))


def test_gradients_reach_both_views_and_gather_is_identity_in_one_process() -> None:
    z1, z2 = _pair(4)
    z1.requires_grad_(True)
    z2.requires_grad_(True)
    assert distributed.all_gather_with_grad(z1) is z1
    assert distributed.all_reduce_sum_with_grad(z2) is z2
    nt_xent(z1, z2, 0.5).backward()
    assert z1.grad is not None and z2.grad is not None
    assert z1.grad.abs().sum() > 0 and z2.grad.abs().sum() > 0


def test_method_forward_uses_projector_outputs() -> None:
    torch.manual_seed(0)
    m = build_method(SimCLRConfig(dim=8, hidden_dim=16, temperature=0.2), build_backbone("narrow_resnet18"))
    assert isinstance(m, SimCLR)
    g = torch.Generator().manual_seed(1)
    x1, x2 = torch.rand(4, 3, 16, 16, generator=g), torch.rand(4, 3, 16, 16, generator=g)
    out = m(ViewBatch(views=(x1, x2), labels=torch.full((4,), -1)))
    with torch.no_grad():
        z = m.projector(m.backbone(torch.cat([x1, x2])))
    want = reference_nt_xent(z[:4].double().numpy(), z[4:].double().numpy(), 0.2)
    assert out.loss.item() == pytest.approx(want, rel=1e-5)
    out.loss.backward()
    assert all(p.grad is not None for p in m.parameters())
