"""Weighted k-nearest-neighbour classification on frozen (cached) features.

Protocol (Wu et al. 2018, "Unsupervised Feature Learning via Non-Parametric Instance Discrimination",
arXiv 1805.01978, Sec. 3.4 / Eq. 8), the kNN monitor of most SSL code bases:

1. every feature vector (train bank ``[N, D]`` and test queries ``[M, D]``) is L2-normalised, so the
   dot product is the cosine similarity ``s_i``;
2. for a query, the ``k`` train rows of highest similarity are its neighbours ``N_k``;
3. neighbour ``i`` votes for its class with weight ``exp(s_i / T)`` (``T`` = 0.07 in the paper); the
   score of class ``c`` is ``sum_{i in N_k, y_i = c} exp(s_i / T)``;
4. prediction = classes sorted by score (top-1 / top-5 accuracy in percent; ties go to the lower class
   index, as in :func:`tasks.linear.topk_accuracy`).

There is no fitted hyper-parameter: ``k`` (20 and 200 by default, as reported by InstDisc) and ``T`` are
fixed by the protocol, so the test split cannot influence any choice.

Memory is bounded: queries are processed ``query_chunk`` rows at a time and the train bank is streamed
``bank_chunk`` rows at a time from its (float16 memmap) storage; a running top-``k`` per query is merged
with each bank chunk's top-``k``, so peak memory is ``O(query_chunk * (bank_chunk + k))`` floats plus
one bank chunk, independent of ``N``.  Similarities are computed in float32.  Selecting the top ``k`` of
the union of per-chunk top-``k`` lists equals the global top ``k`` (up to the order of exactly equal
similarities).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from core.errors import ConfigError, DatasetError

CPU = torch.device("cpu")


@dataclass(frozen=True)
class KnnConfig:
    """``ks``: neighbour counts evaluated (each capped at the train size); ``temperature``: ``T``."""

    ks: tuple[int, ...] = (20, 200)
    temperature: float = 0.07
    query_chunk: int = 1024
    bank_chunk: int = 65536

    def __post_init__(self) -> None:
        if not self.ks or min(self.ks) < 1 or len(set(self.ks)) != len(self.ks):
            raise ConfigError(f"KnnConfig.ks must be distinct positive integers, got {self.ks}")
        if self.temperature <= 0 or self.query_chunk < 1 or self.bank_chunk < 1:
            raise ConfigError("KnnConfig: temperature, query_chunk and bank_chunk must be positive")


@dataclass(frozen=True)
class KnnResult:
    """Per ``k``: top-1 / top-5 accuracy (%) on the queries; ``k_used`` is ``min(k, N)``."""

    top1: dict[int, float]
    top5: dict[int, float]
    k_used: dict[int, int]
    n_train: int
    n_test: int
    seconds: float


def _normalised(x: np.ndarray, device: torch.device) -> torch.Tensor:
    t = torch.from_numpy(np.array(x, dtype=np.float32)).to(device)  # copies one chunk
    return torch.nn.functional.normalize(t, dim=1)


def _check(features: np.ndarray, labels: np.ndarray, name: str) -> np.ndarray:
    y = np.asarray(labels)
    if getattr(features, "ndim", 0) != 2 or y.shape != (features.shape[0],) or y.size == 0:
        raise DatasetError(f"{name}: need features [N>0, D] and labels [N], got {features.shape}, {y.shape}")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise DatasetError(f"{name}: labels must be non-negative integers")
    return y.astype(np.int64)


def _top_neighbours(
    queries: torch.Tensor, bank: np.ndarray, k: int, chunk: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(similarities [Q, k'], bank row indices [Q, k'])`` of the ``k' = min(k, N)`` most similar bank
    rows, most similar first."""
    best_sim = torch.full((queries.shape[0], 0), -2.0, device=device)
    best_idx = torch.zeros((queries.shape[0], 0), dtype=torch.int64, device=device)
    for start in range(0, bank.shape[0], chunk):
        part = _normalised(bank[start : start + chunk], device)
        sim = queries @ part.T
        kk = min(k, sim.shape[1])
        s, i = sim.topk(kk, dim=1)
        best_sim = torch.cat([best_sim, s], dim=1)
        best_idx = torch.cat([best_idx, i + start], dim=1)
        if best_sim.shape[1] > k:
            best_sim, pos = best_sim.topk(k, dim=1)
            best_idx = best_idx.gather(1, pos)
    best_sim, pos = best_sim.sort(dim=1, descending=True)  # merged lists shorter than k are unsorted
    return best_sim, best_idx.gather(1, pos)


def knn_scores(
    sim: torch.Tensor, neighbour_labels: torch.Tensor, num_classes: int, temperature: float
) -> torch.Tensor:
    """Class scores ``[Q, C]``: ``sum`` over neighbours of ``exp(sim / T)`` into their class."""
    weights = (sim / temperature).exp()
    scores = torch.zeros(sim.shape[0], num_classes, dtype=weights.dtype, device=sim.device)
    return scores.scatter_add_(1, neighbour_labels, weights)


def _correct(scores: torch.Tensor, y: torch.Tensor, ks: Sequence[int]) -> list[int]:
    true = scores.gather(1, y.view(-1, 1))
    classes = torch.arange(scores.shape[1], device=scores.device)
    rank = ((scores > true) | ((scores == true) & (classes < y.view(-1, 1)))).sum(1)
    return [int((rank < min(k, scores.shape[1])).sum()) for k in ks]


def knn_classify(
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    num_classes: int,
    cfg: KnnConfig | None = None,
    device: torch.device | str = CPU,
) -> KnnResult:
    """Run the protocol of the module docstring; ``train``/``test`` are ``(features [N, D], labels [N])``
    (features may be float16 memmaps)."""
    start_time = time.perf_counter()
    cfg, device = cfg or KnnConfig(), torch.device(device)
    xtr, xte = train[0], test[0]
    ytr = _check(xtr, train[1], "train")
    yte = _check(xte, test[1], "test")
    if xtr.shape[1] != xte.shape[1]:
        raise DatasetError(f"train features have D={xtr.shape[1]} but test features D={xte.shape[1]}")
    if max(ytr.max(), yte.max()) >= num_classes:
        raise DatasetError(f"labels must lie in [0, {num_classes})")
    k_used = {k: min(k, len(ytr)) for k in cfg.ks}
    kmax = max(k_used.values())
    bank_labels = torch.as_tensor(ytr, device=device)
    top1 = dict.fromkeys(cfg.ks, 0)
    top5 = dict.fromkeys(cfg.ks, 0)
    with torch.no_grad():
        for q0 in range(0, len(yte), cfg.query_chunk):
            queries = _normalised(xte[q0 : q0 + cfg.query_chunk], device)
            y = torch.as_tensor(yte[q0 : q0 + cfg.query_chunk], device=device)
            sim, idx = _top_neighbours(queries, xtr, kmax, cfg.bank_chunk, device)  # sorted, descending
            neighbour_labels = bank_labels[idx]
            for k in cfg.ks:
                kk = k_used[k]
                scores = knn_scores(sim[:, :kk], neighbour_labels[:, :kk], num_classes, cfg.temperature)
                c1, c5 = _correct(scores, y, (1, 5))
                top1[k] += c1
                top5[k] += c5
    n = len(yte)
    return KnnResult(
        top1={k: 100.0 * v / n for k, v in top1.items()},
        top5={k: 100.0 * v / n for k, v in top5.items()},
        k_used=k_used,
        n_train=len(ytr),
        n_test=n,
        seconds=time.perf_counter() - start_time,
    )
