"""Every SSL method through the trainer, the shared mixed-target rule, configs/recipes, and MoCo's mixing.

Per-method numerics live in ``test_moco.py``, ``test_simclr.py``, ``test_byol.py``, ``test_simsiam.py``
and ``test_barlow.py``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.errors import ConfigError
from pretrain.backbones import build_backbone
from pretrain.config import BarlowConfig, BYOLConfig, MocoConfig, SimCLRConfig, SimSiamConfig
from pretrain.methods import ViewBatch, build_method
from pretrain.methods.barlow import BarlowTwins
from pretrain.methods.base import MixInfo, mixed_rows
from pretrain.methods.byol import BYOL
from pretrain.methods.moco import MoCoV2
from pretrain.methods.simclr import SimCLR
from pretrain.methods.simsiam import SimSiam
from pretrain.recipes import RECIPES, resolve_recipe
from pretrain.trainer import lr_at
from tests.pretrain.test_trainer import make_trainer

pytestmark = pytest.mark.usefixtures("one_thread")


COMMON = [
    "augment.views.0.size=16",
    "augment.views.1.size=16",
    "train.batch_size=8",
    "train.epochs=2",
    "train.max_steps=3",
    "train.checkpoint_every=100",
    "train.log_every=1",
    "optim.warmup_epochs=0.5",
]
TINY = {
    "moco": ["method.queue_size=64", "method.hidden_dim=32"],
    "simclr": ["method.hidden_dim=32", "method.dim=16"],
    "byol": ["method.hidden_dim=32", "method.pred_hidden_dim=32", "method.dim=16"],
    "simsiam": ["method.hidden_dim=32", "method.pred_hidden_dim=8", "method.dim=16"],
    "barlow": ["method.hidden_dim=32", "method.dim=32"],
}
CLASSES = {"moco": MoCoV2, "simclr": SimCLR, "byol": BYOL, "simsiam": SimSiam, "barlow": BarlowTwins}


@pytest.mark.parametrize("name", sorted(TINY))
def test_every_method_trains_three_steps(name: str, tmp_path: Path) -> None:
    recipe = resolve_recipe(name, "smoke", [*COMMON, *TINY[name]])
    trainer = make_trainer(recipe, tmp_path)
    assert isinstance(trainer.method, CLASSES[name])
    before = [p.detach().clone() for p in trainer.method.backbone.parameters()]
    summary = trainer.fit()
    assert summary.steps == 3 and math.isfinite(summary.final_loss)
    after = list(trainer.method.backbone.parameters())
    assert all(torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))


@pytest.mark.parametrize("fix", [True, False])
def test_trainer_keeps_the_fixed_lr_group_constant(fix: bool, tmp_path: Path) -> None:
    flags = [f"method.fix_pred_lr={str(fix).lower()}", "optim.warmup_epochs=1"]  # 3 warm-up steps
    recipe = resolve_recipe("simsiam", "smoke", [*COMMON, *TINY["simsiam"], *flags])
    trainer = make_trainer(recipe, tmp_path)
    predictor = {id(p) for p in trainer.method.predictor.parameters()}  # type: ignore[union-attr]
    groups = trainer.optimizer.param_groups
    assert len(groups) == 2 and {id(p) for p in groups[1]["params"]} == predictor
    batches = trainer.stream.batches(0)
    seen = []
    for _ in range(3):
        step = trainer.step
        trainer.train_step(*next(batches))
        scheduled = lr_at(step, trainer.total_steps, trainer.base_lr, trainer.warmup, "cosine")
        seen.append(scheduled)
        assert groups[0]["lr"] == scheduled
        assert groups[1]["lr"] == (trainer.base_lr if fix else scheduled)
    assert len(set(seen)) == 3  # the schedule did move


def _pairs_reference(
    loss: np.ndarray, mix: tuple[int, np.ndarray, np.ndarray] | None, source_view: int
) -> np.ndarray:
    """Rows of the rule written pair by pair: ``loss[a, b]`` = source row a scored against target b."""
    n = loss.shape[0]
    rows = np.zeros(n)
    for i in range(n):
        if mix is None:
            rows[i] = loss[i, i]
            continue
        view, perm, lam = mix
        if view == source_view:  # mixed source i -> own target (lam) and the partner's (1 - lam)
            rows[i] += lam[i] * loss[i, i] + (1 - lam[i]) * loss[i, perm[i]]
        else:  # mixed target i <- source i (lam) and source perm(i) (1 - lam)
            rows[i] += lam[i] * loss[i, i]
            rows[perm[i]] += (1 - lam[i]) * loss[perm[i], i]
    return rows


@pytest.mark.parametrize(("view", "source_view"), [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_mixed_rows_rule(view: int, source_view: int) -> None:
    g = torch.Generator().manual_seed(view * 2 + source_view)
    n = 7
    table = torch.rand(n, n, generator=g, dtype=torch.float64)  # L(a -> b)
    perm, lam = torch.randperm(n, generator=g), torch.rand(n, generator=g, dtype=torch.float64)
    src = torch.arange(n)

    def loss(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return table[s, t]

    got = mixed_rows(loss, src, src, MixInfo(view, perm, lam), source_view)
    want = _pairs_reference(table.numpy(), (view, perm.numpy(), lam.numpy()), source_view)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)
    assert got.sum().item() == pytest.approx(float(_weights_total(perm, lam, table, view == source_view)))
    ones = MixInfo(view, perm, torch.ones(n, dtype=torch.float64))
    assert torch.equal(mixed_rows(loss, src, src, ones, source_view), mixed_rows(loss, src, src, None, 0))


def _weights_total(perm: torch.Tensor, lam: torch.Tensor, table: torch.Tensor, source_mixed: bool) -> float:
    i = torch.arange(len(perm))
    partner = table[i, perm] if source_mixed else table[perm, i]
    return float((lam * table[i, i] + (1 - lam) * partner).sum())


def reference_moco_rows(q: np.ndarray, k: np.ndarray, queue: np.ndarray, t: float) -> np.ndarray:
    """He et al. 2019 Eq. 1 for every (query a, positive key b): [a, b] = -log(e^{q_a.k_b/t} / (e^{q_a.k_b/t}
    + sum_j e^{q_a.queue_j/t}))."""
    n = q.shape[0]
    out = np.zeros((n, n))
    for a in range(n):
        neg = sum(math.exp(float(q[a] @ c) / t) for c in queue)
        for b in range(n):
            pos = math.exp(float(q[a] @ k[b]) / t)
            out[a, b] = -math.log(pos / (pos + neg))
    return out


@pytest.mark.parametrize("view", [0, 1])
def test_moco_mixed_targets(view: int) -> None:
    torch.manual_seed(0)
    m = build_method(
        MocoConfig(dim=8, hidden_dim=16, queue_size=10, temperature=0.2), build_backbone("narrow_resnet18")
    )
    assert isinstance(m, MoCoV2)
    m.eval()  # BN on running statistics and no enqueueing: repeated forwards see the same queue
    g = torch.Generator().manual_seed(4)
    x1, x2 = torch.rand(5, 3, 16, 16, generator=g), torch.rand(5, 3, 16, 16, generator=g)
    perm, lam = torch.randperm(5, generator=g), torch.rand(5, generator=g)

    def run(mix: MixInfo | None) -> torch.Tensor:
        return m(ViewBatch(views=(x1, x2), labels=torch.full((5,), -1), mix=mix)).loss

    with torch.no_grad():
        q = F.normalize(m.head(m.backbone(x1)), dim=1).double().numpy()
        k = F.normalize(m.key_head(m.key_backbone(x2)), dim=1).double().numpy()
    table = reference_moco_rows(q, k, m.queue.double().numpy(), 0.2)
    want = _pairs_reference(table, (view, perm.numpy(), lam.numpy()), source_view=0).mean()
    assert run(MixInfo(view, perm, lam)).item() == pytest.approx(want, rel=1e-5)
    plain = run(None)
    assert plain.item() == pytest.approx(np.mean(np.diag(table)), rel=1e-5)
    assert torch.equal(run(MixInfo(view, perm, torch.ones(5))), plain)


def test_recipes_resolve_with_paper_values() -> None:
    for name in ("simclr", "byol", "simsiam", "barlow"):
        assert RECIPES.get(name).method == name
    simclr = resolve_recipe("simclr", "paper")
    assert isinstance(simclr.method, SimCLRConfig) and simclr.method.temperature == 0.1
    v = simclr.augment.views[0]
    assert (v.brightness, v.contrast, v.saturation, v.hue, v.blur_p, v.crop_scale) == (
        0.8,
        0.8,
        0.8,
        0.2,
        0.5,
        (0.08, 1.0),
    )
    byol = resolve_recipe("byol", "paper")
    assert isinstance(byol.method, BYOLConfig) and byol.method.base_momentum == 0.996
    v0, v1 = byol.augment.views
    assert (v0.blur_p, v0.solarize_p, v1.blur_p, v1.solarize_p) == (1.0, 0.0, 0.1, 0.2)
    simsiam = resolve_recipe("simsiam", "paper")
    assert isinstance(simsiam.method, SimSiamConfig) and simsiam.method.fix_pred_lr
    assert (simsiam.optim.lr, simsiam.train.batch_size) == (0.05, 512)
    barlow = resolve_recipe("barlow", "paper")
    assert (
        isinstance(barlow.method, BarlowConfig)
        and barlow.method.dim == 8192
        and barlow.method.lambd == 0.0051
    )
    # LARS with the papers' values; biases and BN parameters apart (no wd, no adaptation)
    lars = {name: resolve_recipe(name, "paper").optim for name in ("simclr", "byol", "barlow")}
    assert {n: (o.name, o.lr, o.weight_decay, o.eta, o.bias_lr_scale) for n, o in lars.items()} == {
        "simclr": ("lars", 0.3, 1e-6, 0.001, 1.0),
        "byol": ("lars", 0.2, 1.5e-6, 0.001, 1.0),
        "barlow": ("lars", 0.2, 1.5e-6, 0.001, 0.024),
    }
    assert all(o.splits_bias_and_norm and o.momentum == 0.9 and o.warmup_epochs == 10 for o in lars.values())
    assert lars["barlow"].lr * lars["barlow"].bias_lr_scale == pytest.approx(0.0048)
    assert (simsiam.optim.name, resolve_recipe("moco", "paper").optim.name) == ("sgd", "sgd")
    for name in ("moco", "simclr", "byol", "simsiam", "barlow"):
        smoke = resolve_recipe(name, "smoke")
        assert smoke.optim.name == "adamw" and smoke.augment.views[1].size == 32
        assert smoke.backbone.name == "narrow_resnet18"


def test_method_configs_validate() -> None:
    with pytest.raises(ValueError, match="temperature"):
        SimCLRConfig(temperature=0.0)
    with pytest.raises(ValueError, match="base_momentum"):
        BYOLConfig(base_momentum=1.5)
    with pytest.raises(ValueError, match="pred_hidden_dim"):
        SimSiamConfig(pred_hidden_dim=0)
    with pytest.raises(ValueError, match="lambd"):
        BarlowConfig(lambd=-1.0)
    with pytest.raises(ConfigError, match="unknown kind"):
        resolve_recipe("byol", "smoke", ["method.kind=byl"])
    with pytest.raises(ConfigError, match="queue_size"):
        resolve_recipe("byol", "smoke", ["method.queue_size=8"])  # a MoCo field on a BYOL config
