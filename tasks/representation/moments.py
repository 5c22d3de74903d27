"""Shared pieces of the representation metrics: input checks and the streaming cross-moment accumulator.

Conventions (all of ``tasks/representation``)
---------------------------------------------
* Representations are row-major matrices ``[N, D]``: one row per example, one column per feature.  Two
  representations compared with each other must have the same ``N`` (the same examples, in the same
  order); their widths ``D1``, ``D2`` may differ.
* Inputs may be numpy arrays of any real dtype (including read-only ``float16`` :class:`numpy.memmap`
  files from :mod:`tasks.features`) or CPU/GPU :class:`torch.Tensor` s; every computation is done in
  numpy ``float64`` and every metric is returned as a Python ``float``.
* Bad input (wrong rank, ``N`` mismatch, too few examples, non-finite values) raises
  :class:`RepresentationError`, a :class:`core.errors.BenchError` and a :class:`ValueError`.

:class:`CrossMoments`
---------------------
Accumulates, chunk by chunk over the rows, the *centred* second moments of a pair of representations
``X [N, D1]``, ``Y [N, D2]``::

    n                      number of rows seen
    mean_x [D1], mean_y [D2]
    cxx = Xc^T Xc [D1, D1]  (only with ``auto=True``)
    cyy = Yc^T Yc [D2, D2]  (only with ``auto=True``)
    cxy = Xc^T Yc [D1, D2]
    ssx = ||Xc||_F^2, ssy = ||Yc||_F^2

where ``Xc = X - 1 mean_x^T`` is ``X`` centred with the mean over *all* ``N`` rows.  Each chunk is
centred with its own mean and merged with the running totals by the pairwise update of Chan, Golub and
LeVeque (1979)::

    C_ab = C_a + C_b + (n_a n_b / (n_a + n_b)) (mean_a - mean_b)(mean'_a - mean'_b)^T

which is algebraically exact (so the result equals the full-batch centred moments up to float64
rounding) and avoids the cancellation of the naive ``X^T X - n mean mean^T``.  Memory is
``O(D1^2 + D2^2 + D1 D2)`` float64 (``O(D1 D2)`` with ``auto=False``) plus one float64 copy of the
current chunk, independent of ``N``; time is ``O(N (D1 + D2)^2)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeVar

import numpy as np
import torch

from core.errors import BenchError

__all__ = ["DEFAULT_CHUNK_ROWS", "CrossMoments", "RepresentationError", "as_float64", "iter_row_chunks"]

DEFAULT_CHUNK_ROWS = 8192
"""Rows per chunk in the streaming helpers: 128 MiB per float64 copy of a chunk at D = 2048."""

Array = Any
"""A numpy array (or memmap) or a torch tensor; see :func:`as_float64`."""


_M = TypeVar("_M", bound="CrossMoments")


class RepresentationError(BenchError, ValueError):
    """Representations (or Gram matrices) whose shapes or values a metric cannot use."""


def as_float64(a: Array, ndim: int, name: str) -> np.ndarray:
    """``a`` as a float64 numpy array of rank ``ndim``; raises :class:`RepresentationError` otherwise.

    Torch tensors are detached and copied to the CPU; numpy inputs of another dtype are converted (a
    float64 numpy input is returned as is, without a copy).  Non-finite values are rejected.
    """
    if isinstance(a, torch.Tensor):
        a = a.detach().to(device="cpu", dtype=torch.float64).numpy()
    out = np.asarray(a, dtype=np.float64)
    if out.ndim != ndim:
        raise RepresentationError(f"{name} must have {ndim} dimensions, got shape {tuple(out.shape)}")
    if not np.isfinite(out).all():
        raise RepresentationError(f"{name} contains NaN or infinite values")
    return out


def check_pair(x: Array, y: Array) -> tuple[np.ndarray, np.ndarray]:
    """``x [N, D1]``, ``y [N, D2]`` as float64 arrays; raises unless both are 2-d with the same ``N``."""
    xs, ys = tuple(np.shape(x)), tuple(np.shape(y))
    if len(xs) != 2 or len(ys) != 2:
        raise RepresentationError(f"representations must be [N, D] matrices, got shapes {xs} and {ys}")
    if xs[0] != ys[0]:
        raise RepresentationError(f"representations cover different numbers of examples: {xs[0]} vs {ys[0]}")
    return as_float64(x, 2, "x"), as_float64(y, 2, "y")


def iter_row_chunks(n: int, chunk_rows: int) -> Iterator[slice]:
    """Consecutive row slices ``[0, chunk_rows), [chunk_rows, 2 chunk_rows), ...`` covering ``range(n)``."""
    if chunk_rows < 1:
        raise RepresentationError(f"chunk_rows must be >= 1, got {chunk_rows}")
    for start in range(0, n, chunk_rows):
        yield slice(start, min(start + chunk_rows, n))


class CrossMoments:
    """Streaming, exact centred moments of a representation pair ``X [N, D1]``, ``Y [N, D2]``.

    ``update(x_chunk, y_chunk)`` with the rows of both representations in the same order (any chunk
    sizes, including memmap slices), or ``update_from(x, y)`` to stream whole (memory-mapped) arrays.
    ``auto=False`` skips ``cxx``/``cyy`` (enough for the Procrustes distance, which needs only ``cxy``
    and the total sums of squares).  Accumulators of the same widths can be combined with :meth:`merge`
    (e.g. one per worker).
    """

    def __init__(self, d1: int, d2: int, *, auto: bool = True) -> None:
        if d1 < 1 or d2 < 1:
            raise RepresentationError(f"feature widths must be >= 1, got {d1} and {d2}")
        self.d1, self.d2, self.auto = d1, d2, auto
        self.n = 0
        self.mean_x = np.zeros(d1)
        self.mean_y = np.zeros(d2)
        self.cxy = np.zeros((d1, d2))
        self.cxx: np.ndarray | None = np.zeros((d1, d1)) if auto else None
        self.cyy: np.ndarray | None = np.zeros((d2, d2)) if auto else None
        self.ssx = 0.0
        self.ssy = 0.0

    def update(self: _M, x: Array, y: Array) -> _M:
        """Add the rows ``x [n, D1]`` and ``y [n, D2]`` (row ``i`` of both = the same example)."""
        xf, yf = check_pair(x, y)
        if xf.shape[1] != self.d1 or yf.shape[1] != self.d2:
            raise RepresentationError(
                f"chunk widths {xf.shape[1]}, {yf.shape[1]} differ from the accumulator's widths "
                f"{self.d1}, {self.d2}"
            )
        n = xf.shape[0]
        if n == 0:
            return self
        mx, my = xf.mean(axis=0), yf.mean(axis=0)
        xc, yc = xf - mx, yf - my
        other = CrossMoments(self.d1, self.d2, auto=self.auto)
        other.n, other.mean_x, other.mean_y = n, mx, my
        other.cxy = xc.T @ yc
        if self.auto:
            other.cxx, other.cyy = xc.T @ xc, yc.T @ yc
        other.ssx, other.ssy = float(np.einsum("ij,ij->", xc, xc)), float(np.einsum("ij,ij->", yc, yc))
        return self.merge(other)

    def update_from(self: _M, x: Array, y: Array, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> _M:
        """Stream all rows of ``x [N, D1]`` and ``y [N, D2]`` (e.g. float16 memmaps) in row chunks."""
        nx, ny = np.shape(x)[0], np.shape(y)[0]
        if nx != ny:
            raise RepresentationError(f"representations cover different numbers of examples: {nx} vs {ny}")
        for rows in iter_row_chunks(nx, chunk_rows):
            self.update(x[rows], y[rows])
        return self

    def merge(self: _M, other: CrossMoments) -> _M:
        """Fold ``other``'s rows into this accumulator (Chan et al.'s pairwise update); returns ``self``."""
        if (other.d1, other.d2) != (self.d1, self.d2) or (self.auto and not other.auto):
            raise RepresentationError("cannot merge accumulators of different widths or kinds")
        if other.n == 0:
            return self
        n = self.n + other.n
        w = self.n * other.n / n
        dx, dy = other.mean_x - self.mean_x, other.mean_y - self.mean_y
        self.cxy = self.cxy + other.cxy + w * np.outer(dx, dy)
        if self.cxx is not None and self.cyy is not None:
            assert other.cxx is not None and other.cyy is not None
            self.cxx = self.cxx + other.cxx + w * np.outer(dx, dx)
            self.cyy = self.cyy + other.cyy + w * np.outer(dy, dy)
        self.ssx += other.ssx + w * float(dx @ dx)
        self.ssy += other.ssy + w * float(dy @ dy)
        self.mean_x = self.mean_x + dx * (other.n / n)
        self.mean_y = self.mean_y + dy * (other.n / n)
        self.n = n
        return self

    def require_rows(self, minimum: int = 2) -> None:
        """Raise unless at least ``minimum`` rows have been accumulated."""
        if self.n < minimum:
            raise RepresentationError(f"need at least {minimum} examples, got {self.n}")
