"""Linear probe on frozen (cached) features: a whole hyper-parameter sweep trained as one batch of heads.

Protocol (the standard frozen-feature linear evaluation):

1. **Split.**  A validation split is carved from TRAIN, stratified per class and seeded
   (:func:`stratified_split`): class ``c`` with ``n_c`` rows gives ``round(val_fraction * n_c)`` of them
   (at most ``n_c - 1``) to validation, the rest are the *fit* rows.  TEST is only validated up
   front (shape, label range); its features are read in step 4.
2. **Standardise.**  Per-feature mean/std (float64 accumulation) are computed on the rows being fitted
   -- the fit rows during the sweep, all train rows in the refit -- and applied to every split that
   model sees.  Constant features get std 1.  Everything else is float32.
3. **Sweep.**  One linear head per hyper-parameter setting, all trained *together*: weights and biases
   of the ``H`` heads live in one tensor ``[H, D + 1, C]`` (bias as the last row), and one matrix
   product over the features serves every head.  Head ``h`` minimises

       mean_i CE(x_i W_h + b_h, y_i) + 0.5 * wd_h * ||W_h||^2        (bias not regularised),

   i.e. scikit-learn's ``LogisticRegression(C=1 / (wd_h * n_fit))`` objective divided by ``C * n_fit``.
   Optimisers (``ProbeConfig.optimizer``):

   * ``"lbfgs"`` (what ``"auto"`` picks when the train features fit in ``max_memory_gb`` as float32):
     full-batch L-BFGS batched over heads.  Each head has its own curvature pairs, Armijo backtracking
     step and stopping test (``max |grad| <= tol``, a failed line search, or ``max_iter``); finished
     heads drop out of the shared matrix product.  The initial inverse Hessian is preconditioned with
     the feature covariance (``(Sigma + C * wd_h)^-1``, eigen-decomposed once).  The objective is
     strictly convex, so its optimum has no learning rate: ``lrs`` is ignored, the grid is the decays.
   * ``"adam"``: mini-batch Adam on the same objective (L2 term in the loss, not decoupled), per-head
     learning rates (grid = ``weight_decays x lrs``), cosine decay over ``epochs``; features are
     streamed from the float16 memmap ``chunk_rows`` rows at a time (bounded memory).

4. **Select, refit, test.**  The head with the best validation top-1 wins (ties: larger weight decay,
   then smaller learning rate).  Its setting is refit on all train rows (fit + val; L-BFGS warm-starts
   from the selected head, Adam retrains from zero) and only that model is evaluated on TEST (top-1 /
   top-5 in percent).  On CPU the result is deterministic for a fixed seed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
import torch

from core.errors import ConfigError, DatasetError
from tasks.probe_optim import BatchedLBFGS, FeatureSource, fit_adam

DEFAULT_WEIGHT_DECAYS: tuple[float, ...] = tuple(float(f"{x:.3g}") for x in np.logspace(-6, -1, 8))
CPU = torch.device("cpu")
Tensor = torch.Tensor


class FeaturesLike(Protocol):
    """Anything with ``features [N, D]`` (any float dtype, e.g. a float16 memmap) and ``labels [N]``."""

    @property
    def features(self) -> np.ndarray: ...

    @property
    def labels(self) -> np.ndarray: ...


Split = FeaturesLike | tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class ProbeConfig:
    """Hyper-parameters of :func:`fit_linear_probe` (see the module docstring for the protocol).

    Attributes:
        val_fraction: share of each TRAIN class held out for selection, in (0, 1).
        weight_decays: L2 strengths swept (one head each; times ``lrs`` for Adam).
        lrs: Adam learning rates swept; ignored by L-BFGS.
        epochs, batch_size: Adam's schedule (cosine decay to zero over all epochs).
        optimizer: ``"lbfgs"``, ``"adam"`` or ``"auto"`` (L-BFGS if it fits in ``max_memory_gb``).
        max_iter: L-BFGS iterations per head, sweep and refit each.
        tol: L-BFGS stops a head once ``max |grad| <= tol``.
        history: L-BFGS curvature pairs kept.
        seed: seeds the validation split and Adam's shuffling.
        max_memory_gb: memory budget of the in-memory (L-BFGS) path.
        chunk_rows: rows read from the feature file at a time.
    """

    val_fraction: float = 0.1
    weight_decays: tuple[float, ...] = DEFAULT_WEIGHT_DECAYS
    lrs: tuple[float, ...] = (1e-3, 1e-2)
    epochs: int = 30
    batch_size: int = 1024
    optimizer: Literal["auto", "lbfgs", "adam"] = "auto"
    max_iter: int = 100
    tol: float = 1e-3
    history: int = 10
    seed: int = 0
    max_memory_gb: float = 2.0
    chunk_rows: int = 32768

    def __post_init__(self) -> None:
        grids = (self.weight_decays, self.lrs)
        checks = [
            (0.0 < self.val_fraction < 1.0, "val_fraction must be in (0, 1)"),
            (all(len(g) > 0 and len(set(g)) == len(g) for g in grids), "weight_decays, lrs: distinct, >= 1"),
            (all(0 <= w < math.inf for w in self.weight_decays) and min(self.lrs) > 0, "wd >= 0, lr > 0"),
            (self.optimizer in ("auto", "lbfgs", "adam"), "optimizer must be 'auto', 'lbfgs' or 'adam'"),
            (min(self.epochs, self.batch_size, self.max_iter, self.history, self.chunk_rows) >= 1,
             "epochs, batch_size, max_iter, history and chunk_rows must be >= 1"),
            (self.tol > 0 and self.max_memory_gb > 0, "tol and max_memory_gb must be > 0"),
        ]  # fmt: skip
        for ok, msg in checks:
            if not ok:
                raise ConfigError(f"ProbeConfig: {msg}")


@dataclass(frozen=True, eq=False)
class LinearHead:
    """The refit classifier: ``logits = ((features - mean) / std) @ weight + bias`` (float32)."""

    weight: np.ndarray  # [D, C]
    bias: np.ndarray  # [C]
    mean: np.ndarray  # [D]
    std: np.ndarray  # [D]

    def logits(self, features: np.ndarray) -> np.ndarray:
        """Class scores ``[N, C]`` of raw (unstandardised) ``features [N, D]``."""
        x = (np.asarray(features, dtype=np.float32) - self.mean) / self.std
        return np.asarray(x @ self.weight + self.bias, dtype=np.float32)


@dataclass(frozen=True, eq=False)
class ProbeResult:
    """Outcome of :func:`fit_linear_probe`.

    ``top1``/``top5``: TEST accuracy (%) of the refit head.  ``selected``: its hyper-parameters
    (``weight_decay``, plus ``lr`` for Adam).  ``val_top1``: per swept head, its hyper-parameters and
    validation top-1 (%).  ``objective``: the refit head's training objective.  ``n_train = n_fit + n_val``.
    """

    top1: float
    top5: float
    selected: dict[str, float]
    val_top1: list[dict[str, float]]
    n_train: int
    n_fit: int
    n_val: int
    n_test: int
    seconds: float
    optimizer: str
    objective: float
    head: LinearHead = field(repr=False)


def _rank_of_label(logits: Tensor, labels: Tensor) -> Tensor:
    """Rank of the true class in ``logits [N, ..., C]``: classes scoring higher, ties to lower index."""
    y = labels.view((labels.shape[0],) + (1,) * (logits.ndim - 1))
    true = logits.gather(-1, y.expand(*logits.shape[:-1], 1))
    classes = torch.arange(logits.shape[-1], device=logits.device)
    return ((logits > true) | ((logits == true) & (classes < y))).sum(-1)


def topk_accuracy(
    logits: Tensor | np.ndarray, labels: Tensor | np.ndarray, ks: Sequence[int] = (1, 5)
) -> dict[int, float]:
    """Top-k accuracy in percent for each ``k`` in ``ks`` (keyed by the requested ``k``).

    A row is correct for ``k`` when its label is among the first ``min(k, C)`` classes of a stable
    descending sort of its logits (ties go to the lower class index, so top-1 agrees with argmax).
    """
    lg, y = torch.as_tensor(logits), torch.as_tensor(labels).long()
    if lg.ndim != 2 or y.shape != (lg.shape[0],) or lg.shape[0] == 0:
        raise ValueError(f"expected logits [N, C] and labels [N] with N > 0, got {lg.shape}, {y.shape}")
    rank = _rank_of_label(lg, y.to(lg.device))
    return {k: 100.0 * float((rank < min(k, lg.shape[1])).double().mean()) for k in ks}


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted, disjoint ``(fit_rows, val_rows)`` covering ``range(len(labels))``.

    A class with ``n_c`` rows gives ``min(floor(val_fraction * n_c + 0.5), n_c - 1)`` of them, drawn by
    a permutation from ``numpy.random.default_rng(seed)``, to validation.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    order = np.argsort(labels, kind="stable")
    _, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    val = [np.empty(0, dtype=np.int64)]
    for start, count in zip(starts, counts, strict=True):
        k = min(math.floor(val_fraction * count + 0.5), int(count) - 1)
        if k > 0:
            val.append(rng.permutation(order[start : start + count])[:k])
    val_rows = np.sort(np.concatenate(val)).astype(np.int64)
    keep = np.ones(labels.shape[0], dtype=bool)
    keep[val_rows] = False
    return np.flatnonzero(keep).astype(np.int64), val_rows


def _evaluate(src: FeatureSource, rows: np.ndarray, theta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-head ``(top-1 correct, top-5 correct, summed NLL)`` over ``rows``, streamed."""
    h, d1, c = theta.shape
    top1 = torch.zeros(h, dtype=torch.int64, device=src.device)
    top5, nll = top1.clone(), torch.zeros(h, dtype=torch.float64, device=src.device)
    for x, y in src.chunks(rows):
        logits = (x @ theta.transpose(0, 1).reshape(d1, h * c)).view(-1, h, c)
        rank = _rank_of_label(logits, y)
        top1 += (rank < 1).sum(0)
        top5 += (rank < min(5, c)).sum(0)
        logp = torch.log_softmax(logits, dim=2).gather(2, y.view(-1, 1, 1).expand(-1, h, 1))
        nll -= logp.squeeze(2).sum(0, dtype=torch.float64)
    return top1, top5, nll


def _unpack(split: Split, name: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = split if isinstance(split, tuple) else (split.features, split.labels)
    y = np.asarray(ys)
    ok = getattr(xs, "ndim", 0) == 2 and y.shape == (xs.shape[0],) and y.size > 0
    if not ok or not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= num_classes:
        got = f"{getattr(xs, 'shape', None)}, {y.dtype} {y.shape}"
        raise DatasetError(
            f"{name}: need features [N>0, D] and integer labels [N] in [0, {num_classes}); got {got}"
        )
    return xs, y.astype(np.int64)


def fit_linear_probe(
    train: Split,
    test: Split,
    num_classes: int,
    cfg: ProbeConfig | None = None,
    device: torch.device | str = CPU,
) -> ProbeResult:
    """Run the protocol of the module docstring: sweep on TRAIN's fit rows, select on its validation
    rows, refit on all of TRAIN, report top-1/top-5 (%) on TEST.

    ``train``/``test`` are :class:`FeaturesLike` (e.g. a ``FeatureSet``) or ``(features, labels)``;
    features may be float16 memmaps.  Raises :class:`DatasetError` for malformed inputs or non-finite
    training features and :class:`ConfigError` for a bad config or an empty validation split.
    """
    start = time.perf_counter()
    cfg, device = cfg or ProbeConfig(), torch.device(device)
    if num_classes < 2:
        raise ConfigError(f"num_classes must be >= 2, got {num_classes}")
    xtr, ytr = _unpack(train, "train", num_classes)
    xte, yte = _unpack(test, "test", num_classes)
    if xte.shape[1] != xtr.shape[1]:
        raise DatasetError(f"train features have D={xtr.shape[1]} but test features D={xte.shape[1]}")
    fit_rows, val_rows = stratified_split(ytr, cfg.val_fraction, cfg.seed)
    if len(val_rows) == 0:
        raise ConfigError("validation split is empty: need classes with >= 2 rows or a larger val_fraction")
    (n, d), all_rows = xtr.shape, np.arange(xtr.shape[0], dtype=np.int64)
    opt = cfg.optimizer
    if opt == "auto":
        need = 4 * n * (d + 1 + 3 * len(cfg.weight_decays) * num_classes)
        opt = "lbfgs" if need <= cfg.max_memory_gb * 2**30 else "adam"
    grid = [(w, lr) for w in cfg.weight_decays for lr in (cfg.lrs if opt == "adam" else (0.0,))]
    wd = torch.tensor([w for w, _ in grid], device=device)
    lr = torch.tensor([lr for _, lr in grid], dtype=torch.float64, device=device)

    with torch.no_grad():
        src = FeatureSource.fitted_on(xtr, ytr, fit_rows, cfg, device)
        if opt == "lbfgs":
            sweep = BatchedLBFGS(*src.load(fit_rows), wd, cfg, None)
            theta = sweep.run(torch.zeros(len(grid), d + 1, num_classes, device=device))[0]
        else:
            theta = fit_adam(src, fit_rows, wd, lr, num_classes, cfg)
        val_correct = _evaluate(src, val_rows, theta)[0].tolist()
        best = max(range(len(grid)), key=lambda i: (val_correct[i], grid[i][0], -grid[i][1]))

        src, wd1 = FeatureSource.fitted_on(xtr, ytr, all_rows, cfg, device), wd[best : best + 1]
        if opt == "lbfgs":
            refit = BatchedLBFGS(*src.load(all_rows), wd1, cfg, sweep.eig)
            theta, obj = refit.run(theta[best : best + 1].clone())
            objective = float(obj[0])
        else:
            theta = fit_adam(src, all_rows, wd1, lr[best : best + 1], num_classes, cfg)
            nll = float(_evaluate(src, all_rows, theta)[2][0])
            objective = nll / n + 0.5 * float(wd1[0]) * float(theta[0, :-1].double().square().sum())
        if not math.isfinite(objective):
            raise ConfigError(f"linear probe diverged (objective {objective}); lower the learning rates")
        test_src = FeatureSource(xte, yte, cfg.chunk_rows, device, src.mean, src.std)
        top1, top5, _ = _evaluate(test_src, np.arange(len(yte)), theta)

    hp = [{"weight_decay": w} | ({"lr": r} if opt == "adam" else {}) for w, r in grid]
    head = [t.cpu().numpy().copy() for t in (theta[0, :-1], theta[0, -1], src.mean, src.std)]
    return ProbeResult(
        top1=100.0 * int(top1[0]) / len(yte),
        top5=100.0 * int(top5[0]) / len(yte),
        selected=hp[best],
        val_top1=[h | {"val_top1": 100.0 * v / len(val_rows)} for h, v in zip(hp, val_correct, strict=True)],
        n_train=n,
        n_fit=len(fit_rows),
        n_val=len(val_rows),
        n_test=len(yte),
        seconds=time.perf_counter() - start,
        optimizer=opt,
        objective=objective,
        head=LinearHead(*head),
    )
