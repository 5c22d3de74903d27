"""CIFAR-100 (python version): layout, agreement with torchvision's reader, stand-in, verifier."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar as tv_cifar

from core.errors import DatasetError
from tasks.datasets.base import ArrayImageDataset, load_uint8_tensor
from tasks.datasets.cifar import (
    CIFAR100_DIR,
    CIFAR100_SYNTH_COUNTS,
    load_cifar100,
    verify_cifar100,
    write_cifar100,
)
from tasks.datasets.registry import DATASETS
from tasks.datasets.synth import shapes
from tasks.datasets.synth.writer import ensure_synthetic

FINE = [f"class_{k}" for k in range(100)]
COARSE_OF = [k % 20 for k in range(100)]
COARSE = [f"super_{k}" for k in range(20)]


@pytest.fixture(scope="module")
def synth100(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny synthetic CIFAR-100 stand-in (read-only)."""
    return ensure_synthetic(tmp_path_factory.mktemp("synth100"), ["cifar100"], "tiny")


def _split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 100, n)


@pytest.fixture()
def written(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    (train_x, train_y), (test_x, test_y) = _split(31, 0), _split(9, 1)
    write_cifar100(tmp_path, train_x, train_y, test_x, test_y, FINE, COARSE_OF, COARSE)
    return tmp_path, train_x, train_y, test_x, test_y


def test_round_trip_and_official_structure(written: tuple) -> None:
    root, train_x, train_y, test_x, test_y = written
    for split, images, labels in (("train", train_x, train_y), ("test", test_x, test_y)):
        ds = load_cifar100(root, split)
        assert np.array_equal(ds.images, images) and np.array_equal(ds.labels, labels)
        assert ds.classes == tuple(FINE) and ds.labels.dtype == np.int64
    folder = root / CIFAR100_DIR
    assert sorted(p.name for p in folder.iterdir()) == ["meta", "test", "train"]
    with open(folder / "train", "rb") as f:
        entry = pickle.load(f, encoding="bytes")  # trusted: our own file
    assert set(entry) == {b"data", b"fine_labels", b"coarse_labels", b"filenames", b"batch_label"}
    assert entry[b"batch_label"] == b"training batch 1 of 1" and entry[b"data"].shape == (31, 3072)
    assert entry[b"coarse_labels"] == [COARSE_OF[k] for k in train_y]
    with open(folder / "meta", "rb") as f:
        meta = pickle.load(f, encoding="latin1")
    assert meta == {"fine_label_names": FINE, "coarse_label_names": COARSE}


@pytest.mark.parametrize("train", [True, False])
def test_matches_torchvision_reader(synth100: Path, monkeypatch: pytest.MonkeyPatch, train: bool) -> None:
    monkeypatch.setattr(tv_cifar.CIFAR100, "_check_integrity", lambda self: True)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)
    reference = tv_cifar.CIFAR100(str(synth100), train=train, download=False)
    ours = load_cifar100(synth100, "train" if train else "test")
    assert np.array_equal(reference.data, ours.images)
    assert reference.targets == ours.labels.tolist()
    assert tuple(reference.classes) == ours.classes
    image, label = ours[7]
    assert torch.equal(image, torch.from_numpy(np.array(reference[7][0])).permute(2, 0, 1))
    assert label == reference[7][1]


def test_synthetic_stand_in(synth100: Path) -> None:
    info = DATASETS.get("cifar100")
    assert (info.num_classes, info.synthetic_classes, info.synthetic_image_size) == (100, 100, 32)
    assert (info.train_split, info.test_split, info.relpath) == ("train", "test", CIFAR100_DIR)
    train, test = info.load(synth100, "train"), info.load(synth100, "test")
    assert isinstance(train, ArrayImageDataset)
    assert (len(train), len(test)) == CIFAR100_SYNTH_COUNTS["tiny"]
    assert set(train.labels.tolist()) == set(range(100)) and len(set(test.labels.tolist())) == 100
    names = shapes.identity_names(100)
    assert train.classes == tuple(name.replace("-", "_") for name in names)
    assert train.classes[0] == "disc" and "stripes_star" in train.classes
    image, label = test[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 32, 32) and label == test.labels[0]
    small = info.load(synth100, "test", size=24, resize=28)
    images, labels = load_uint8_tensor(small)
    assert torch.equal(labels, torch.from_numpy(test.labels))
    assert images.shape == (len(test), 3, 24, 24) and torch.equal(images[3], small[3][0])
    assert info.verify(synth100) == [] and verify_cifar100(synth100, check_images=True) == []
    with open(synth100 / CIFAR100_DIR / "train", "rb") as f:  # coarse class = the identity's shape
        entry = pickle.load(f, encoding="bytes")
    assert entry[b"coarse_labels"][:50] == [k % 20 for k in entry[b"fine_labels"][:50]]


def test_missing_files_are_named(written: tuple) -> None:
    root = written[0]
    (root / CIFAR100_DIR / "test").unlink()
    assert len(load_cifar100(root, "train")) == 31  # the other split still loads
    with pytest.raises(DatasetError) as info:
        load_cifar100(root, "test")
    assert str(root / CIFAR100_DIR) in str(info.value) and "lacks test" in str(info.value)
    assert "cifar-100-python.tar.gz" in str(info.value) and "bench data synth" in str(info.value)
    problems = verify_cifar100(root)
    assert len(problems) == 1 and "lacks test" in problems[0]
    (root / CIFAR100_DIR / "meta").unlink()
    assert "meta" in verify_cifar100(root)[0]


def test_missing_dataset_points_to_preparation(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=re.escape(str(tmp_path / CIFAR100_DIR))):
        load_cifar100(tmp_path, "train")
    problems = DATASETS.get("cifar100").verify(tmp_path)
    assert len(problems) == 1 and "torchvision.datasets.CIFAR100" in problems[0]


def test_damaged_pickle_is_named_under_either_policy(written: tuple) -> None:
    path = written[0] / CIFAR100_DIR / "train"
    path.write_bytes(path.read_bytes()[:5000])
    for policy in ("raise", "skip"):  # in-memory pickles: nothing to skip, the file is named
        with pytest.raises(DatasetError, match=re.escape(str(path))):
            DATASETS.get("cifar100").load(written[0], "train", on_corrupt=policy)
    assert str(path) in verify_cifar100(written[0])[0]


def test_verifier_reports_class_count_and_empty_classes(tmp_path: Path) -> None:
    images, labels = _split(20, 2)
    write_cifar100(tmp_path, images, labels % 10, images, labels % 10, FINE[:10], COARSE_OF[:10], COARSE)
    problems = verify_cifar100(tmp_path)
    assert any("lists 10 class names; expected 100" in p for p in problems)
    assert any(str(tmp_path / CIFAR100_DIR / "meta") in p for p in problems)
    write_cifar100(tmp_path, images, labels % 50, images, labels, FINE, COARSE_OF, COARSE)
    problems = verify_cifar100(tmp_path)
    assert problems and all("has no images of" in p for p in problems)
