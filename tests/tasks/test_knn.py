"""kNN classifier vs a brute-force reference written here from InstDisc's Eq. 8."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.errors import ConfigError, DatasetError
from tasks.knn import KnnConfig, knn_classify


def brute_force(
    xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray, c: int, k: int, t: float
) -> tuple[float, float]:
    """Loop over queries: cosine to every train row, sort, weight exp(s/T), vote, rank the true class."""
    correct1 = correct5 = 0
    for x, y in zip(xte.astype(np.float64), yte, strict=True):
        sims = []
        for row in xtr.astype(np.float64):
            sims.append(float(x @ row / (np.linalg.norm(x) * np.linalg.norm(row))))
        order = sorted(range(len(sims)), key=lambda i: -sims[i])[: min(k, len(sims))]
        scores = [0.0] * c
        for i in order:
            scores[ytr[i]] += math.exp(sims[i] / t)
        ranking = sorted(range(c), key=lambda j: (-scores[j], j))
        correct1 += ranking[0] == y
        correct5 += y in ranking[: min(5, c)]
    return 100.0 * correct1 / len(yte), 100.0 * correct5 / len(yte)


def clustered(rng: np.random.Generator, n: int, c: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    centres = rng.normal(size=(c, d))
    y = rng.integers(0, c, n)
    return (centres[y] + 1.5 * rng.normal(size=(n, d))).astype(np.float32), y


@pytest.mark.parametrize("chunks", [(1024, 65536), (7, 13)])
def test_matches_brute_force(chunks: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    xtr, ytr = clustered(rng, 300, 8, 16)
    xte, yte = clustered(rng, 60, 8, 16)
    cfg = KnnConfig(ks=(1, 20, 200), temperature=0.07, query_chunk=chunks[0], bank_chunk=chunks[1])
    res = knn_classify((xtr, ytr), (xte, yte), 8, cfg)
    for k in cfg.ks:
        top1, top5 = brute_force(xtr, ytr, xte, yte, 8, k, 0.07)
        assert res.top1[k] == pytest.approx(top1)
        assert res.top5[k] == pytest.approx(top5)
    assert res.k_used == {1: 1, 20: 20, 200: 200} and res.n_train == 300 and res.n_test == 60
    assert 0 < res.top1[20] <= res.top5[20] <= 100


def test_k_larger_than_bank_and_float16_memmap(tmp_path: object) -> None:
    rng = np.random.default_rng(1)
    xtr, ytr = clustered(rng, 40, 3, 8)
    xte, yte = clustered(rng, 25, 3, 8)
    path = f"{tmp_path}/bank.f16"
    mm = np.memmap(path, dtype=np.float16, mode="w+", shape=xtr.shape)
    mm[:] = xtr
    mm.flush()
    bank = np.memmap(path, dtype=np.float16, mode="r", shape=xtr.shape)
    cfg = KnnConfig(ks=(20, 200), bank_chunk=16)
    res = knn_classify((bank, ytr), (xte, yte), 3, cfg)
    assert res.k_used == {20: 20, 200: 40}
    for k in (20, 200):
        top1, top5 = brute_force(np.asarray(bank, dtype=np.float32), ytr, xte, yte, 3, k, 0.07)
        assert res.top1[k] == pytest.approx(top1)
        assert res.top5[k] == 100.0 == top5  # only 3 classes: top-5 always holds the label


def test_perfect_clusters_and_temperature() -> None:
    x = np.eye(4, dtype=np.float32).repeat(5, axis=0)  # 4 orthogonal clusters of 5 identical rows
    y = np.arange(4).repeat(5)
    res = knn_classify((x, y), (x, y), 4, KnnConfig(ks=(5, 20)))
    assert res.top1[5] == res.top1[20] == 100.0
    # query e0: 2 exact matches of class 0 (cos 1) vs 6 rows of class 1 at cos 0.9.  T = 0.07 favours
    # the exact matches (2 e^{1/T} > 6 e^{0.9/T}); T = 1 lets the majority win (2 e < 6 e^{0.9}).
    near = np.array([0.9, np.sqrt(1 - 0.81), 0.0], dtype=np.float32)
    bank = np.stack([np.array([1.0, 0, 0], dtype=np.float32)] * 2 + [near] * 6)
    labels = np.array([0, 0, 1, 1, 1, 1, 1, 1])
    query = (np.array([[1.0, 0, 0]], dtype=np.float32), np.array([0]))
    assert knn_classify((bank, labels), query, 2, KnnConfig(ks=(8,), temperature=0.07)).top1[8] == 100.0
    assert knn_classify((bank, labels), query, 2, KnnConfig(ks=(8,), temperature=1.0)).top1[8] == 0.0


def test_bad_inputs() -> None:
    x = np.zeros((4, 3), dtype=np.float32)
    with pytest.raises(ConfigError):
        KnnConfig(ks=())
    with pytest.raises(ConfigError):
        KnnConfig(temperature=0)
    with pytest.raises(DatasetError, match="D=3"):
        knn_classify((x, np.zeros(4, dtype=int)), (np.zeros((2, 5)), np.zeros(2, dtype=int)), 2)
    with pytest.raises(DatasetError, match=r"\[0, 2\)"):
        knn_classify((x, np.array([0, 1, 2, 0])), (x, np.zeros(4, dtype=int)), 2)
