import math

import pytest

from leaderboard.stats import betainc, paired_delta, std, t_quantile

scipy_stats = pytest.importorskip("scipy.stats")
scipy_special = pytest.importorskip("scipy.special")


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 9, 29, 120])
@pytest.mark.parametrize("p", [0.6, 0.9, 0.975, 0.995, 0.01])
def test_t_quantile_matches_scipy(df: int, p: float) -> None:
    assert t_quantile(p, df) == pytest.approx(scipy_stats.t.ppf(p, df), rel=1e-9, abs=1e-9)


CASES = [(0.5, 0.5, 0.3), (2.0, 3.0, 0.7), (10.0, 0.5, 0.99), (1.5, 0.5, 0.01)]


@pytest.mark.parametrize(("a", "b", "x"), CASES)
def test_betainc_matches_scipy(a: float, b: float, x: float) -> None:
    assert betainc(a, b, x) == pytest.approx(scipy_special.betainc(a, b, x), rel=1e-10, abs=1e-14)


def test_paired_delta_by_hand() -> None:
    """diffs 2, 3, 1: mean 2, sd 1, t(0.975, 2) = 4.302653 (printed tables): 2 +- 4.302653 / sqrt(3)."""
    d = paired_delta({0: 52.0, 1: 54.0, 2: 53.0, 7: 99.0}, {0: 50.0, 1: 51.0, 2: 52.0, 5: 1.0})
    assert d is not None and d.seeds == (0, 1, 2) and d.n == 3  # only the paired seeds count
    half = 4.302653 / math.sqrt(3)
    assert d.mean == pytest.approx(2.0)
    assert d.lo == pytest.approx(2.0 - half, abs=1e-5) and d.hi == pytest.approx(2.0 + half, abs=1e-5)
    assert d.within_noise is True and d.marker == "≈"
    tight = paired_delta({0: 52.0, 1: 53.1, 2: 53.9}, {0: 50.0, 1: 51.0, 2: 52.0})  # diffs 2.0, 2.1, 1.9
    assert tight is not None and tight.within_noise is False and tight.marker == ""
    assert tight.lo == pytest.approx(2.0 - 4.302653 * 0.1 / math.sqrt(3), abs=1e-5)


def test_paired_delta_agrees_with_the_paired_t_test() -> None:
    rows = [
        ({0: 1.0, 1: 2.0, 2: 3.5}, {0: 0.5, 1: 1.0, 2: 1.0}),
        ({0: 10.0, 1: 10.2, 2: 9.9, 3: 10.4}, {0: 9.0, 1: 9.1, 2: 9.0, 3: 9.2}),
        ({0: 5.0, 1: 4.0}, {0: 4.0, 1: 4.5}),
    ]
    for row, base in rows:
        d = paired_delta(row, base)
        seeds = sorted(set(row) & set(base))
        p = scipy_stats.ttest_rel([row[s] for s in seeds], [base[s] for s in seeds]).pvalue
        assert d is not None and d.within_noise is bool(p >= 0.05)


def test_single_pair_is_untested_and_no_pair_is_none() -> None:
    d = paired_delta({0: 3.0, 1: 4.0}, {1: 1.0})
    assert d is not None and d.n == 1 and d.mean == 3.0 and d.within_noise is None and d.marker == "?"
    assert paired_delta({0: 1.0}, {1: 1.0}) is None
    assert std([5.0]) == 0.0 and std([1.0, 3.0]) == pytest.approx(math.sqrt(2))
