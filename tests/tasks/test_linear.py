"""Tests of the linear probe (tasks/linear.py): sklearn cross-check, test-split isolation, metrics, split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from core.errors import ConfigError, DatasetError
from tasks.linear import ProbeConfig, ProbeResult, fit_linear_probe, stratified_split, topk_accuracy

N, D, C = 2000, 64, 10

# Cross-check tolerances against scikit-learn (same objective, same standardised features).
ACC_TOL_PP = 1.5  # |test top-1 difference| in percentage points
MIN_AGREEMENT = 0.95  # share of identical test predictions
OBJ_TOL = 1e-4  # |objective difference| (mean cross-entropy + L2; the optimum is about 0.3-1.0)


def mixture(n: int, seed: int, d: int = D, c: int = C) -> tuple[np.ndarray, np.ndarray]:
    """Non-separable Gaussian mixture: class means ~ N(0, 0.35^2) per dimension, unit noise, offset 3."""
    means = np.random.default_rng(123).normal(size=(c, d)) * 0.35
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    return (means[y] + rng.normal(size=(n, d)) * 1.0 + 3.0).astype(np.float32), y


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    return mixture(N, 1), mixture(1000, 2)


def test_matches_sklearn_logistic_regression(data: tuple) -> None:
    (x, y), (xt, yt) = data
    wd = 1e-3
    cfg = ProbeConfig(weight_decays=(wd,), max_iter=500, tol=1e-5)
    res = fit_linear_probe((x, y), (xt, yt), C, cfg)
    assert res.optimizer == "lbfgs" and res.selected == {"weight_decay": wd}

    mu, sd = x.astype(np.float64).mean(0), x.astype(np.float64).std(0)
    xs, xts = (x - mu) / sd, (xt - mu) / sd
    with threadpool_limits(1):  # tiny problem: BLAS threads only add contention
        clf = LogisticRegression(C=1.0 / (wd * N), solver="lbfgs", tol=1e-8, max_iter=10_000).fit(xs, y)
    sk_pred = clf.predict(xts)
    sk_top1 = 100.0 * float((sk_pred == yt).mean())
    proba = clf.predict_proba(xs)
    sk_obj = -np.log(proba[np.arange(N), y]).mean() + 0.5 * wd * float((clf.coef_**2).sum())

    ours_pred = res.head.logits(xt).argmax(1)
    assert abs(res.top1 - sk_top1) <= ACC_TOL_PP
    assert (ours_pred == sk_pred).mean() >= MIN_AGREEMENT
    assert abs(res.objective - sk_obj) <= OBJ_TOL
    assert res.top1 == pytest.approx(100.0 * float((ours_pred == yt).mean()))
    assert 60.0 < res.top1 < 97.0  # the problem is neither trivial nor hopeless


def test_test_split_never_influences_selection(data: tuple) -> None:
    (x, y), (xt, yt) = data
    cfg = ProbeConfig(max_iter=60)
    a = fit_linear_probe((x, y), (xt, yt), C, cfg)
    rng = np.random.default_rng(7)
    other_test = (
        (rng.normal(size=(333, D)) * 50).astype(np.float32),
        rng.permutation(rng.integers(0, C, 333)),
    )
    b = fit_linear_probe((x, y), other_test, C, cfg)
    c = fit_linear_probe((x, y), (xt, rng.permutation(yt)), C, cfg)
    for other in (b, c):
        assert other.selected == a.selected
        assert other.val_top1 == a.val_top1
        assert other.objective == a.objective
        np.testing.assert_array_equal(other.head.weight, a.head.weight)
    assert b.n_test == 333 and a.top1 != c.top1


def test_sweep_grid_selection_and_counts(data: tuple) -> None:
    (x, y), (xt, yt) = data
    res = fit_linear_probe((x, y), (xt, yt), C, ProbeConfig(max_iter=60))
    assert len(res.val_top1) == 8 and {tuple(h) for h in res.val_top1} == {("weight_decay", "val_top1")}
    best = max(h["val_top1"] for h in res.val_top1)
    ties = [h["weight_decay"] for h in res.val_top1 if h["val_top1"] == best]
    assert res.selected == {"weight_decay": max(ties)}  # ties -> larger weight decay
    assert res.n_train == N and res.n_fit + res.n_val == N and res.n_test == 1000
    assert res.n_val == sum(min(int(np.floor(0.1 * k + 0.5)), k - 1) for k in np.bincount(y))
    assert 0.0 <= res.top1 <= res.top5 <= 100.0 and res.seconds > 0


def test_topk_matches_bruteforce_reference() -> None:
    rng = np.random.default_rng(0)
    logits = rng.integers(-3, 4, size=(500, 7)).astype(np.float32)  # many ties
    labels = rng.integers(0, 7, 500)
    order = np.argsort(-logits, axis=1, kind="stable")  # ties -> lower class index first
    got = topk_accuracy(torch.from_numpy(logits), torch.from_numpy(labels), ks=(1, 2, 5, 7))
    for k in (1, 2, 5, 7):
        ref = 100.0 * np.mean([labels[i] in order[i, :k] for i in range(500)])
        assert got[k] == pytest.approx(ref)
    assert got[1] == pytest.approx(100.0 * float((logits.argmax(1) == labels).mean()))


def test_topk_caps_k_at_num_classes() -> None:
    logits, labels = np.array([[0.1, 0.9, 0.0], [3.0, 2.0, 1.0]]), np.array([2, 2])
    assert topk_accuracy(logits, labels, ks=(1, 5)) == {1: 0.0, 5: 100.0}
    with pytest.raises(ValueError):
        topk_accuracy(logits[0], labels)


def test_stratified_split_properties() -> None:
    labels = np.repeat(np.arange(6), [100, 37, 5, 1, 2, 14])
    labels = np.random.default_rng(3).permutation(labels)
    fit, val = stratified_split(labels, 0.1, seed=0)
    assert len(np.intersect1d(fit, val)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([fit, val])), np.arange(len(labels)))
    assert (np.diff(fit) > 0).all() and (np.diff(val) > 0).all()
    assert np.bincount(labels[val], minlength=6).tolist() == [10, 4, 1, 0, 0, 1]  # round(0.1 n_c), <= n_c - 1
    assert np.bincount(labels[fit], minlength=6).min() >= 1  # every class keeps a fit row
    np.testing.assert_array_equal(val, stratified_split(labels, 0.1, seed=0)[1])
    assert not np.array_equal(val, stratified_split(labels, 0.1, seed=1)[1])


def _same(a: ProbeResult, b: ProbeResult) -> None:
    assert (a.top1, a.top5, a.selected, a.val_top1, a.objective) == (
        b.top1,
        b.top5,
        b.selected,
        b.val_top1,
        b.objective,
    )
    np.testing.assert_array_equal(a.head.weight, b.head.weight)
    np.testing.assert_array_equal(a.head.bias, b.head.bias)


def test_deterministic_lbfgs_and_adam(data: tuple) -> None:
    (x, y), (xt, yt) = data
    for cfg in (
        ProbeConfig(max_iter=40),
        ProbeConfig(optimizer="adam", weight_decays=(1e-4, 1e-2), lrs=(1e-3, 1e-2), epochs=3, batch_size=256),
    ):
        _same(fit_linear_probe((x, y), (xt, yt), C, cfg), fit_linear_probe((x, y), (xt, yt), C, cfg))
    seeded = ProbeConfig(max_iter=40, seed=5)
    assert fit_linear_probe((x, y), (xt, yt), C, seeded).n_val == fit_linear_probe((x, y), (xt, yt), C).n_val


def test_streamed_chunks_and_fp16_memmap_match(data: tuple, tmp_path: Path) -> None:
    (x, y), (xt, yt) = data
    path = tmp_path / "train.f16"
    x.astype(np.float16).tofile(path)
    mm = np.memmap(path, dtype=np.float16, mode="r", shape=x.shape)
    cfg = ProbeConfig(weight_decays=(1e-2,), tol=1e-5, max_iter=300)
    whole = fit_linear_probe((mm, y), (xt, yt), C, cfg)
    chunked = fit_linear_probe(
        (mm, y), (xt, yt), C, ProbeConfig(weight_decays=(1e-2,), tol=1e-5, max_iter=300, chunk_rows=77)
    )
    assert chunked.objective == pytest.approx(whole.objective, abs=1e-5)
    assert abs(chunked.top1 - whole.top1) <= 0.2


def test_adam_reaches_lbfgs_optimum(data: tuple) -> None:
    (x, y), (xt, yt) = data
    exact = fit_linear_probe((x, y), (xt, yt), C, ProbeConfig(weight_decays=(1e-2,), tol=1e-5, max_iter=300))
    cfg = ProbeConfig(
        optimizer="adam", weight_decays=(1e-2,), lrs=(2e-2,), epochs=40, batch_size=200, chunk_rows=700
    )
    adam = fit_linear_probe((x, y), (xt, yt), C, cfg)
    assert adam.optimizer == "adam" and adam.selected == {"weight_decay": 1e-2, "lr": 2e-2}
    assert exact.objective <= adam.objective <= exact.objective + 5e-3
    assert abs(adam.top1 - exact.top1) <= 2.0


def test_unregularised_head_and_constant_features(data: tuple) -> None:
    (x, y), (xt, yt) = data
    x, xt = x.copy(), xt.copy()
    x[:, 3] = xt[:, 3] = 2.5  # a constant feature: std 1, zero eigenvalue in the preconditioner
    res = fit_linear_probe(
        (x, y), (xt, yt), C, ProbeConfig(weight_decays=(0.0, 1e-2), history=1, max_iter=50)
    )
    assert all(np.isfinite(h["val_top1"]) for h in res.val_top1) and np.isfinite(res.objective)
    assert np.isfinite(res.head.weight).all() and res.top1 > 60.0


def test_auto_falls_back_to_streaming_adam_when_memory_is_short(data: tuple) -> None:
    (x, y), (xt, yt) = data
    cfg = ProbeConfig(max_memory_gb=1e-4, epochs=1, weight_decays=(1e-3, 1e-2), lrs=(1e-2,))
    res = fit_linear_probe((x, y), (xt, yt), C, cfg)
    assert res.optimizer == "adam" and len(res.val_top1) == 2 and "lr" in res.selected


def test_bad_inputs_raise_bench_errors(data: tuple) -> None:
    (x, y), (xt, yt) = data
    with pytest.raises(DatasetError):
        fit_linear_probe((x, y), (xt[:, :10], yt), C)
    with pytest.raises(DatasetError):
        fit_linear_probe((x, y + 1), (xt, yt), C)
    with pytest.raises(DatasetError):
        fit_linear_probe((x, y[:-1]), (xt, yt), C)
    bad = x.copy()
    bad[5, 3] = np.nan
    with pytest.raises(DatasetError):
        fit_linear_probe((bad, y), (xt, yt), C, ProbeConfig(max_iter=5))
    with pytest.raises(ConfigError):
        ProbeConfig(val_fraction=0.0)
    with pytest.raises(ConfigError):
        ProbeConfig(weight_decays=())
    with pytest.raises(ConfigError):
        fit_linear_probe((x[:5], np.arange(5)), (xt, yt), C)  # one row per class: empty validation split
