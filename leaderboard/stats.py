"""Seed statistics for leaderboards and the CI gate (rules documented in ``docs/leaderboard.md``).

* A cell's spread is the sample standard deviation over its seeds (``n - 1`` denominator; 0 for one seed).
* :func:`paired_delta`: the difference to the recipe's baseline over **paired seeds** (seeds present in
  both cells; pretraining seed ``s`` of the recipe and of its baseline share data order, label split and
  initialisation draws).  With ``d_s = x_s - b_s`` over the ``n`` common seeds, mean ``d``, sample
  standard deviation ``s_d``, the two-sided 95% Student-t interval is ``d +- t(0.975, n - 1) s_d / sqrt(n)``
  (the paired t-test's interval).  The difference is **within seed noise** when that interval contains 0;
  with a single paired seed there is no spread to test against and the delta is *untested*.
* :func:`t_quantile` is computed here (the core does not depend on scipy): the Student-t CDF through the
  regularised incomplete beta function (continued fraction, modified Lentz), inverted by bisection; the
  tests check it against ``scipy.stats.t.ppf``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: Two-sided confidence level of the paired-seed interval.
LEVEL = 0.95


def mean(values: Sequence[float]) -> float:
    return statistics.fmean(values)


def std(values: Sequence[float]) -> float:
    """Sample standard deviation (``n - 1``); 0.0 for fewer than two values."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz's method)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        for num in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function ``I_x(a, b)`` for ``a, b > 0`` and ``0 <= x <= 1``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """CDF of Student's t distribution with ``df`` degrees of freedom."""
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (bisection on :func:`t_cdf`)."""
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class PairedDelta:
    """``mean`` of ``x_s - b_s`` over the ``n`` paired ``seeds``; ``lo``/``hi``: the 95% paired-t interval
    (``None`` with one pair); ``within_noise``: the interval contains 0 (``None``: untested, one pair)."""

    n: int
    seeds: tuple[int, ...]
    mean: float
    lo: float | None
    hi: float | None

    @property
    def within_noise(self) -> bool | None:
        if self.lo is None or self.hi is None:
            return None
        return self.lo <= 0.0 <= self.hi

    @property
    def marker(self) -> str:
        """``≈`` within seed noise, ``?`` untested (one paired seed), empty: outside seed noise."""
        return {True: "≈", None: "?", False: ""}[self.within_noise]


def paired_delta(
    row: Mapping[int, float], baseline: Mapping[int, float], level: float = LEVEL
) -> PairedDelta | None:
    """Row minus baseline over the seeds both have (``seed -> value``); ``None`` without a common seed."""
    seeds = tuple(sorted(set(row) & set(baseline)))
    if not seeds:
        return None
    diffs = [row[s] - baseline[s] for s in seeds]
    d = mean(diffs)
    if len(diffs) < 2:
        return PairedDelta(1, seeds, d, None, None)
    half = t_quantile(0.5 + level / 2.0, len(diffs) - 1) * std(diffs) / math.sqrt(len(diffs))
    return PairedDelta(len(diffs), seeds, d, d - half, d + half)
