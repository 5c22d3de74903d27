"""LARS against a transcription of its update rule; bias/norm parameter groups; the optimiser factory."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from core.errors import ConfigError
from pretrain.config import OptimConfig
from pretrain.methods.base import SSLMethod, split_bias_and_norm
from pretrain.optim import LARS, build_optimizer
from pretrain.recipes import resolve_recipe
from pretrain.trainer import Trainer, lr_at
from tests.pretrain.test_methods import COMMON, TINY
from tests.pretrain.test_trainer import make_trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def reference_lars(
    w: np.ndarray,
    g: np.ndarray,
    buf: np.ndarray | None,
    *,
    lr: float,
    momentum: float,
    wd: float,
    eta: float,
    exclude: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """One LARS step written from the formula: ``d = g + wd w``; unless excluded,
    ``d *= eta ||w|| / ||d||`` (1 if a norm is 0); ``buf = d`` then ``m buf + d``; ``w - lr buf``."""
    d = g + wd * w
    if not exclude:
        w_norm, d_norm = np.sqrt((w * w).sum()), np.sqrt((d * d).sum())
        d = d * (eta * w_norm / d_norm if w_norm > 0 and d_norm > 0 else 1.0)
    buf = d.copy() if buf is None else momentum * buf + d
    return w - lr * buf, buf


class Tiny(nn.Module):
    """A conv weight + conv bias, BatchNorm weight/bias, and a linear layer with a bias."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=True)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 3 * 3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn(torch.relu(self.conv(x))).flatten(1))


def test_split_bias_and_norm_groups() -> None:
    model = Tiny()
    groups = split_bias_and_norm([{"params": list(model.parameters()), "fixed_lr": True}])
    assert [len(g["params"]) for g in groups] == [2, 4]
    weights, rest = groups
    assert {id(p) for p in weights["params"]} == {id(model.conv.weight), id(model.fc.weight)}
    assert {id(p) for p in rest["params"]} == {
        id(model.conv.bias),
        id(model.bn.weight),
        id(model.bn.bias),
        id(model.fc.bias),
    }
    assert "weight_decay" not in weights and not weights.get("lars_exclude", False)
    assert rest["weight_decay"] == 0.0 and rest["lars_exclude"] is True
    assert weights["fixed_lr"] and rest["fixed_lr"]  # the method's flags reach both parts
    assert "lr_scale" not in weights and rest["lr_scale"] == 1.0
    scaled = split_bias_and_norm([{"params": list(model.parameters()), "lr_scale": 2.0}], lr_scale=0.024)
    assert scaled[0]["lr_scale"] == 2.0 and scaled[1]["lr_scale"] == pytest.approx(0.048)
    # a group of only weights (or only biases) is not followed by an empty part
    assert len(split_bias_and_norm([{"params": [model.fc.weight]}])) == 1


@pytest.mark.parametrize("momentum", [0.9, 0.0])
def test_lars_matches_the_update_formula_over_three_steps(momentum: float) -> None:
    torch.manual_seed(0)
    model = Tiny().double()
    wd, eta = 0.05, 0.02  # large enough that the decay term and the trust ratio both matter
    groups = split_bias_and_norm([{"params": list(model.parameters())}])
    opt = LARS(groups, lr=0.5, momentum=momentum, weight_decay=wd, eta=eta)
    excluded = {id(p) for p in groups[1]["params"]}
    bufs: dict[str, np.ndarray | None] = {n: None for n, _ in model.named_parameters()}
    x = torch.randn(6, 3, 5, 5, dtype=torch.float64)
    for step, lr in enumerate([0.5, 0.3, 0.1]):  # the lr changes between steps, as under a schedule
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad()
        model(x * (step + 1)).pow(2).sum().backward()
        before = {n: (p.detach().numpy().copy(), p.grad.numpy().copy()) for n, p in model.named_parameters()}  # type: ignore[union-attr]
        opt.step()
        for name, p in model.named_parameters():
            w, g = before[name]
            exclude = id(p) in excluded
            want, bufs[name] = reference_lars(
                w,
                g,
                bufs[name],
                lr=lr,
                momentum=momentum,
                wd=0.0 if exclude else wd,
                eta=eta,
                exclude=exclude,
            )
            np.testing.assert_allclose(p.detach().numpy(), want, rtol=1e-12, atol=1e-15, err_msg=name)
            assert not np.allclose(p.detach().numpy(), w), name  # every parameter moved


def test_lars_trust_ratio_on_known_numbers() -> None:
    w = nn.Parameter(torch.tensor([[3.0, 4.0]], dtype=torch.float64))  # ||w|| = 5
    w.grad = torch.tensor([[0.3, -0.4]], dtype=torch.float64)
    LARS([w], lr=1.0, momentum=0.9, weight_decay=0.1, eta=0.01).step()
    d = np.array([0.6, 0.0])  # g + 0.1 w, ||d|| = 0.6; trust = 0.01 * 5 / 0.6
    np.testing.assert_allclose(w.detach().numpy()[0], [3.0, 4.0] - 0.01 * 5 / 0.6 * d, rtol=1e-14)


def test_lars_edge_cases() -> None:
    # zero weight: trust ratio 1, the plain (decayed) gradient step
    w = nn.Parameter(torch.zeros(2, 2, dtype=torch.float64))
    w.grad = torch.full((2, 2), 2.0, dtype=torch.float64)
    LARS([w], lr=0.1, weight_decay=0.5).step()
    np.testing.assert_allclose(w.detach().numpy(), -0.2 * np.ones((2, 2)))
    # zero gradient and no decay: d = 0, trust ratio 1, no update and no nan
    w = nn.Parameter(torch.ones(2, 2, dtype=torch.float64))
    w.grad = torch.zeros(2, 2, dtype=torch.float64)
    opt = LARS([w], lr=0.1, weight_decay=0.0)
    opt.step()
    opt.step()
    assert torch.equal(w.detach(), torch.ones(2, 2, dtype=torch.float64))
    # zero gradient with decay: d = wd w, trust = eta / wd, so the step is w -= lr * eta * w
    w = nn.Parameter(torch.full((3, 1), 2.0, dtype=torch.float64))
    w.grad = torch.zeros(3, 1, dtype=torch.float64)
    LARS([w], lr=0.5, weight_decay=1e-6, eta=0.001).step()
    np.testing.assert_allclose(w.detach().numpy(), 2.0 * (1 - 0.5 * 0.001) * np.ones((3, 1)), rtol=1e-12)
    # no gradient: skipped, no state
    w = nn.Parameter(torch.ones(2, 2))
    opt = LARS([w], lr=0.1, weight_decay=0.1)
    opt.step()
    assert torch.equal(w.detach(), torch.ones(2, 2)) and len(opt.state) == 0
    with pytest.raises(ValueError, match="eta"):
        LARS([w], lr=0.1, eta=0.0)


def test_lars_state_dict_round_trip_continues_identically() -> None:
    torch.manual_seed(1)
    a, b = Tiny(), Tiny()
    b.load_state_dict(a.state_dict())
    x = torch.randn(4, 3, 5, 5)
    opt_a = LARS(split_bias_and_norm([{"params": list(a.parameters())}]), lr=0.1, weight_decay=1e-3)
    for _ in range(2):
        opt_a.zero_grad()
        a(x).sum().backward()
        opt_a.step()
    b.load_state_dict(a.state_dict())
    opt_b = LARS(split_bias_and_norm([{"params": list(b.parameters())}]), lr=0.1, weight_decay=1e-3)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))  # as through a checkpoint file
    for model, opt in ((a, opt_a), (b, opt_b)):
        opt.zero_grad()
        model(x).sum().backward()
        opt.step()
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


class _Method(SSLMethod):
    def __init__(self) -> None:
        super().__init__()
        self.net = Tiny()


def test_optimizer_groups_and_factory() -> None:
    method = _Method()
    assert len(method.optimizer_groups()) == 1
    groups = method.optimizer_groups(exclude_bias_and_norm=True)
    opt = build_optimizer(OptimConfig(name="lars", weight_decay=1e-6, eta=0.002), groups, 0.4)
    assert isinstance(opt, LARS)
    weights, rest = opt.param_groups
    assert (weights["lr"], weights["weight_decay"], weights["eta"], weights["lars_exclude"]) == (
        0.4,
        1e-6,
        0.002,
        False,
    )
    assert (rest["weight_decay"], rest["lars_exclude"]) == (0.0, True)
    assert isinstance(
        build_optimizer(OptimConfig(name="sgd"), method.optimizer_groups(), 0.1), torch.optim.SGD
    )


def test_optim_config_validates() -> None:
    assert resolve_recipe("moco", "smoke", ["optim.name=lars"]).optim.splits_bias_and_norm
    assert not resolve_recipe("moco", "smoke", ["optim.name=sgd"]).optim.splits_bias_and_norm
    with pytest.raises(ConfigError, match="eta"):
        resolve_recipe("moco", "smoke", ["optim.name=lars", "optim.eta=0"])
    with pytest.raises(ConfigError, match="optim.name"):
        resolve_recipe("moco", "smoke", ["optim.name=lamb"])


def test_trainer_builds_lars_with_bias_and_norm_groups(tmp_path: Path) -> None:
    recipe = resolve_recipe(
        "barlow", "smoke", [*COMMON, *TINY["barlow"], "optim.name=lars", "optim.weight_decay=0.01"]
    )
    trainer = make_trainer(recipe, tmp_path)
    assert isinstance(trainer.optimizer, LARS)
    weights, rest = trainer.optimizer.param_groups
    assert all(p.ndim > 1 for p in weights["params"]) and all(p.ndim == 1 for p in rest["params"])
    assert (weights["weight_decay"], weights["lars_exclude"]) == (0.01, False)
    assert (rest["weight_decay"], rest["lars_exclude"]) == (0.0, True)
    trainable = [p for p in trainer.method.parameters() if p.requires_grad]
    assert sorted(id(p) for g in (weights, rest) for p in g["params"]) == sorted(id(p) for p in trainable)
    summary = trainer.fit()
    assert summary.steps == 3 and math.isfinite(summary.final_loss)


# 3 steps per epoch: 2 warm-up steps (lr 0.5, 1 x base), then 3 cosine steps (1, 0.75, 0.25 x base)
SCHEDULE = ["optim.warmup_epochs=0.67", "train.max_steps=5"]


def _run_and_check_lrs(trainer: Trainer, want: Callable[[dict[str, Any], float], float]) -> None:
    """Take every step; after each, every group's lr must be ``want(group, scheduled lr of the step)``."""
    batches = trainer.stream.batches(0)
    seen = []
    while trainer.step < trainer.total_steps:
        step = trainer.step
        trainer.train_step(*next(batches))
        scheduled = lr_at(step, trainer.total_steps, trainer.base_lr, trainer.warmup, "cosine")
        seen.append(scheduled)
        for group in trainer.optimizer.param_groups:
            assert group["lr"] == pytest.approx(want(group, scheduled), rel=1e-12, abs=1e-15)
    assert seen == pytest.approx([x * trainer.base_lr for x in (0.5, 1.0, 1.0, 0.75, 0.25)], rel=1e-12)


def test_barlow_bias_lr_follows_the_schedule_at_its_ratio(tmp_path: Path) -> None:
    flags = ["optim.name=lars", "optim.lr=0.2", "optim.bias_lr_scale=0.024", *SCHEDULE]
    trainer = make_trainer(resolve_recipe("barlow", "smoke", [*COMMON, *TINY["barlow"], *flags]), tmp_path)
    _, rest = trainer.optimizer.param_groups
    assert all(p.ndim == 1 for p in rest["params"]) and rest["lr_scale"] == 0.024

    def want(group: dict[str, Any], scheduled: float) -> float:
        return scheduled * (0.024 if group is rest else 1.0)

    _run_and_check_lrs(trainer, want)


def test_fixed_lr_groups_keep_working_with_bias_lr_scale(tmp_path: Path) -> None:
    flags = ["optim.name=lars", "optim.bias_lr_scale=0.5", "method.fix_pred_lr=true", *SCHEDULE]
    trainer = make_trainer(resolve_recipe("simsiam", "smoke", [*COMMON, *TINY["simsiam"], *flags]), tmp_path)
    groups = trainer.optimizer.param_groups
    predictor = {id(p) for p in trainer.method.predictor.parameters()}  # type: ignore[union-attr]
    assert [bool(g.get("fixed_lr", False)) for g in groups] == [False, False, True, True]
    assert [g.get("lr_scale", 1.0) for g in groups] == [1.0, 0.5, 1.0, 0.5]
    assert {id(p) for g in groups[2:] for p in g["params"]} == predictor

    def want(group: dict[str, Any], scheduled: float) -> float:
        return (trainer.base_lr if group.get("fixed_lr") else scheduled) * group.get("lr_scale", 1.0)

    _run_and_check_lrs(trainer, want)


def test_bias_lr_scale_needs_separate_groups() -> None:
    assert resolve_recipe("barlow", "smoke", ["optim.name=lars", "optim.bias_lr_scale=0.024"])
    with pytest.raises(ConfigError, match="bias_lr_scale needs separate bias/norm groups"):
        resolve_recipe("barlow", "smoke", ["optim.bias_lr_scale=0.024"])  # adamw
    with pytest.raises(ConfigError, match="bias_lr_scale needs"):
        resolve_recipe(
            "barlow",
            "smoke",
            ["optim.name=lars", "optim.exclude_bias_and_norm=false", "optim.bias_lr_scale=0.5"],
        )
    with pytest.raises(ConfigError, match="bias_lr_scale must be positive"):
        resolve_recipe("barlow", "smoke", ["optim.name=lars", "optim.bias_lr_scale=0"])
    with pytest.raises(ValueError, match="bias_lr_scale needs"):
        _Method().optimizer_groups(bias_lr_scale=0.5)
