"""iNaturalist 2018: release layout, id -> label mapping, long-tailed stand-in, errors, verifier."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision.datasets as tvd
from PIL import Image

from core.errors import DatasetError
from tasks.datasets.base import FolderImageDataset, load_uint8_tensor
from tasks.datasets.filelist import missing_files
from tasks.datasets.inat import (
    INAT2018_DIR,
    INAT2018_IMAGES,
    Category,
    load_inat2018,
    read_split,
    split_file,
    synthetic_categories,
    verify_inat2018,
    write_inat2018,
)
from tasks.datasets.registry import DATASETS
from tasks.datasets.synth.writer import ensure_synthetic


@pytest.fixture(scope="module")
def synth_inat(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny synthetic iNaturalist stand-in (read-only)."""
    return ensure_synthetic(tmp_path_factory.mktemp("synth_inat"), ["inat2018"], "tiny")


@pytest.fixture()
def inat_copy(synth_inat: Path, tmp_path: Path) -> Path:
    shutil.copytree(synth_inat / INAT2018_DIR, tmp_path / INAT2018_DIR)
    return tmp_path


def _hand_made(root: Path, ids: tuple[int, int, int] = (5, 2, 9)) -> list[Category]:
    categories = [Category(ids[0], "Pica pica", "Aves"), Category(ids[1], "Bufo bufo", "Amphibia")]
    categories.append(Category(ids[2], "Quercus robur", "Plantae"))
    images = np.random.default_rng(0).integers(0, 256, (8, 24, 36, 3), dtype=np.uint8)
    write_inat2018(root, {"train": (images[:5], [0, 1, 2, 2, 0]), "val": (images[5:], [1, 2, 0])}, categories)
    return categories


def test_label_is_rank_of_category_id(tmp_path: Path) -> None:
    _hand_made(tmp_path)  # ids 5, 2, 9 listed in that order -> labels 1, 0, 2
    samples, classes = read_split(tmp_path, "train")
    assert classes == ["Bufo bufo", "Pica pica", "Quercus robur"]
    assert [label for _, label in samples] == [1, 0, 2, 2, 1]
    doc = json.loads(split_file(tmp_path, "train").read_text())
    assert [os.path.join(tmp_path, INAT2018_DIR, image["file_name"]) for image in doc["images"]] == [
        path for path, _ in samples
    ]
    assert re.fullmatch(r"train_val2018/Aves/5/[0-9a-f]{32}\.jpg", doc["images"][0]["file_name"])
    assert doc["images"][0]["width"] == 36 and doc["images"][0]["height"] == 24
    assert {a["image_id"]: a["category_id"] for a in doc["annotations"]} == {0: 5, 1: 2, 2: 9, 3: 9, 4: 5}
    val = json.loads(split_file(tmp_path, "val").read_text())
    assert [image["id"] for image in val["images"]] == [5, 6, 7]  # image ids run on across splits
    ds = load_inat2018(tmp_path, "val", size=24, resize=24)
    assert ds.labels.tolist() == [0, 2, 1] and ds[0][0].shape == (3, 24, 24)


def test_image_tree_matches_torchvision_directory_reader(tmp_path: Path) -> None:
    _hand_made(tmp_path, ids=(1, 0, 2))  # torchvision needs the release's contiguous ids
    os.symlink(tmp_path / INAT2018_DIR / INAT2018_IMAGES, tmp_path / "2018")
    reference = tvd.INaturalist(str(tmp_path), version="2018", target_type="full")
    theirs = {(os.path.join(reference.all_categories[c], f), c) for c, f in reference.index}
    ours = set()
    for split in ("train", "val"):
        samples, _ = read_split(tmp_path, split)
        folder = str(tmp_path / INAT2018_DIR / INAT2018_IMAGES) + os.sep
        ours |= {(path.removeprefix(folder), label) for path, label in samples}
    assert ours == theirs and len(ours) == 8


def test_stand_in_is_long_tailed_and_complete(synth_inat: Path) -> None:
    info = DATASETS.get("inat2018")
    assert (info.num_classes, info.synthetic_classes, info.synthetic_image_size) == (8142, 40, 40)
    assert (info.train_split, info.test_split, info.default_size, info.default_resize) == (
        "train",
        "val",
        224,
        256,
    )
    train, val = info.load(synth_inat, "train", size=32), info.load(synth_inat, "val", size=32)
    assert isinstance(train, FolderImageDataset) and 250 <= len(train) <= 450 and len(val) == 120
    counts = np.bincount(train.labels, minlength=40)
    assert counts.min() >= 2 and counts.max() == 24 and counts.max() / counts.min() >= 8
    assert np.bincount(val.labels, minlength=40).tolist() == [3] * 40  # balanced, like the real val split
    assert train.classes == val.classes == tuple(c.name for c in synthetic_categories())
    assert train.classes[:2] == ("Checker disc", "Checker square") and train.classes[-1] == "Dots chevron"
    doc = json.loads(split_file(synth_inat, "train").read_text())
    listed = [c["id"] for c in doc["categories"]]
    assert sorted(listed) == list(range(40)) and listed != sorted(listed)
    for path, label in train.samples[::23]:  # the folder names the category id = label here
        assert Path(path).parent.name == str(label)
    images, labels = load_uint8_tensor(val)
    assert images.shape == (120, 3, 32, 32) and images.dtype == torch.uint8
    assert torch.equal(images[7], val[7][0]) and torch.equal(labels, torch.from_numpy(val.labels))
    with Image.open(val.samples[0][0]) as image:
        assert image.size == (40, 40) and image.format == "JPEG"
    assert info.verify(synth_inat, check_images=True) == []


def test_missing_image_and_files(inat_copy: Path) -> None:
    samples, _ = read_split(inat_copy, "val")
    gone = samples[9][0]
    Path(gone).unlink()
    for policy in ("raise", "skip"):
        with pytest.raises(DatasetError) as info:
            load_inat2018(inat_copy, "val", on_corrupt=policy)
        assert gone in str(info.value) and "1 of 120 images listed in" in str(info.value)
        assert str(split_file(inat_copy, "val")) in str(info.value)
    problems = verify_inat2018(inat_copy)
    assert len(problems) == 1 and gone in problems[0]
    split_file(inat_copy, "train").unlink()
    with pytest.raises(DatasetError, match=re.escape(str(split_file(inat_copy, "train")))):
        load_inat2018(inat_copy, "train")
    problems = verify_inat2018(inat_copy)
    assert any(str(split_file(inat_copy, "train")) in p and "inat_comp" in p for p in problems)
    shutil.rmtree(inat_copy / INAT2018_DIR / INAT2018_IMAGES)
    problems = verify_inat2018(inat_copy)
    assert len(problems) == 1 and str(inat_copy / INAT2018_DIR / INAT2018_IMAGES) in problems[0]
    empty = inat_copy / "nothing"
    assert str(empty / INAT2018_DIR) in DATASETS.get("inat2018").verify(empty)[0]


def test_corrupt_image_raise_and_skip(inat_copy: Path) -> None:
    samples, _ = read_split(inat_copy, "train")
    bad = samples[2][0]
    Path(bad).write_bytes(Path(bad).read_bytes()[:150])
    lazy = load_inat2018(inat_copy, "train", size=40, resize=40)
    with pytest.raises(DatasetError, match=re.escape(bad)):
        lazy[2]
    skipping = load_inat2018(inat_copy, "train", size=40, resize=40, on_corrupt="skip")
    assert skipping.skipped == (bad,) and len(skipping) == len(lazy) - 1
    assert verify_inat2018(inat_copy) == []
    problems = verify_inat2018(inat_copy, check_images=True)
    assert len(problems) == 1 and "1 unreadable" in problems[0] and bad in problems[0]


def _edit(path: Path, change: Callable[[dict[str, Any]], object]) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def _drop_unannotated(doc: dict[str, Any]) -> None:
    annotated = {a["image_id"] for a in doc["annotations"]}
    doc["images"] = [image for image in doc["images"] if image["id"] in annotated]


def test_verifier_and_loader_report_bad_json(inat_copy: Path) -> None:
    val = split_file(inat_copy, "val")
    _edit(val, lambda doc: doc.update(categories=[c for c in doc["categories"] if c["id"] != 39]))
    problems = verify_inat2018(inat_copy)
    assert any("annotations use 1 unknown category ids" in p and str(val) in p for p in problems)
    _edit(val, lambda doc: doc.update(annotations=[a for a in doc["annotations"] if a["category_id"] != 39]))
    problems = verify_inat2018(inat_copy)
    assert any("3 images have no annotation" in p for p in problems)
    _edit(val, _drop_unannotated)
    problems = verify_inat2018(inat_copy)
    assert any("defines 39 classes; expected 8142 (or 40" in p for p in problems)
    assert any("define different categories" in p for p in problems)
    train = split_file(inat_copy, "train")
    _edit(train, lambda doc: doc.update(images=doc["images"][:30]))  # 30 images cannot cover 40 classes
    assert any("train: " in p and "categories have no images" in p for p in verify_inat2018(inat_copy))
    train.write_text('{"images": [{"file_name": "x.jpg"}], "annotations": [], "categories": []}')
    with pytest.raises(DatasetError, match="not a COCO-style"):
        load_inat2018(inat_copy, "train")
    train.write_text("{truncated")
    with pytest.raises(DatasetError, match=re.escape(f"cannot read {train}")):
        load_inat2018(inat_copy, "train")


def test_reading_a_large_json_is_linear(tmp_path: Path) -> None:
    n, k = 200_000, 8142  # about half the size of the real train2018.json
    doc = {
        "images": [{"id": i, "file_name": f"train_val2018/S/{i % k}/{i:032x}.jpg"} for i in range(n)],
        "annotations": [{"id": i, "image_id": i, "category_id": i % k} for i in range(n)],
        "categories": [{"id": c, "name": f"species {c}", "supercategory": "S"} for c in range(k)],
    }
    (tmp_path / INAT2018_DIR / INAT2018_IMAGES).mkdir(parents=True)
    split_file(tmp_path, "train").write_text(json.dumps(doc))
    start = time.perf_counter()
    samples, classes = read_split(tmp_path, "train")
    missing = missing_files([path for path, _ in samples])
    assert time.perf_counter() - start < 20  # ~1 s when linear; quadratic work would take hours
    assert len(samples) == n and len(classes) == k and samples[k + 3][1] == 3 and len(missing) == n
