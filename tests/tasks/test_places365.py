"""Places365-Standard: official layout (torchvision parity, small and large), stand-in, errors, verifier."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets.places365 as tv_places
from PIL import Image

from core.errors import DatasetError
from tasks.datasets.base import FolderImageDataset, load_uint8_tensor
from tasks.datasets.places365 import (
    PLACES365_CATEGORIES,
    PLACES365_DIR,
    PLACES365_SYNTH_COUNTS,
    detect_variant,
    load_places365,
    read_split,
    synthetic_class_names,
    verify_places365,
    write_places365,
)
from tasks.datasets.registry import DATASETS
from tasks.datasets.synth.writer import ensure_synthetic

TV_SPLIT = {"train": "train-standard", "val": "val"}


@pytest.fixture(scope="module")
def synth_places(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny synthetic Places365 stand-in (read-only)."""
    return ensure_synthetic(tmp_path_factory.mktemp("synth_places"), ["places365"], "tiny")


@pytest.fixture()
def places_copy(synth_places: Path, tmp_path: Path) -> Path:
    shutil.copytree(synth_places / PLACES365_DIR, tmp_path / PLACES365_DIR)
    return tmp_path


@pytest.fixture()
def no_md5(monkeypatch: pytest.MonkeyPatch) -> None:
    """torchvision checks the official files' MD5 sums; ours differ by design."""
    monkeypatch.setattr(tv_places, "check_integrity", lambda *args, **kwargs: True)


def _hand_made(root: Path, small: bool) -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (9, 20, 30, 3), dtype=np.uint8)
    names = ["zen_garden", "apartment_building/outdoor", "airfield"]
    labels = [0, 1, 2, 2, 0, 1]
    write_places365(root, {"train": (images[:6], labels), "val": (images[6:], [2, 0, 1])}, names, small=small)


@pytest.mark.usefixtures("no_md5")
@pytest.mark.parametrize("split", ["train", "val"])
def test_matches_torchvision_on_stand_in(synth_places: Path, split: str) -> None:
    reference = tv_places.Places365(str(synth_places / PLACES365_DIR), split=TV_SPLIT[split], small=True)
    ours = load_places365(synth_places, split, size=48, resize=48)
    assert ours.samples == reference.imgs and ours.labels.tolist() == reference.targets
    assert list(ours.classes) == reference.classes
    for i in (0, len(ours) - 1):
        image, label = reference[i]
        assert torch.equal(ours[i][0], torch.from_numpy(np.array(image)).permute(2, 0, 1))
        assert ours[i][1] == label


@pytest.mark.usefixtures("no_md5")
@pytest.mark.parametrize("small", [True, False])
def test_hand_made_variants_match_torchvision(tmp_path: Path, small: bool) -> None:
    _hand_made(tmp_path, small)
    base = tmp_path / PLACES365_DIR
    assert detect_variant(tmp_path) == ("small" if small else "large")
    assert (base / PLACES365_CATEGORIES).read_text().splitlines() == [
        "/a/airfield 0",
        "/a/apartment_building/outdoor 1",
        "/z/zen_garden 2",
    ]
    folder = "data_256_standard" if small else "data_large_standard"
    assert (base / folder / "a" / "apartment_building" / "outdoor" / "00000002.jpg").is_file()
    assert (base / ("val_256" if small else "val_large") / "Places365_val_00000003.jpg").is_file()
    for split in ("train", "val"):
        reference = tv_places.Places365(str(base), split=TV_SPLIT[split], small=small)
        samples, classes = read_split(tmp_path, split)
        assert samples == reference.imgs and classes == reference.classes
    train = load_places365(tmp_path, "train", size=20, resize=20)
    assert train.labels.tolist() == [0, 0, 1, 1, 2, 2]  # listed per category, in sorted order
    assert train[0][0].shape == (3, 20, 20)  # 30x20 images: centre crop


def test_variant_choice(tmp_path: Path) -> None:
    _hand_made(tmp_path, small=False)
    _hand_made(tmp_path, small=True)  # both present: small by default, large on request
    assert "val_256" in load_places365(tmp_path, "val").samples[0][0]
    assert "val_large" in load_places365(tmp_path, "val", variant="large").samples[0][0]
    shutil.rmtree(tmp_path / PLACES365_DIR / "val_256")
    with pytest.raises(DatasetError, match=re.escape(str(tmp_path / PLACES365_DIR / "val_256"))):
        load_places365(tmp_path, "val")  # small is still detected (train): no silent switch per split
    with pytest.raises(DatasetError, match="'small' or 'large'"):
        load_places365(tmp_path, "val", variant="medium")  # type: ignore[arg-type]
    shutil.rmtree(tmp_path / PLACES365_DIR / "data_256_standard")
    assert detect_variant(tmp_path) == "large" and len(load_places365(tmp_path, "val")) == 3
    (tmp_path / PLACES365_DIR / "data_large_standard").rename(tmp_path / PLACES365_DIR / "data_large")
    with pytest.raises(DatasetError, match="rename it to data_large_standard"):
        load_places365(tmp_path, "train", variant="large")


def test_stand_in(synth_places: Path) -> None:
    info = DATASETS.get("places365")
    assert (info.num_classes, info.synthetic_classes, info.synthetic_image_size) == (365, 30, 48)
    assert (info.train_split, info.test_split, info.default_size, info.default_resize) == (
        "train",
        "val",
        224,
        256,
    )
    train, val = info.load(synth_places, "train", size=40), info.load(synth_places, "val", size=40)
    assert isinstance(val, FolderImageDataset) and (len(train), len(val)) == PLACES365_SYNTH_COUNTS["tiny"]
    expected = sorted(f"/{name[0]}/{name}" for name in synthetic_class_names())
    assert train.classes == val.classes == tuple(expected) and len(expected) == 30
    assert train.classes[0] == "/c/checker_arrow"
    assert np.bincount(train.labels).tolist() == [8] * 30 and np.bincount(val.labels).tolist() == [3] * 30
    images, labels = load_uint8_tensor(val)
    assert images.shape == (90, 3, 40, 40) and images.dtype == torch.uint8
    assert torch.equal(images[4], val[4][0]) and torch.equal(labels, torch.from_numpy(val.labels))
    with Image.open(val.samples[0][0]) as image:
        assert image.size == (48, 48) and image.format == "JPEG"
    # the label written for each image is the rank of its category: its folder says which one it is
    for path, label in train.samples[::17]:
        assert path.split("data_256_standard")[1].rsplit("/", 1)[0] == train.classes[label]
    assert info.verify(synth_places, check_images=True) == []


def test_missing_image_and_files(places_copy: Path) -> None:
    samples, _ = read_split(places_copy, "val")
    gone = samples[11][0]
    Path(gone).unlink()
    for policy in ("raise", "skip"):
        with pytest.raises(DatasetError) as info:
            load_places365(places_copy, "val", on_corrupt=policy)
        assert gone in str(info.value) and "1 of 90 images listed in" in str(info.value)
    assert len(load_places365(places_copy, "train")) == 240
    problems = verify_places365(places_copy)
    assert len(problems) == 1 and gone in problems[0] and "places365_val.txt" in problems[0]
    listing = places_copy / PLACES365_DIR / "places365_train_standard.txt"
    listing.unlink()
    with pytest.raises(DatasetError, match=re.escape(str(listing))):
        load_places365(places_copy, "train")
    assert any(str(listing) in p for p in verify_places365(places_copy))
    categories = places_copy / PLACES365_DIR / PLACES365_CATEGORIES
    categories.unlink()
    problems = verify_places365(places_copy)
    assert len(problems) == 1 and str(categories) in problems[0] and "places2.csail.mit.edu" in problems[0]
    empty = places_copy / "nothing"
    assert str(empty / PLACES365_DIR) in DATASETS.get("places365").verify(empty)[0]


def test_corrupt_image_raise_and_skip(places_copy: Path) -> None:
    samples, _ = read_split(places_copy, "train")
    bad = samples[5][0]
    Path(bad).write_bytes(b"\xff\xd8\xff\xe0 garbage" * 8)
    lazy = load_places365(places_copy, "train", size=48, resize=48)
    with pytest.raises(DatasetError, match=re.escape(bad)):
        lazy[5]
    assert lazy[6][0].shape == (3, 48, 48)
    skipping = load_places365(places_copy, "train", size=48, resize=48, on_corrupt="skip")
    assert skipping.skipped == (bad,) and len(skipping) == 239 and bad not in dict(skipping.samples)
    assert verify_places365(places_copy) == []
    problems = verify_places365(places_copy, check_images=True)
    assert len(problems) == 1 and "1 unreadable" in problems[0] and bad in problems[0]


def test_verifier_reports_class_problems_and_bad_lines(places_copy: Path) -> None:
    base = places_copy / PLACES365_DIR
    categories = base / PLACES365_CATEGORIES
    lines = categories.read_text().splitlines()
    categories.write_text("\n".join(lines[:-1]) + "\n")  # 29 classes, but the lists still use label 29
    problems = verify_places365(places_copy)
    assert any("defines 29 classes; expected 365 (or 30" in p for p in problems)
    assert any("labels outside [0, 29)" in p and "places365_val.txt" in p for p in problems)
    categories.write_text("\n".join(lines) + "\n")
    listing = base / "places365_train_standard.txt"
    kept = [line for line in listing.read_text().splitlines() if not line.endswith(" 3")]
    listing.write_text("\n".join(kept) + "\n")
    problems = verify_places365(places_copy)
    assert (
        len(problems) == 1
        and "1 of 30 classes have no images" in problems[0]
        and lines[3][:-2] in problems[0]
    )
    listing.write_text("\n".join([*kept[:4], "/c/checker_arrow/oops.jpg", *kept[4:]]) + "\n")
    with pytest.raises(DatasetError, match=re.escape(f"{listing}:5: expected '<name> <label>'")):
        load_places365(places_copy, "train")
    categories.write_text("/a/x 0\n/b/y 0\n")
    with pytest.raises(DatasetError, match="each once"):
        load_places365(places_copy, "val")
