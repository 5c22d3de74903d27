"""Orthogonal Procrustes distance (OPD) between two representations of the same examples.

Ding, Denain, Steinhardt 2021, "Grounding Representation Similarity with Statistical Testing"
(arXiv 2108.01661, Sec. 2).  For ``X [N, D1]``, ``Y [N, D2]`` (rows = the same ``N`` examples):

1. centre each column (subtract the mean over the ``N`` rows);
2. normalise each representation to unit Frobenius norm: ``X <- Xc / ||Xc||_F``, ``Y <- Yc / ||Yc||_F``;
3. ``OPD(X, Y) = ||X||_F^2 + ||Y||_F^2 - 2 ||X^T Y||_*  =  2 - 2 ||X^T Y||_*``

where ``||.||_*`` is the nuclear norm (sum of singular values).  ``min_R ||X R - Y||_F^2`` over
orthogonal ``R`` equals this (Schoenemann 1966), so OPD is zero iff ``Y`` is an orthogonal transform of
``X`` up to translation and isotropic scaling, and by von Neumann's trace inequality
``0 <= ||X^T Y||_* <= ||X||_F ||Y||_F = 1``, so ``0 <= OPD <= 2``.  The returned value is clipped to
``[0, 2]`` to remove float64 rounding (e.g. ``-1e-16`` for identical inputs).  It is a distance: lower
means more similar (unlike CKA).

Different widths ``D1 != D2`` are fine: ``X^T Y`` is a ``D1 x D2`` matrix and its nuclear norm is the
sum of its ``min(D1, D2)`` singular values.  This is exactly the OPD of the two representations after
zero-padding the narrower one to the wider width (zero columns change neither the centring, the
Frobenius norms nor the non-zero singular values of ``X^T Y``), i.e. the Procrustes fit with an
orthogonal ``R`` on the padded space.

Computed in float64.  :func:`orthogonal_procrustes_distance` is dense;
:func:`procrustes_distance_from_moments` / :class:`StreamingOPD` use only the accumulated centred
cross matrix ``Xc^T Yc [D1, D2]`` and the centred sums of squares ``||Xc||_F^2``, ``||Yc||_F^2``
(:class:`~tasks.representation.moments.CrossMoments`, centring via running means), so memory is
``O(D1 D2)`` independent of ``N``; one accumulator built with ``auto=True`` serves both CKA and OPD in a
single pass.  The SVD of the ``D1 x D2`` matrix costs ``O(D1 D2 min(D1, D2))``.
"""

from __future__ import annotations

import numpy as np

from tasks.representation.moments import (
    DEFAULT_CHUNK_ROWS,
    Array,
    CrossMoments,
    RepresentationError,
    check_pair,
)

__all__ = [
    "StreamingOPD",
    "orthogonal_procrustes_distance",
    "procrustes_distance_from_moments",
    "streaming_procrustes_distance",
]


def _opd(cross: np.ndarray, ssx: float, ssy: float) -> float:
    """``2 - 2 ||cross||_* / sqrt(ssx ssy)`` clipped to [0, 2]; ``cross = Xc^T Yc``, ``ss* = ||.c||_F^2``."""
    for side, ss in (("x", ssx), ("y", ssy)):
        if not ss > 0.0:
            raise RepresentationError(f"{side} has zero variance (all rows equal); OPD is undefined")
    nuclear = float(np.linalg.svd(cross, compute_uv=False).sum())
    return float(np.clip(2.0 - 2.0 * nuclear / np.sqrt(ssx * ssy), 0.0, 2.0))


def orthogonal_procrustes_distance(x: Array, y: Array) -> float:
    """OPD of ``x [N, D1]`` and ``y [N, D2]`` (dense, float64), in ``[0, 2]``; see the module docstring.

    Raises :class:`RepresentationError` for an ``N`` mismatch, ``N < 2`` or a constant representation.
    """
    xf, yf = check_pair(x, y)
    if xf.shape[0] < 2:
        raise RepresentationError(f"the Procrustes distance needs at least 2 examples, got {xf.shape[0]}")
    xc, yc = xf - xf.mean(axis=0), yf - yf.mean(axis=0)
    # Normalising first (as in the paper) and computing 2 - 2 ||X^T Y||_* is the same quantity.
    return _opd(xc.T @ yc, float(np.vdot(xc, xc)), float(np.vdot(yc, yc)))


def procrustes_distance_from_moments(m: CrossMoments) -> float:
    """Full-batch OPD from accumulated centred moments (``auto`` either way, ``n >= 2``)."""
    m.require_rows(2)
    return _opd(m.cxy, m.ssx, m.ssy)


class StreamingOPD(CrossMoments):
    """Exact full-batch OPD accumulated over row chunks; memory ``O(D1 D2)`` (no ``D^2`` auto-moments).

    ``acc = StreamingOPD(D1, D2); acc.update(x_chunk, y_chunk) ...; acc.value()``.  Equals
    :func:`orthogonal_procrustes_distance` on the concatenated rows up to float64 rounding.
    """

    def __init__(self, d1: int, d2: int) -> None:
        super().__init__(d1, d2, auto=False)

    def value(self) -> float:
        """OPD of all rows seen so far."""
        return procrustes_distance_from_moments(self)


def streaming_procrustes_distance(x: Array, y: Array, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> float:
    """OPD of ``x [N, D1]``, ``y [N, D2]`` (e.g. float16 memmaps), streamed in row chunks."""
    if len(np.shape(x)) != 2 or len(np.shape(y)) != 2:
        raise RepresentationError(f"representations must be [N, D], got {np.shape(x)} and {np.shape(y)}")
    acc = StreamingOPD(np.shape(x)[1], np.shape(y)[1])
    return acc.update_from(x, y, chunk_rows).value()
