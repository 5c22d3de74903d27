"""Centred kernel alignment (CKA) between two representations of the same examples.

Linear CKA (Kornblith, Norouzi, Lee, Hinton 2019, "Similarity of Neural Network Representations
Revisited", arXiv 1905.00414, eq. (5)).  For ``X [N, D1]``, ``Y [N, D2]`` (rows = the same ``N``
examples) with column-centred ``Xc``, ``Yc``::

    CKA(X, Y) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)        in [0, 1]

This is HSIC_0(K, L) / sqrt(HSIC_0(K, K) HSIC_0(L, L)) with linear kernels ``K = X X^T``, ``L = Y Y^T``
and the biased HSIC_0(K, L) = tr(K H L H) / (N - 1)^2, ``H = I - 1 1^T / N``.  It is invariant to
orthogonal transforms and isotropic scaling of either side (and to translations, by the centring), not
to general invertible linear maps.  Everything is computed in float64.

* :func:`linear_cka` -- dense, for inputs that fit in memory.
* :class:`StreamingLinearCKA` -- exact full-batch linear CKA over arbitrarily many rows with memory
  ``O((D1 + D2)^2)`` independent of ``N``: it accumulates the centred ``Xc^T Xc``, ``Yc^T Yc``,
  ``Xc^T Yc`` chunk by chunk (:class:`~tasks.representation.moments.CrossMoments`), e.g. from the
  float16 memmaps of :mod:`tasks.features`.  Usable for widths up to a few thousand: at
  ``D1 = D2 = 2048`` the three float64 matrices take 96 MiB and each chunk of ``C`` rows costs about
  ``3 C D^2`` multiply-adds (1.3e10 per 1000 rows at D = 2048); beyond ~8k features the ``D^2``
  matrices (1.5 GiB at 8192) and the ``N D^2`` time become the limit.
* :func:`hsic_unbiased`, :class:`MinibatchCKA`, :func:`minibatch_linear_cka` -- the minibatch estimator
  of Nguyen, Raghu, Kornblith 2021 ("Do Wide and Deep Networks Learn the Same Things?", arXiv
  2010.15327, Sec. 3.1), built on the unbiased HSIC estimator of Song, Smola, Gretton, Bedo, Borgwardt
  2012 (JMLR 13, "Feature Selection via Dependence Maximization", eq. (5)).  For ``n x n`` Gram matrices
  ``K``, ``L`` (``n > 3``) with zeroed diagonals ``K~``, ``L~`` and ``1`` the all-ones vector::

      HSIC_1(K, L) = 1 / (n (n - 3)) * [ tr(K~ L~) + (1^T K~ 1)(1^T L~ 1) / ((n - 1)(n - 2))
                                          - 2 / (n - 2) * 1^T K~ L~ 1 ]

  For ``k`` minibatches (each a set of ``n`` examples, the same rows of ``X`` and ``Y``)::

      CKA_minibatch = mean_i HSIC_1(K_i, L_i) / sqrt(mean_i HSIC_1(K_i, K_i) * mean_i HSIC_1(L_i, L_i))

  HSIC_1 is an unbiased U-statistic, so the averages converge (more batches) to the HSIC_1 of the whole
  data set (the mean of a U-statistic over all size-n subsets is the full-sample U-statistic); unlike
  linear CKA on a small batch it has no ``O(D / n)`` upward bias.  The estimate is not clipped and can
  fall slightly outside [0, 1] for small batches.  Linear kernel only.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from tasks.representation.moments import (
    DEFAULT_CHUNK_ROWS,
    Array,
    CrossMoments,
    RepresentationError,
    as_float64,
    check_pair,
)

__all__ = [
    "MinibatchCKA",
    "StreamingLinearCKA",
    "hsic_unbiased",
    "linear_cka",
    "linear_cka_from_moments",
    "minibatch_linear_cka",
    "streaming_linear_cka",
]


def _ratio(num: float, sq_x: float, sq_y: float, what: str) -> float:
    """``num / (sq_x * sq_y)`` with a clear error when either side has no variance."""
    if not sq_x > 0.0:
        raise RepresentationError(f"x has zero variance (all rows equal); {what} is undefined")
    if not sq_y > 0.0:
        raise RepresentationError(f"y has zero variance (all rows equal); {what} is undefined")
    return num / (sq_x * sq_y)


def linear_cka(x: Array, y: Array) -> float:
    """Linear CKA of ``x [N, D1]`` and ``y [N, D2]`` (dense, float64); see the module docstring.

    Uses the ``D x D`` feature-space form, or the equivalent ``N x N`` Gram form when ``N`` is smaller
    than a width.  Raises :class:`RepresentationError` for an ``N`` mismatch, ``N < 2`` or a constant
    representation.
    """
    xf, yf = check_pair(x, y)
    n = xf.shape[0]
    if n < 2:
        raise RepresentationError(f"linear CKA needs at least 2 examples, got {n}")
    xc, yc = xf - xf.mean(axis=0), yf - yf.mean(axis=0)
    if n < max(xf.shape[1], yf.shape[1]):
        k, l_ = xc @ xc.T, yc @ yc.T  # ||Yc^T Xc||_F^2 = <K, L>_F, ||Xc^T Xc||_F = ||K||_F
        num, sx, sy = float(np.vdot(k, l_)), float(np.linalg.norm(k)), float(np.linalg.norm(l_))
    else:
        num = float(np.linalg.norm(yc.T @ xc) ** 2)
        sx, sy = float(np.linalg.norm(xc.T @ xc)), float(np.linalg.norm(yc.T @ yc))
    return _ratio(num, sx, sy, "CKA")


def linear_cka_from_moments(m: CrossMoments) -> float:
    """Full-batch linear CKA from accumulated centred moments (needs ``auto=True`` and ``n >= 2``)."""
    if m.cxx is None or m.cyy is None:
        raise RepresentationError("linear CKA needs an accumulator built with auto=True")
    m.require_rows(2)
    num = float(np.linalg.norm(m.cxy) ** 2)
    return _ratio(num, float(np.linalg.norm(m.cxx)), float(np.linalg.norm(m.cyy)), "CKA")


class StreamingLinearCKA(CrossMoments):
    """Exact full-batch linear CKA accumulated over row chunks; memory ``O((D1 + D2)^2)``.

    ``acc = StreamingLinearCKA(D1, D2); acc.update(x_chunk, y_chunk) ...; acc.value()``.  Equals
    :func:`linear_cka` on the concatenated rows up to float64 rounding, whatever the chunking.
    """

    def __init__(self, d1: int, d2: int) -> None:
        super().__init__(d1, d2, auto=True)

    def value(self) -> float:
        """Linear CKA of all rows seen so far."""
        return linear_cka_from_moments(self)


def streaming_linear_cka(x: Array, y: Array, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> float:
    """Linear CKA of ``x [N, D1]``, ``y [N, D2]`` (e.g. float16 memmaps), streamed in row chunks."""
    if len(np.shape(x)) != 2 or len(np.shape(y)) != 2:
        raise RepresentationError(f"representations must be [N, D], got {np.shape(x)} and {np.shape(y)}")
    acc = StreamingLinearCKA(np.shape(x)[1], np.shape(y)[1])
    return acc.update_from(x, y, chunk_rows).value()


def hsic_unbiased(k: Array, l_: Array) -> float:
    """Unbiased HSIC_1(K, L) of Song et al. 2012 for ``n x n`` Gram matrices, ``n > 3`` (float64).

    Computed in ``O(n^2)``: ``tr(K~ L~) = sum(K~ * L~^T)`` and ``1^T K~ L~ 1 = (1^T K~)(L~ 1)``.
    """
    kf, lf = as_float64(k, 2, "K"), as_float64(l_, 2, "L")
    n = kf.shape[0]
    if kf.shape != (n, n) or lf.shape != (n, n):
        raise RepresentationError(f"K and L must be square of the same size, got {kf.shape} and {lf.shape}")
    if n <= 3:
        raise RepresentationError(f"unbiased HSIC needs n > 3 examples, got {n}")
    kt, lt = kf.copy(), lf.copy()
    np.fill_diagonal(kt, 0.0)
    np.fill_diagonal(lt, 0.0)
    trace = float(np.vdot(kt, lt.T))
    sums = float(kt.sum()) * float(lt.sum()) / ((n - 1) * (n - 2))
    cross = float(kt.sum(axis=0) @ lt.sum(axis=1)) * 2.0 / (n - 2)
    return (trace + sums - cross) / (n * (n - 3))


class MinibatchCKA:
    """Minibatch linear CKA (Nguyen et al. 2021): average HSIC_1 terms over minibatches, then combine.

    ``update(x_batch [n, D1], y_batch [n, D2])`` per minibatch (``n > 3``; batches may differ in size and
    are weighted equally), ``value()`` for the estimate.  Each batch is centred by its own mean before
    forming ``K = X X^T``, ``L = Y Y^T``: HSIC_1 with a linear kernel is exactly invariant to such
    translations, and centring keeps the Gram entries well conditioned.
    """

    def __init__(self) -> None:
        self.batches = 0
        self.hsic_kl = 0.0
        self.hsic_kk = 0.0
        self.hsic_ll = 0.0

    def update(self, x: Array, y: Array) -> MinibatchCKA:
        """Add one minibatch (row ``i`` of ``x`` and ``y`` = the same example)."""
        xf, yf = check_pair(x, y)
        if xf.shape[0] <= 3:
            raise RepresentationError(f"unbiased HSIC needs minibatches of n > 3 examples, got {xf.shape[0]}")
        xc, yc = xf - xf.mean(axis=0), yf - yf.mean(axis=0)
        k, l_ = xc @ xc.T, yc @ yc.T
        self.hsic_kl += hsic_unbiased(k, l_)
        self.hsic_kk += hsic_unbiased(k, k)
        self.hsic_ll += hsic_unbiased(l_, l_)
        self.batches += 1
        return self

    def value(self) -> float:
        """``mean HSIC_1(K, L) / sqrt(mean HSIC_1(K, K) * mean HSIC_1(L, L))`` over the batches seen."""
        if self.batches == 0:
            raise RepresentationError("minibatch CKA has seen no minibatches")
        if not (self.hsic_kk > 0.0 and self.hsic_ll > 0.0):
            raise RepresentationError(
                "minibatch CKA is undefined: the mean self-HSIC of a representation is not positive "
                "(constant representation, or too few / too small minibatches)"
            )
        return self.hsic_kl / math.sqrt(self.hsic_kk * self.hsic_ll)


def _take_rows(a: Array, rows: np.ndarray) -> Array:
    """``a[rows]`` for numpy arrays / memmaps (reads only those rows) and torch tensors."""
    if isinstance(a, torch.Tensor):
        return a[torch.from_numpy(rows).to(a.device)]
    return a[rows]


def minibatch_linear_cka(x: Array, y: Array, *, batch_size: int, epochs: int = 1, seed: int = 0) -> float:
    """Minibatch linear CKA of ``x [N, D1]``, ``y [N, D2]``; deterministic given ``seed``.

    Each epoch draws a permutation of the ``N`` rows from ``numpy.random.default_rng(seed)`` (one
    generator for all epochs) and cuts it into ``N // batch_size`` full minibatches of ``batch_size``
    rows; the remainder of each epoch is dropped so every minibatch has the same size.  Rows are read
    by index, so ``x``, ``y`` may be memmaps larger than memory.  Needs ``3 < batch_size <= N``.
    """
    if len(np.shape(x)) != 2 or len(np.shape(y)) != 2:
        raise RepresentationError(f"representations must be [N, D], got {np.shape(x)} and {np.shape(y)}")
    n = np.shape(x)[0]
    if np.shape(y)[0] != n:
        raise RepresentationError(f"representations cover different numbers of examples: {n} vs {len(y)}")
    if not 3 < batch_size <= n:
        raise RepresentationError(f"batch_size must satisfy 3 < batch_size <= N = {n}, got {batch_size}")
    if epochs < 1:
        raise RepresentationError(f"epochs must be >= 1, got {epochs}")
    rng = np.random.default_rng(seed)
    acc = MinibatchCKA()
    for _ in range(epochs):
        perm = rng.permutation(n)
        for start in range(0, n - batch_size + 1, batch_size):
            rows = np.sort(perm[start : start + batch_size])  # sorted: sequential memmap reads
            acc.update(_take_rows(x, rows), _take_rows(y, rows))
    return acc.value()
