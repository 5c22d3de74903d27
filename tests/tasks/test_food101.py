"""Food-101: official layout (torchvision parity), stand-in, missing/corrupt files, verifier."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets as tvd
from PIL import Image

from core.errors import DatasetError
from tasks.datasets.base import FolderImageDataset, load_uint8_tensor
from tasks.datasets.food101 import (
    FOOD101_DIR,
    FOOD101_SYNTH_COUNTS,
    load_food101,
    read_split,
    synthetic_class_names,
    verify_food101,
    write_food101,
)
from tasks.datasets.registry import DATASETS
from tasks.datasets.synth.writer import ensure_synthetic


@pytest.fixture(scope="module")
def synth_food(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny synthetic Food-101 stand-in (read-only)."""
    return ensure_synthetic(tmp_path_factory.mktemp("synth_food"), ["food101"], "tiny")


@pytest.fixture()
def food_copy(synth_food: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the stand-in."""
    shutil.copytree(synth_food / FOOD101_DIR, tmp_path / FOOD101_DIR)
    return tmp_path


@pytest.mark.parametrize("split", ["train", "test"])
def test_matches_torchvision(synth_food: Path, split: str) -> None:
    reference = tvd.Food101(str(synth_food), split=split, download=False)
    ours = load_food101(synth_food, split, size=40, resize=40)
    assert [path for path, _ in ours.samples] == [str(p) for p in reference._image_files]
    assert ours.labels.tolist() == reference._labels
    assert list(ours.classes) == reference.classes
    for i in (0, len(ours) - 1):
        image, label = reference[i]
        assert torch.equal(ours[i][0], torch.from_numpy(np.array(image)).permute(2, 0, 1))
        assert ours[i][1] == label


def test_stand_in_layout_and_loader(synth_food: Path) -> None:
    info = DATASETS.get("food101")
    assert (info.num_classes, info.synthetic_classes, info.synthetic_image_size) == (101, 20, 40)
    assert (info.default_size, info.default_resize, info.test_split) == (224, 256, "test")
    train, test = info.load(synth_food, "train", size=32), info.load(synth_food, "test", size=32)
    assert isinstance(train, FolderImageDataset) and train.resize == 37  # keeps 256/224
    assert (len(train), len(test)) == FOOD101_SYNTH_COUNTS["tiny"]
    assert train.classes == test.classes == tuple(sorted(synthetic_class_names()))
    assert train.classes[0] == "outline_arrow" and len(train.classes) == 20
    assert np.bincount(train.labels).tolist() == [10] * 20 and np.bincount(test.labels).tolist() == [4] * 20
    images, labels = load_uint8_tensor(test)
    assert images.shape == (80, 3, 32, 32) and images.dtype == torch.uint8
    assert torch.equal(labels, torch.from_numpy(test.labels)) and torch.equal(images[5], test[5][0])
    meta = synth_food / FOOD101_DIR / "meta"
    assert (meta / "classes.txt").read_text().split() == list(train.classes)
    assert (meta / "labels.txt").read_text().splitlines()[0] == "Outline arrow"
    listed = json.loads((meta / "test.json").read_text())
    assert (meta / "test.txt").read_text().split() == [e for es in listed.values() for e in es]
    train_ids = {Path(p).stem for p, _ in train.samples}
    assert len(train_ids) == 200 and not train_ids & {Path(p).stem for p, _ in test.samples}
    assert all(Path(p).stem.isdigit() for p, _ in train.samples)
    with Image.open(train.samples[0][0]) as image:
        assert image.size == (40, 40) and image.format == "JPEG"
    assert info.verify(synth_food, check_images=True) == []


def test_hand_made_tree_in_json_order(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 256, (5, 12, 16, 3), dtype=np.uint8)
    write_food101(
        tmp_path, {"train": (images[:3], [1, 0, 1]), "test": (images[3:], [0, 1])}, ["pho", "bibimbap"]
    )
    meta = tmp_path / FOOD101_DIR / "meta"
    listed = json.loads((meta / "train.json").read_text())
    (meta / "train.json").write_text(json.dumps(dict(reversed(listed.items()))))  # keys need not be sorted
    samples, classes = read_split(tmp_path, "train")
    reference = tvd.Food101(str(tmp_path), split="train")
    assert classes == reference.classes == ["bibimbap", "pho"]
    assert samples == [(str(p), y) for p, y in zip(reference._image_files, reference._labels, strict=True)]
    assert [y for _, y in samples] == [1, 0, 0]  # pho (1 entry) first: JSON order; label = sorted index
    ds = load_food101(tmp_path, "test", size=12, resize=12)
    assert ds[0][0].shape == (3, 12, 12)  # 16x12 image: shorter side kept, centre crop


def test_missing_image_is_named_with_count(food_copy: Path) -> None:
    samples, _ = read_split(food_copy, "train")
    gone = samples[17][0]
    Path(gone).unlink()
    for policy in ("raise", "skip"):
        with pytest.raises(DatasetError) as info:
            load_food101(food_copy, "train", on_corrupt=policy)
        assert gone in str(info.value) and "1 of 200 images listed in" in str(info.value)
        assert str(food_copy / FOOD101_DIR / "meta" / "train.json") in str(info.value)
    assert len(load_food101(food_copy, "test")) == 80  # the other split is unaffected
    problems = verify_food101(food_copy, check_images=True)
    assert len(problems) == 1 and gone in problems[0] and "1 of 200" in problems[0]


def test_missing_split_file_and_dirs(food_copy: Path, tmp_path: Path) -> None:
    listing = food_copy / FOOD101_DIR / "meta" / "test.json"
    listing.unlink()
    with pytest.raises(DatasetError, match=re.escape(str(listing))):
        load_food101(food_copy, "test")
    problems = verify_food101(food_copy)
    assert len(problems) == 1 and str(listing) in problems[0]
    shutil.rmtree(food_copy / FOOD101_DIR / "images")
    problems = verify_food101(food_copy)
    assert len(problems) == 1 and str(food_copy / FOOD101_DIR / "images") in problems[0]
    empty = tmp_path / "empty"
    with pytest.raises(DatasetError, match="data.vision.ee.ethz.ch"):
        DATASETS.get("food101").load(empty, "train")
    assert str(empty / FOOD101_DIR) in verify_food101(empty)[0]


def test_corrupt_image_raise_and_skip(food_copy: Path) -> None:
    samples, _ = read_split(food_copy, "test")
    bad, truncated = samples[3][0], samples[40][0]
    Path(bad).write_bytes(b"not a jpeg" * 20)
    Path(truncated).write_bytes(Path(truncated).read_bytes()[:200])
    lazy = load_food101(food_copy, "test", size=40, resize=40)
    assert lazy[0][0].shape == (3, 40, 40)
    with pytest.raises(DatasetError, match=re.escape(bad)):
        lazy[3]
    skipping = load_food101(food_copy, "test", size=40, resize=40, on_corrupt="skip")
    assert skipping.skipped == (bad, truncated) and len(skipping) == 78
    assert [s for s in lazy.samples if s[0] not in skipping.skipped] == skipping.samples
    assert verify_food101(food_copy) == []  # layout alone is fine
    problems = verify_food101(food_copy, check_images=True)
    assert len(problems) == 1 and "2 unreadable" in problems[0] and bad in problems[0]


def test_verifier_reports_class_mismatches(food_copy: Path) -> None:
    meta = food_copy / FOOD101_DIR / "meta"
    listed = json.loads((meta / "test.json").read_text())
    del listed["outline_disc"]
    (meta / "test.json").write_text(json.dumps(listed))
    problems = verify_food101(food_copy)
    assert any("defines 19 classes; expected 101 (or 20" in p and "test.json" in p for p in problems)
    assert any("classes differ" in p and "outline_disc" in p for p in problems)
    assert any(str(meta / "classes.txt") in p for p in problems)
    listed["outline_star"].append("outline_ring/123")  # filed under the wrong class (and missing)
    (meta / "test.json").write_text(json.dumps(listed))
    assert any("name another class's folder" in p for p in verify_food101(food_copy))
