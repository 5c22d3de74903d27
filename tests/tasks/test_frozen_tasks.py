"""The frozen-backbone tasks end to end on tiny synthetic data: shared feature cache, corrupt images,
the augmented linear protocol (and its resume), task groups."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import tasks.linear_aug as linear_aug
from core.errors import DatasetError
from pretrain.backbones import build_backbone
from tasks.base import TaskContext
from tasks.features import state_dict_digest
from tasks.registry import CLASSIFICATION_DATASETS, OPT_IN_FAMILIES, TASKS, resolve_tasks, task_groups


def make_ctx(root: Path, cache: Path, backbone: torch.nn.Module, **kw: object) -> TaskContext:
    args: dict[str, object] = {
        "data_root": root,
        "synthetic": True,
        "profile": "smoke",
        "device": torch.device("cpu"),
        "cache_dir": cache,
        "seed": 0,
        "weights_digest": state_dict_digest(backbone),
        "progress": False,
    }
    args.update(kw)
    return TaskContext(**args)  # type: ignore[arg-type]


@pytest.fixture()
def backbone() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_backbone("narrow_resnet18").eval()


def test_groups_cover_six_datasets() -> None:
    groups = task_groups()
    assert len(CLASSIFICATION_DATASETS) == 6
    assert groups["linear"] == [f"linear/{d}" for d in CLASSIFICATION_DATASETS]
    assert groups["knn"] == [f"knn/{d}" for d in CLASSIFICATION_DATASETS]
    assert set(groups["all"]) >= set(groups["linear"]) | set(groups["knn"])
    assert not any(name.startswith(OPT_IN_FAMILIES) for name in groups["all"])
    assert groups["cifar100"] == ["linear/cifar100", "knn/cifar100"]
    assert [t.name for t in resolve_tasks("linear-aug/places365,knn")][:2] == [
        "linear-aug/places365",
        "knn/imagenet",
    ]
    assert TASKS.get("linear-aug/places365").config("paper").epochs == 45  # type: ignore[attr-defined]
    assert TASKS.get("linear-aug/imagenet").config("paper").epochs == 100  # type: ignore[attr-defined]


def test_linear_and_knn_share_cached_features(
    synth_root: Path, tmp_path: Path, backbone: torch.nn.Module
) -> None:
    ctx = make_ctx(synth_root, tmp_path, backbone)
    lin = TASKS.get("linear/cifar10").run(backbone, ctx)
    files = sorted((tmp_path / "features").glob("*.f16"))
    assert len(files) == 2  # train + test
    stamps = [f.stat().st_mtime_ns for f in files]
    knn = TASKS.get("knn/cifar10").run(backbone, ctx)
    assert [f.stat().st_mtime_ns for f in sorted((tmp_path / "features").glob("*.f16"))] == stamps
    assert 0 <= lin.metrics["top1"] <= lin.metrics["top5"] <= 100
    assert set(knn.metrics) == {"k20_top1", "k20_top5", "k200_top1", "k200_top5"}
    assert knn.details["n_test"] == lin.details["n_test"] == 200
    assert knn.details["skipped_images"] == {"train": 0, "test": 0}


def test_corrupt_image_raise_or_skip(synth_root: Path, tmp_path: Path, backbone: torch.nn.Module) -> None:
    root = tmp_path / "data"
    shutil.copytree(synth_root / "imagenet", root / "imagenet")
    victim = sorted((root / "imagenet" / "val").rglob("*.JPEG"))[3]
    victim.write_bytes(b"\xff\xd8 truncated")
    task = TASKS.get("knn/imagenet")
    with pytest.raises(DatasetError, match=str(victim)):
        task.run(backbone, make_ctx(root, tmp_path / "c1", backbone))
    out = task.run(backbone, make_ctx(root, tmp_path / "c2", backbone, on_corrupt="skip"))
    assert out.details["skipped_images"] == {"train": 0, "val": 1}
    assert out.details["skipped_paths"] == {"val": [str(victim)]}
    assert out.details["n_test"] == 99


class Stop(Exception):
    pass


def test_augmented_linear_runs_and_resumes_exactly(
    synth_root: Path, tmp_path: Path, backbone: torch.nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = TASKS.get("linear-aug/cifar10")
    assert task.protocol("smoke")["name"] == "linear-augmented"
    straight = task.run(backbone, make_ctx(synth_root, tmp_path / "cache", backbone))
    assert straight.details["epochs_run_this_call"] == 2
    assert 0 <= straight.metrics["top1"] <= straight.metrics["top5"] <= 100

    work = tmp_path / "work"
    real_save = linear_aug.save_state

    def save_then_die(path: Path, state: dict[str, object]) -> None:
        real_save(path, state)
        raise Stop  # "killed" right after epoch 1 was saved

    monkeypatch.setattr(linear_aug, "save_state", save_then_die)
    with pytest.raises(Stop):
        task.run(backbone, make_ctx(synth_root, tmp_path / "cache", backbone, work_dir=work))
    monkeypatch.setattr(linear_aug, "save_state", real_save)
    resumed = task.run(backbone, make_ctx(synth_root, tmp_path / "cache", backbone, work_dir=work))
    assert resumed.details["epochs_run_this_call"] == 1
    assert resumed.metrics == straight.metrics
