"""Training loop: determinism, resume after an interruption, checkpoint safety, export."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import CheckpointError
from pretrain.backbones import build_backbone
from pretrain.checkpoint import load_state, read_backbone_file, save_state
from pretrain.config import RecipeConfig
from pretrain.data import PretrainStream, hide_labels
from pretrain.methods import build_method
from pretrain.recipes import resolve_recipe
from pretrain.trainer import BACKBONE_NAME, CHECKPOINT_NAME, Trainer, lr_at

TINY = [
    "augment.views.0.size=16",
    "augment.views.1.size=16",
    "method.queue_size=64",
    "method.hidden_dim=32",
    "train.batch_size=8",
    "train.epochs=2",
    "train.checkpoint_every=2",
    "train.log_every=1",
    "optim.warmup_epochs=0.5",
]


def tiny_recipe(*extra: str) -> RecipeConfig:
    return resolve_recipe("moco", "smoke", [*TINY, *extra])


def make_trainer(recipe: RecipeConfig, run_dir: Path) -> Trainer:
    torch.manual_seed(recipe.train.seed)
    g = torch.Generator().manual_seed(123)
    images = torch.randint(0, 256, (24, 3, 20, 20), dtype=torch.uint8, generator=g)
    labels = hide_labels(np.arange(24) % 3, recipe.label_fraction, recipe.train.seed)
    stream = PretrainStream(images, labels, recipe.train.batch_size, recipe.train.seed, images=images)  # type: ignore[arg-type]
    method = build_method(recipe.method, build_backbone(recipe.backbone.name))
    return Trainer(recipe, method, stream, run_dir, torch.device("cpu"), progress=False)


def backbone_state(run_dir: Path) -> dict[str, torch.Tensor]:
    tensors, _ = read_backbone_file(run_dir / BACKBONE_NAME)
    return tensors


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_deterministic_for_fixed_seed(tmp_path: Path) -> None:
    recipe = tiny_recipe()
    s1 = make_trainer(recipe, tmp_path / "a").fit()
    s2 = make_trainer(recipe, tmp_path / "b").fit()
    assert s1.steps == s2.steps == 6 and s1.final_loss == s2.final_loss
    assert_same(backbone_state(tmp_path / "a"), backbone_state(tmp_path / "b"))
    s3 = make_trainer(tiny_recipe("train.seed=1"), tmp_path / "c").fit()
    assert s3.final_loss != s1.final_loss


def test_resume_after_interruption_matches_uninterrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe = tiny_recipe()
    make_trainer(recipe, tmp_path / "full").fit()

    killed = make_trainer(recipe, tmp_path / "killed")
    original = Trainer.train_step

    def dying_step(
        self: Trainer, images: torch.Tensor, labels: torch.Tensor, swapped: torch.Tensor | None
    ) -> dict[str, float]:
        if self.step == 3:  # the checkpoint of step 2 exists; step 3's work is lost
            raise KeyboardInterrupt
        return original(self, images, labels, swapped)

    monkeypatch.setattr(Trainer, "train_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        killed.fit()
    monkeypatch.setattr(Trainer, "train_step", original)
    assert load_state(tmp_path / "killed" / CHECKPOINT_NAME)["step"] == 2
    assert not (tmp_path / "killed" / BACKBONE_NAME).exists()

    resumed = make_trainer(recipe, tmp_path / "killed")
    summary = resumed.fit(resume=True)
    assert summary.resumed_from == 2 and summary.steps == 6
    assert_same(backbone_state(tmp_path / "full"), backbone_state(tmp_path / "killed"))
    full_state = load_state(tmp_path / "full" / CHECKPOINT_NAME)
    resumed_state = load_state(tmp_path / "killed" / CHECKPOINT_NAME)
    assert torch.equal(full_state["model"]["queue"], resumed_state["model"]["queue"])


def test_resume_with_other_config_is_refused(tmp_path: Path) -> None:
    make_trainer(tiny_recipe("train.max_steps=2"), tmp_path).fit()
    other = make_trainer(tiny_recipe("method.temperature=0.5"), tmp_path)
    with pytest.raises(CheckpointError, match="different recipe config"):
        other.fit(resume=True)


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned > /dev/null",))


def test_checkpoints_never_unpickle_code(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"step": 1, "payload": _Evil()}, path)
    with pytest.raises(CheckpointError, match="cannot load checkpoint"):
        load_state(path)
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_state(tmp_path / "garbage.pt")


def test_save_state_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ck.pt"
    save_state(path, {"step": 1})

    def fail(*_: object, **__: object) -> None:
        raise OSError("killed mid-write")

    monkeypatch.setattr(torch, "save", fail)
    with pytest.raises(OSError):
        save_state(path, {"step": 2})
    assert load_state(path)["step"] == 1


def test_export_has_metadata_and_torchvision_keys(tmp_path: Path) -> None:
    make_trainer(tiny_recipe("train.max_steps=1"), tmp_path).fit()
    tensors, meta = read_backbone_file(tmp_path / BACKBONE_NAME)
    assert meta["recipe"] == "moco" and meta["step"] == 1 and meta["backbone"] == "narrow_resnet18"
    assert "conv1.weight" in tensors and "layer4.1.bn2.running_var" in tensors
    fresh = build_backbone("narrow_resnet18").net.state_dict()
    assert fresh.keys() == tensors.keys()


def test_lr_schedule() -> None:
    assert lr_at(0, 100, 1.0, 10, "cosine") == pytest.approx(0.1)
    assert lr_at(9, 100, 1.0, 10, "cosine") == pytest.approx(1.0)
    assert lr_at(10, 100, 1.0, 10, "cosine") == pytest.approx(1.0)
    assert lr_at(55, 100, 1.0, 10, "cosine") == pytest.approx(0.5)
    assert lr_at(100, 100, 1.0, 10, "cosine") == pytest.approx(0.0, abs=1e-12)
    assert lr_at(50, 100, 1.0, 0, "constant") == 1.0


def test_hide_labels_is_seeded_and_exact() -> None:
    labels = np.arange(100) % 7
    a, b = hide_labels(labels, 0.3, 5), hide_labels(labels, 0.3, 5)
    assert np.array_equal(a, b) and int((a >= 0).sum()) == 30
    assert np.array_equal(a[a >= 0], labels[a >= 0])
    assert (hide_labels(labels, 0.0, 5) == -1).all()
    assert np.array_equal(hide_labels(labels, 1.0, 5), labels)


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_shard_each_epoch_without_duplicates_or_drops(world: int) -> None:
    """Over an epoch, the ranks' batches partition the first ``steps * B * world`` indices of the epoch's
    permutation (``drop_last``): nothing duplicated, nothing dropped beyond the incomplete last batch."""
    n, batch = 103, 4
    labels = np.arange(n)  # label = index, so batches reveal which samples they hold
    images = torch.zeros(n, 3, 2, 2, dtype=torch.uint8)
    streams = [
        PretrainStream(images, labels, batch, 7, images=images, rank=r, world_size=world)  # type: ignore[arg-type]
        for r in range(world)
    ]
    steps = streams[0].steps_per_epoch
    assert steps == n // (batch * world)
    for epoch in range(2):
        seen = []
        for stream in streams:
            it = stream.batches(epoch * steps)
            seen += [int(i) for _ in range(steps) for i in next(it).labels]
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(7 + epoch)).tolist()
        assert len(seen) == len(set(seen)) == steps * batch * world
        assert sorted(seen) == sorted(perm[: steps * batch * world])
