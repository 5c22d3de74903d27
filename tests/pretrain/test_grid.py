"""The recipe grid: names, resolution in both profiles, invalid combinations, and a few steps of each."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from core.errors import ConfigError, UnknownNameError
from pretrain.recipes import PROFILES, RECIPES, resolve_recipe
from pretrain.recipes.grid import AUGS, GENS, METHODS
from pretrain.trainer import Trainer
from tests.pretrain.test_trainer import make_trainer

TINY = [
    "augment.views.0.size=16", "augment.views.1.size=16", "train.batch_size=8", "train.epochs=1",
    "train.checkpoint_every=0",
]  # fmt: skip


def test_grid_names() -> None:
    names = set(RECIPES.names())
    for m in METHODS:
        assert m in names and all(f"{m}_{a}" in names for a in AUGS)
    for example in ("moco", "moco_mixup", "simclr_cutmix", "moco_sup_mixup", "moco_semi_erasing"):
        assert example in names
    for example in ("simclr_sd", "byol_icgan", "moco_oracle", "moco_sd_mixup", "moco_semi_icgan_cutout"):
        assert example in names
    # (5 methods + moco x 2 regimes) x (none + 3 generators) x (none + 4 augs)
    assert len(names) == (5 + 2) * (1 + len(GENS)) * (1 + len(AUGS))


@pytest.mark.parametrize("profile", PROFILES)
def test_every_recipe_resolves(profile: str) -> None:
    for name in RECIPES.names():
        r = resolve_recipe(name, profile)
        entry = RECIPES.get(name)
        assert r.method.kind == entry.method
        assert [s.kind for s in r.augment.stages] == ([entry.aug] if entry.aug else [])
        assert [s.store for s in r.augment.sources] == ([GENS[entry.gen][0]] if entry.gen else [])
        assert all(s.p == 0.5 and s.views == (0, 1) for s in r.augment.sources)
        assert r.label_fraction == {None: 0.0, "sup": 1.0, "semi": 0.5}[entry.regime]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("byol_sup", "label regimes (sup, semi) exist for moco only; valid: byol, byol_mixup"),
        ("moco_mixup_sup", "the order is {method}_{regime}_{gen}_{aug}"),
        ("moco_mixup_sd", "the order is {method}_{regime}_{gen}_{aug}"),
        ("moco_sd_icgan", "with at most one of each"),
    ],
)
def test_invalid_combinations_explain(name: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        resolve_recipe(name, "smoke")


def test_unknown_recipe_suggests() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'moco_mixup'"):
        resolve_recipe("moco_mixpu", "smoke")


@pytest.mark.parametrize("name", [n for n, e in RECIPES.items() if e.gen is None])
def test_recipe_trains_a_few_steps(name: str, tmp_path: Path) -> None:
    recipe = resolve_recipe(name, "smoke", TINY)
    trainer: Trainer = make_trainer(recipe, tmp_path)
    summary = trainer.fit()
    assert summary.steps == 3 and math.isfinite(summary.final_loss)
