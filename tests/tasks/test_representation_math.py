"""Tests of the representation-similarity maths (tasks/representation: CKA, Procrustes, invariance).

Closed-form facts, agreement of the streaming/minibatch versions with dense ones, and comparisons with
direct (slow, literal) implementations written here from the papers' formulas.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import BenchError
from tasks.representation.cka import (
    MinibatchCKA,
    StreamingLinearCKA,
    hsic_unbiased,
    linear_cka,
    linear_cka_from_moments,
    minibatch_linear_cka,
    streaming_linear_cka,
)
from tasks.representation.invariance import InvarianceDiversity, diversity, invariance
from tasks.representation.moments import CrossMoments, RepresentationError
from tasks.representation.opd import (
    StreamingOPD,
    orthogonal_procrustes_distance,
    procrustes_distance_from_moments,
    streaming_procrustes_distance,
)

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------------------------------
# helpers and direct reference implementations


def orthogonal(d: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``d x d`` orthogonal matrix (QR of a Gaussian matrix)."""
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def correlated(
    n: int, d1: int, d2: int, seed: int, noise: float = 1.5, offset: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """``x [n, d1]`` Gaussian and ``y = x W + noise`` ``[n, d2]``: genuinely (not perfectly) related."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d1)) + offset
    y = x @ rng.normal(size=(d1, d2)) / np.sqrt(d1) + noise * rng.normal(size=(n, d2))
    return x, y


def centering(n: int) -> np.ndarray:
    return np.eye(n) - np.ones((n, n)) / n


def hsic_biased_direct(k: np.ndarray, l_: np.ndarray) -> float:
    """HSIC_0 = tr(K H L H) / (n - 1)^2 with H = I - 1 1^T / n (Gretton et al. 2005)."""
    n = k.shape[0]
    h = centering(n)
    return float(np.trace(k @ h @ l_ @ h)) / (n - 1) ** 2


def cka_direct(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA from n x n Gram matrices and the biased HSIC, literally."""
    k, l_ = x @ x.T, y @ y.T
    return hsic_biased_direct(k, l_) / np.sqrt(hsic_biased_direct(k, k) * hsic_biased_direct(l_, l_))


def hsic_unbiased_direct(k: np.ndarray, l_: np.ndarray) -> float:
    """Song et al. 2012 eq. (5) as written, with explicit matrix products and all-ones vectors."""
    n = k.shape[0]
    kt, lt = k - np.diag(np.diag(k)), l_ - np.diag(np.diag(l_))
    one = np.ones(n)
    return float(
        (
            np.trace(kt @ lt)
            + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * (one @ kt @ lt @ one)
        )
        / (n * (n - 3))
    )


def hsic_unbiased_ustat(k: np.ndarray, l_: np.ndarray) -> float:
    """HSIC_1 as the U-statistic it is: mean over ordered distinct (i, j, q, r) of
    k_ij l_ij + k_ij l_qr - 2 k_ij l_iq (tiny n only)."""
    n = k.shape[0]
    terms = [
        k[i, j] * l_[i, j] + k[i, j] * l_[q, r] - 2.0 * k[i, j] * l_[i, q]
        for i, j, q, r in itertools.permutations(range(n), 4)
    ]
    return float(np.mean(terms))


def hsic_unbiased_features(x: np.ndarray, y: np.ndarray) -> float:
    """HSIC_1 of the linear kernels of ``x``, ``y`` without forming Gram matrices (for large N):
    tr(K~L~) = ||X^T Y||_F^2 - sum_i |x_i|^2 |y_i|^2, 1^T K~ 1 = |sum x|^2 - sum |x_i|^2,
    (1^T K~)_i = x_i . sum x - |x_i|^2."""
    x, y = x - x.mean(axis=0), y - y.mean(axis=0)
    n = x.shape[0]
    nx, ny = (x * x).sum(axis=1), (y * y).sum(axis=1)
    sx, sy = x.sum(axis=0), y.sum(axis=0)
    trace = np.linalg.norm(x.T @ y) ** 2 - (nx * ny).sum()
    sums = (sx @ sx - nx.sum()) * (sy @ sy - ny.sum()) / ((n - 1) * (n - 2))
    cross = 2.0 / (n - 2) * ((x @ sx - nx) @ (y @ sy - ny))
    return float((trace + sums - cross) / (n * (n - 3)))


def cka_unbiased_full(x: np.ndarray, y: np.ndarray) -> float:
    """The limit of minibatch CKA: the full-sample HSIC_1 terms combined."""
    hxy, hxx, hyy = hsic_unbiased_features(x, y), hsic_unbiased_features(x, x), hsic_unbiased_features(y, y)
    return hxy / np.sqrt(hxx * hyy)


def opd_direct(x: np.ndarray, y: np.ndarray) -> float:
    """OPD as the Procrustes fit itself: pad to a common width, centre, normalise, solve
    min_R ||X R - Y||_F^2 with R = U V^T from the SVD of X^T Y (Schoenemann 1966), return the residual."""
    d = max(x.shape[1], y.shape[1])
    x = np.pad(x, ((0, 0), (0, d - x.shape[1])))
    y = np.pad(y, ((0, 0), (0, d - y.shape[1])))
    x, y = x - x.mean(axis=0), y - y.mean(axis=0)
    x, y = x / np.linalg.norm(x), y / np.linalg.norm(y)
    u, _, vt = np.linalg.svd(x.T @ y)
    return float(np.linalg.norm(x @ (u @ vt) - y) ** 2)


def write_f16_memmap(path: Path, a: np.ndarray) -> np.memmap:
    """``a`` written as raw float16 (like the feature cache) and reopened read-only."""
    mm = np.memmap(path, dtype=np.float16, mode="w+", shape=a.shape)
    mm[:] = a
    mm.flush()
    del mm
    return np.memmap(path, dtype=np.float16, mode="r", shape=a.shape)


# --------------------------------------------------------------------------------------------------
# linear CKA


@pytest.mark.parametrize(("n", "d1", "d2"), [(200, 8, 12), (20, 30, 45)])  # feature-space / Gram branch
def test_linear_cka_matches_direct_gram_implementation(n: int, d1: int, d2: int) -> None:
    x, y = correlated(n, d1, d2, seed=1, offset=2.0)
    assert linear_cka(x, y) == pytest.approx(cka_direct(x, y), abs=1e-12)
    assert linear_cka(y, x) == pytest.approx(linear_cka(x, y), abs=1e-12)


@pytest.mark.parametrize(("n", "d"), [(300, 16), (25, 60)])
def test_linear_cka_of_a_representation_with_itself_is_one(n: int, d: int) -> None:
    x = np.random.default_rng(0).normal(size=(n, d))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)


def test_linear_cka_invariant_to_orthogonal_maps_isotropic_scaling_and_translation() -> None:
    rng = np.random.default_rng(2)
    x, y = correlated(400, 10, 14, seed=2)
    ref = linear_cka(x, y)
    assert 0.2 < ref < 0.9
    x2 = 3.7 * x @ orthogonal(10, rng) + 5.0
    y2 = 0.01 * y @ orthogonal(14, rng) - 2.0
    assert linear_cka(x2, y) == pytest.approx(ref, abs=1e-10)
    assert linear_cka(x, y2) == pytest.approx(ref, abs=1e-10)
    assert linear_cka(x2, y2) == pytest.approx(ref, abs=1e-10)
    assert linear_cka(x, x2) == pytest.approx(1.0, abs=1e-10)
    # ... but not to anisotropic scaling
    assert abs(linear_cka(x * np.linspace(0.1, 10, 10), y) - ref) > 1e-3


def test_linear_cka_of_independent_representations_is_small() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(2000, 10)), rng.normal(size=(2000, 12))
    assert 0.0 <= linear_cka(x, y) < 0.02  # ~ sqrt(D1 D2) / N for independent Gaussians
    xc, yc = correlated(2000, 10, 12, seed=3)
    assert linear_cka(xc, yc) > 0.2


def test_linear_cka_accepts_torch_tensors() -> None:
    x, y = correlated(100, 6, 5, seed=4)
    got = linear_cka(torch.from_numpy(x).float().requires_grad_(), torch.from_numpy(y).float())
    assert got == pytest.approx(linear_cka(x.astype(np.float32), y.astype(np.float32)), abs=1e-12)


def test_bad_shapes_raise_bench_errors() -> None:
    x = np.zeros((10, 3))
    with pytest.raises(RepresentationError, match="different numbers of examples"):
        linear_cka(x, np.zeros((11, 3)))
    with pytest.raises(BenchError):
        orthogonal_procrustes_distance(x, np.zeros((9, 3)))
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        linear_cka(np.zeros(10), x)
    with pytest.raises(RepresentationError, match="zero variance"):
        linear_cka(np.ones((10, 3)), np.random.default_rng(0).normal(size=(10, 2)))
    with pytest.raises(RepresentationError, match="NaN"):
        linear_cka(np.full((10, 3), np.nan), x)
    with pytest.raises(RepresentationError, match="n > 3"):
        hsic_unbiased(np.eye(3), np.eye(3))
    with pytest.raises(RepresentationError, match="square"):
        hsic_unbiased(np.eye(5), np.eye(6))
    with pytest.raises(RepresentationError, match="n > 3"):
        MinibatchCKA().update(np.zeros((3, 2)), np.zeros((3, 2)))
    with pytest.raises(RepresentationError, match="batch_size"):
        minibatch_linear_cka(x, x, batch_size=3)
    with pytest.raises(RepresentationError, match="batch_size"):
        minibatch_linear_cka(x, x, batch_size=11)
    with pytest.raises(RepresentationError, match="widths"):
        StreamingLinearCKA(3, 3).update(x, np.zeros((10, 4)))
    with pytest.raises(RepresentationError, match="auto=True"):
        linear_cka_from_moments(StreamingOPD(3, 3).update(x, x))


# --------------------------------------------------------------------------------------------------
# unbiased HSIC and minibatch CKA


def test_hsic_unbiased_matches_the_papers_formula_and_the_u_statistic() -> None:
    x, y = correlated(7, 3, 2, seed=5, offset=1.0)
    k, l_ = x @ x.T, y @ y.T
    assert hsic_unbiased(k, l_) == pytest.approx(hsic_unbiased_direct(k, l_), rel=1e-12)
    assert hsic_unbiased(k, l_) == pytest.approx(hsic_unbiased_ustat(k, l_), rel=1e-10)
    # larger n, against the written-out formula and the Gram-free feature form
    x, y = correlated(50, 6, 4, seed=6, offset=3.0)
    k, l_ = x @ x.T, y @ y.T
    assert hsic_unbiased(k, l_) == pytest.approx(hsic_unbiased_direct(k, l_), rel=1e-10)
    assert hsic_unbiased_features(x, y) == pytest.approx(hsic_unbiased(k, l_), rel=1e-10)
    # linear kernel: HSIC_1 does not see translations of the features
    x2, y2 = x + 7.0, y - 4.0
    assert hsic_unbiased(x2 @ x2.T, y2 @ y2.T) == pytest.approx(hsic_unbiased(k, l_), rel=1e-8)


def test_minibatch_cka_update_matches_hand_combination() -> None:
    x, y = correlated(90, 5, 4, seed=7)
    acc, parts = MinibatchCKA(), []
    for rows in (slice(0, 30), slice(30, 60), slice(60, 90)):
        xb, yb = x[rows], y[rows]
        acc.update(xb, yb)
        k, l_ = xb @ xb.T, yb @ yb.T
        parts.append((hsic_unbiased_direct(k, l_), hsic_unbiased_direct(k, k), hsic_unbiased_direct(l_, l_)))
    kl, kk, ll = np.mean(parts, axis=0)
    assert acc.batches == 3
    assert acc.value() == pytest.approx(kl / np.sqrt(kk * ll), rel=1e-10)


def test_minibatch_cka_is_deterministic_given_the_seed_and_reads_float16_memmaps(tmp_path: Path) -> None:
    x, y = correlated(400, 8, 6, seed=8)
    a = minibatch_linear_cka(x, y, batch_size=64, epochs=2, seed=11)
    assert minibatch_linear_cka(x, y, batch_size=64, epochs=2, seed=11) == a
    assert minibatch_linear_cka(x, y, batch_size=64, epochs=2, seed=12) != a
    xm, ym = write_f16_memmap(tmp_path / "x.f16", x), write_f16_memmap(tmp_path / "y.f16", y)
    x16, y16 = x.astype(np.float16).astype(np.float64), y.astype(np.float16).astype(np.float64)
    got = minibatch_linear_cka(xm, ym, batch_size=64, epochs=2, seed=11)
    assert got == pytest.approx(minibatch_linear_cka(x16, y16, batch_size=64, epochs=2, seed=11), abs=1e-12)
    tx, ty = torch.from_numpy(x16), torch.from_numpy(y16)
    assert minibatch_linear_cka(tx, ty, batch_size=64, epochs=2, seed=11) == pytest.approx(got, abs=1e-12)


def test_minibatch_cka_converges_to_full_sample_cka() -> None:
    x, y = correlated(4000, 32, 24, seed=0)
    full_linear, full_unbiased = linear_cka(x, y), cka_unbiased_full(x, y)
    assert 0.2 < full_linear < 0.4
    # Working point: one epoch of batch 500 is within 0.02 of full-batch linear CKA.
    assert abs(minibatch_linear_cka(x, y, batch_size=500, seed=0) - full_linear) < 0.02

    # Its exact limit (many batches) is the full-sample unbiased CKA; mean error over seeds shrinks as
    # the batch grows and as the number of batches grows.
    def err(batch: int, epochs: int) -> float:
        runs = [minibatch_linear_cka(x, y, batch_size=batch, epochs=epochs, seed=s) for s in range(4)]
        return float(np.mean(np.abs(np.array(runs) - full_unbiased)))

    e25, e100, e400 = err(25, 1), err(100, 1), err(400, 1)
    assert e25 > e100 > e400
    assert e25 > 2.5 * e400
    assert err(100, 16) < 0.6 * e100
    assert err(400, 8) < 1e-3
    # and full linear CKA differs from that limit by only its small O(D / N) bias
    assert abs(full_linear - full_unbiased) < 0.01


# --------------------------------------------------------------------------------------------------
# streaming accumulators (CKA and OPD)


def test_streaming_cka_and_opd_equal_dense_for_any_chunking() -> None:
    x, y = correlated(1000, 12, 20, seed=9, offset=100.0)  # large mean: centring must be exact
    want_cka, want_opd = linear_cka(x, y), orthogonal_procrustes_distance(x, y)
    for chunk in (1000, 333, 64, 7):
        assert streaming_linear_cka(x, y, chunk_rows=chunk) == pytest.approx(want_cka, abs=1e-9)
        assert streaming_procrustes_distance(x, y, chunk_rows=chunk) == pytest.approx(want_opd, abs=1e-9)
    # irregular chunks, one pass serving both metrics, and merging of per-worker accumulators
    m, left, right = CrossMoments(12, 20), CrossMoments(12, 20), CrossMoments(12, 20)
    edges = [0, 1, 5, 300, 301, 777, 1000]
    for i, (a, b) in enumerate(itertools.pairwise(edges)):
        m.update(x[a:b], y[a:b])
        (left if i < 3 else right).update(x[a:b], y[a:b])
    left.merge(right)
    for acc in (m, left):
        assert acc.n == 1000
        assert linear_cka_from_moments(acc) == pytest.approx(want_cka, abs=1e-9)
        assert procrustes_distance_from_moments(acc) == pytest.approx(want_opd, abs=1e-9)
    xc = x - x.mean(axis=0)
    assert m.cxx is not None
    np.testing.assert_allclose(m.cxx, xc.T @ xc, rtol=1e-9, atol=1e-6)


def test_streaming_from_float16_memmaps_equals_dense(tmp_path: Path) -> None:
    x, y = correlated(3000, 64, 48, seed=10, offset=0.5)
    xm, ym = write_f16_memmap(tmp_path / "x.f16", x), write_f16_memmap(tmp_path / "y.f16", y)
    x16, y16 = np.asarray(xm, dtype=np.float64), np.asarray(ym, dtype=np.float64)
    cka_acc = StreamingLinearCKA(64, 48)
    opd_acc = StreamingOPD(64, 48)
    for a in range(0, 3000, 512):
        cka_acc.update(xm[a : a + 512], ym[a : a + 512])
        opd_acc.update(xm[a : a + 512], ym[a : a + 512])
    assert opd_acc.cxx is None  # OPD keeps only the D1 x D2 cross matrix
    assert cka_acc.value() == pytest.approx(linear_cka(x16, y16), abs=1e-6)
    assert opd_acc.value() == pytest.approx(orthogonal_procrustes_distance(x16, y16), abs=1e-6)
    assert streaming_linear_cka(xm, ym, chunk_rows=1000) == pytest.approx(cka_acc.value(), abs=1e-6)
    assert streaming_procrustes_distance(xm, ym, chunk_rows=1000) == pytest.approx(opd_acc.value(), abs=1e-6)


# --------------------------------------------------------------------------------------------------
# orthogonal Procrustes distance


@pytest.mark.parametrize(("d1", "d2"), [(10, 10), (6, 15), (15, 6)])
def test_opd_matches_the_procrustes_fit(d1: int, d2: int) -> None:
    x, y = correlated(150, d1, d2, seed=12, offset=1.0)
    assert orthogonal_procrustes_distance(x, y) == pytest.approx(opd_direct(x, y), abs=1e-10)


def test_opd_is_zero_for_orthogonal_maps_and_isotropic_scaling() -> None:
    rng = np.random.default_rng(13)
    x = rng.normal(size=(200, 9))
    assert orthogonal_procrustes_distance(x, x) == pytest.approx(0.0, abs=1e-10)
    assert orthogonal_procrustes_distance(x, x @ orthogonal(9, rng)) == pytest.approx(0.0, abs=1e-10)
    assert orthogonal_procrustes_distance(x, -4.0 * x + 3.0) == pytest.approx(0.0, abs=1e-10)
    # D1 != D2: x embedded in a wider space and rotated there
    wide = np.pad(x, ((0, 0), (0, 7))) @ orthogonal(16, rng)
    assert orthogonal_procrustes_distance(x, wide) == pytest.approx(0.0, abs=1e-10)
    assert orthogonal_procrustes_distance(wide, 0.5 * x) == pytest.approx(0.0, abs=1e-10)
    # not for a general linear map
    assert orthogonal_procrustes_distance(x, x * np.linspace(0.1, 10, 9)) > 0.05


def test_opd_lies_in_zero_two_and_grows_with_independence() -> None:
    rng = np.random.default_rng(14)
    for n, d1, d2 in [(5, 3, 8), (50, 4, 4), (300, 20, 7), (30, 40, 40)]:
        value = orthogonal_procrustes_distance(rng.normal(size=(n, d1)), rng.normal(size=(n, d2)))
        assert 0.0 <= value <= 2.0
    x, y = correlated(500, 10, 10, seed=14)
    related = orthogonal_procrustes_distance(x, y)
    independent = orthogonal_procrustes_distance(x, rng.normal(size=(500, 10)))
    assert 0.0 < related < independent <= 2.0
    # rank-one representations pointing along orthogonal directions that are uncorrelated: OPD = 2
    u = np.array([1.0, -1.0, 1.0, -1.0])[:, None]
    v = np.array([1.0, 1.0, -1.0, -1.0])[:, None]
    assert orthogonal_procrustes_distance(u, v) == pytest.approx(2.0, abs=1e-12)


# --------------------------------------------------------------------------------------------------
# invariance and diversity


def invariance_loop(anchors: np.ndarray, views: np.ndarray) -> float:
    cos = [
        float(views[a, k] @ anchors[a] / (np.linalg.norm(views[a, k]) * np.linalg.norm(anchors[a])))
        for a in range(views.shape[0])
        for k in range(views.shape[1])
    ]
    return float(np.mean(cos))


def diversity_loop(views: np.ndarray) -> float:
    per_anchor = []
    for a in range(views.shape[0]):
        pairs = [
            float(views[a, k] @ views[a, j] / (np.linalg.norm(views[a, k]) * np.linalg.norm(views[a, j])))
            for k, j in itertools.combinations(range(views.shape[1]), 2)
        ]
        assert len(pairs) == views.shape[1] * (views.shape[1] - 1) // 2
        per_anchor.append(np.mean(pairs))
    return 1.0 - float(np.mean(per_anchor))


def test_invariance_and_diversity_match_loop_references_for_any_chunking() -> None:
    rng = np.random.default_rng(15)
    anchors = rng.normal(size=(37, 8))
    views = anchors[:, None, :] + 0.8 * rng.normal(size=(37, 5, 8))
    inv, div = invariance_loop(anchors, views), diversity_loop(views)
    assert 0.3 < inv < 1.0
    assert 0.0 < div < 1.0
    assert invariance(anchors, views) == pytest.approx(inv, abs=1e-12)
    assert diversity(views) == pytest.approx(div, abs=1e-12)
    acc = InvarianceDiversity()
    for a, b in itertools.pairwise([0, 1, 10, 10, 37]):
        acc.update(anchors[a:b], views[a:b])
    assert acc.anchors == 37
    assert acc.invariance() == pytest.approx(inv, abs=1e-12)
    assert acc.diversity() == pytest.approx(div, abs=1e-12)
    # float16 / torch inputs are computed in float64
    t_anchors, t_views = torch.from_numpy(anchors).half(), torch.from_numpy(views).half()
    a64, v64 = t_anchors.double().numpy(), t_views.double().numpy()
    assert invariance(t_anchors, t_views) == pytest.approx(invariance_loop(a64, v64), abs=1e-12)
    assert diversity(t_views) == pytest.approx(diversity_loop(v64), abs=1e-12)


def test_invariance_and_diversity_extremes() -> None:
    rng = np.random.default_rng(16)
    anchors = rng.normal(size=(20, 6))
    same = np.repeat(anchors[:, None, :], 4, axis=1)
    assert invariance(anchors, same) == pytest.approx(1.0, abs=1e-12)
    assert invariance(anchors, same * rng.uniform(0.1, 5.0, size=(20, 4, 1))) == pytest.approx(1.0, abs=1e-12)
    assert diversity(same) == pytest.approx(0.0, abs=1e-12)
    assert invariance(anchors, -same) == pytest.approx(-1.0, abs=1e-12)
    opposite = np.stack([anchors, -anchors], axis=1)  # K = 2, views pointing opposite ways
    assert diversity(opposite) == pytest.approx(2.0, abs=1e-12)
    assert invariance(anchors, opposite) == pytest.approx(0.0, abs=1e-12)


def test_invariance_and_diversity_shape_errors() -> None:
    anchors, views = np.ones((5, 4)), np.ones((5, 3, 4))
    with pytest.raises(RepresentationError, match="K >= 2"):
        diversity(np.ones((5, 1, 4)))
    acc = InvarianceDiversity().update(anchors, np.ones((5, 1, 4)))
    assert acc.invariance() == pytest.approx(1.0)
    with pytest.raises(RepresentationError, match="K >= 2"):
        acc.diversity()
    with pytest.raises(RepresentationError, match="do not match"):
        invariance(np.ones((6, 4)), views)
    with pytest.raises(RepresentationError, match="do not match"):
        invariance(np.ones((5, 5)), views)
    with pytest.raises(RepresentationError, match="3 dimensions"):
        invariance(anchors, np.ones((5, 4)))
    with pytest.raises(RepresentationError, match="earlier chunks"):
        InvarianceDiversity().update(anchors, views).update(anchors, np.ones((5, 2, 4)))
    with pytest.raises(RepresentationError, match="at least one anchor"):
        InvarianceDiversity().invariance()
