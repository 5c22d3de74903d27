"""ImageNet-100: the shipped wnid list, class selection from an ImageNet tree, missing wnids, the stand-in."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.cli import main
from core.errors import DatasetError
from tasks.datasets import imagefolder
from tasks.datasets.imagenet100 import imagenet100_wnids, select_wnids
from tasks.datasets.registry import DATASETS
from tasks.registry import resolve_tasks, task_groups

UNLISTED = "n01440764"  # tench: an ImageNet-1k class outside ImageNet-100


def test_list_has_100_unique_wnids() -> None:
    wnids = imagenet100_wnids()
    assert len(wnids) == 100 == len(set(wnids))
    assert all(len(w) == 9 and w[0] == "n" and w[1:].isdigit() for w in wnids)
    assert wnids[:2] == ("n02869837", "n01749939") and UNLISTED not in wnids  # CMC's order


def _fake_imagenet(root: Path, wnids: list[str]) -> Path:
    """A real-layout ImageNet tree (no synthetic marker): one 8x8 JPEG per class and split."""
    for split in ("train", "val"):
        for k, wnid in enumerate(wnids):
            folder = root / "imagenet" / split / wnid
            folder.mkdir(parents=True)
            pixels = np.full((8, 8, 3), k % 256, dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{wnid}_0.JPEG")
    return root


def test_selects_exactly_the_listed_classes(tmp_path: Path) -> None:
    root = _fake_imagenet(tmp_path, [*imagenet100_wnids(), UNLISTED])
    info = DATASETS.get("imagenet100")
    for split in ("train", "val"):
        ds = info.load(root, split, size=8, resize=8)
        assert list(ds.classes) == sorted(imagenet100_wnids())  # ImageFolder order over the subset
        assert len(ds) == 100 and sorted(ds.labels.tolist()) == list(range(100))
        assert not any(UNLISTED in path for path, _ in ds.samples)
    assert info.verify(root) == [] and info.count(root, "train") == 100
    full = DATASETS.get("imagenet").load(root, "val", size=8, resize=8)
    assert len(full.classes) == 101  # the tree itself is untouched (no copy)


def test_missing_wnid_fails_naming_it(tmp_path: Path) -> None:
    wnids = list(imagenet100_wnids())
    gone = wnids.pop(37)
    root = _fake_imagenet(tmp_path, wnids)
    with pytest.raises(DatasetError, match=f"1 listed wnid\\(s\\) missing from .*train: {gone}"):
        DATASETS.get("imagenet100").load(root, "train", size=8, resize=8)
    problems = DATASETS.get("imagenet100").verify(root)
    assert len(problems) == 2 and all(gone in p for p in problems)
    assert main(["data", "verify", "imagenet100", "--root", str(root)]) == 1


def test_synthetic_stand_in_selects_listed_wnids(tmp_path: Path) -> None:
    assert (
        main(["data", "synth", "--root", str(tmp_path), "--datasets", "imagenet100", "--scale", "tiny"]) == 0
    )
    stand_in = imagefolder.synthetic_wnids()
    assert len(stand_in) == 10 and set(imagefolder.IMAGENET_SYNTH_UNLISTED) <= set(stand_in)
    listed = [w for w in stand_in if w in imagenet100_wnids()]
    assert select_wnids(tmp_path, "val") == listed and len(listed) == 8
    ds = DATASETS.get("imagenet100").load(tmp_path, "train", size=32, resize=36)
    assert list(ds.classes) == listed and set(ds.labels.tolist()) == set(range(8))
    assert len(ds) == len(DATASETS.get("imagenet").load(tmp_path, "train", 32, 36)) * 8 // 10


def test_tasks_and_groups() -> None:
    names = [t.name for t in resolve_tasks("imagenet100")]
    assert names == ["linear/imagenet100", "knn/imagenet100"]
    groups = task_groups()
    assert not any("imagenet100" in t for t in groups["all"] + groups["linear"] + groups["knn"])
