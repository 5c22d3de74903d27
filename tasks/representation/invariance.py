"""Invariance and diversity of a feature embedding under augmentation.

Mo, Sun, Li 2023, "Exploring Data Augmentations on Self-/Semi-/Fully-Supervised Pre-trained Models"
(arXiv 2310.18850) compare augmentations by the *invariance* and the *diversity* of the learned
embedding.  The paper's text is terse about the exact formulas, so the definitions below are ours,
stated precisely here; results computed with them are comparable with each other, not necessarily
digit-for-digit with the paper's.

Inputs (one chunk of anchors; feed any number of chunks to :class:`InvarianceDiversity`)::

    anchors [A, D]     embedding of each un-augmented (anchor) image a
    views   [A, K, D]  embeddings of K augmented views of the same anchor images (row a = anchor a)

With ``cos(u, v) = u.v / (max(|u|, eps) max(|v|, eps))`` (``eps = 1e-12``; a zero vector has cosine 0
with everything, as in :func:`torch.nn.functional.cosine_similarity`)::

    invariance = 1/(A K) sum_a sum_k cos(views[a, k], anchors[a])                    in [-1, 1]
    diversity  = 1 - 1/A sum_a [ 2/(K (K - 1)) sum_{k < l} cos(views[a, k], views[a, l]) ]   in [0, K/(K-1)]

i.e. invariance is the mean cosine similarity between a view and its own anchor (1 = the embedding
ignores the augmentation), and diversity is one minus the mean pairwise cosine similarity between
distinct views of the same anchor, averaged first over the ``K (K - 1) / 2`` pairs of each anchor and then
over anchors (0 = all views of an image embed in the same direction).  Diversity needs ``K >= 2``.

Computation: float64 numpy; with unit-normalised views ``u_k`` the pair sum is
``sum_{k<l} u_k.u_l = (|sum_k u_k|^2 - sum_k |u_k|^2) / 2``, so each chunk costs ``O(A K D)`` and the
accumulator keeps only four numbers (streaming over anchors, any chunking gives the same result up to
float64 rounding).
"""

from __future__ import annotations

import numpy as np

from tasks.representation.moments import Array, RepresentationError, as_float64

__all__ = ["EPS", "InvarianceDiversity", "diversity", "invariance"]

EPS = 1e-12
"""Lower bound on a vector's norm when normalising (zero vectors get cosine 0)."""


def _unit(v: np.ndarray) -> np.ndarray:
    """Rows of ``v`` (last axis) divided by ``max(norm, EPS)``."""
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), EPS)


class InvarianceDiversity:
    """Streaming accumulator of :func:`invariance` and :func:`diversity` over chunks of anchors.

    ``update(anchors [A, D], views [A, K, D])`` per chunk (``A`` may vary; ``K`` and ``D`` must stay the
    same across chunks), then ``invariance()`` / ``diversity()``.  ``K = 1`` is accepted for invariance
    alone; :meth:`diversity` then raises.
    """

    def __init__(self) -> None:
        self.k: int | None = None
        self.d: int | None = None
        self.anchors = 0
        self.sum_cos_anchor = 0.0  # sum over anchors and views of cos(view, anchor)
        self.sum_mean_pair_cos = 0.0  # sum over anchors of the mean pairwise view cosine (K >= 2)

    def update(self, anchors: Array, views: Array) -> InvarianceDiversity:
        """Add a chunk of ``A`` anchors with their ``K`` views each."""
        a = as_float64(anchors, 2, "anchors")
        v = as_float64(views, 3, "views")
        n, k, d = v.shape
        if a.shape != (n, d):
            raise RepresentationError(
                f"anchors {tuple(a.shape)} do not match views {tuple(v.shape)}: expected anchors [A, D] "
                "and views [A, K, D]"
            )
        if k < 1 or d < 1:
            raise RepresentationError(f"views need K >= 1 views of D >= 1 features, got {tuple(v.shape)}")
        if self.k is not None and (k, d) != (self.k, self.d):
            raise RepresentationError(f"chunk has K={k}, D={d} but earlier chunks had K={self.k}, D={self.d}")
        self.k, self.d = k, d
        if n == 0:
            return self
        ua, uv = _unit(a), _unit(v)
        self.sum_cos_anchor += float(np.einsum("akd,ad->", uv, ua))
        if k >= 2:
            total = uv.sum(axis=1)  # [A, D]
            pair_sums = (np.einsum("ad,ad->a", total, total) - np.einsum("akd,akd->a", uv, uv)) / 2.0
            self.sum_mean_pair_cos += float(pair_sums.sum()) / (k * (k - 1) / 2)
        self.anchors += n
        return self

    def invariance(self) -> float:
        """Mean cosine between each view and its anchor over all anchors and views seen."""
        if self.anchors == 0 or self.k is None:
            raise RepresentationError("invariance needs at least one anchor")
        return self.sum_cos_anchor / (self.anchors * self.k)

    def diversity(self) -> float:
        """One minus the mean (over anchors) of the mean pairwise cosine between distinct views."""
        if self.anchors == 0 or self.k is None:
            raise RepresentationError("diversity needs at least one anchor")
        if self.k < 2:
            raise RepresentationError(f"diversity needs K >= 2 views per anchor, got K={self.k}")
        return 1.0 - self.sum_mean_pair_cos / self.anchors


def invariance(anchors: Array, views: Array) -> float:
    """Invariance of ``views [A, K, D]`` to their ``anchors [A, D]``; see the module docstring."""
    return InvarianceDiversity().update(anchors, views).invariance()


def diversity(views: Array) -> float:
    """Diversity of ``views [A, K, D]`` (``K >= 2``); see the module docstring."""
    v = as_float64(views, 3, "views")
    if v.shape[1] < 2:
        raise RepresentationError(f"diversity needs K >= 2 views per anchor, got K={v.shape[1]}")
    return InvarianceDiversity().update(v[:, 0, :], v).diversity()
