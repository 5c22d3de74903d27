"""Synthetic shapes renderer and cached/atomic stand-in generation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.errors import DatasetError, UnknownNameError
from tasks.datasets import cifar
from tasks.datasets.cifar import CIFAR10_STYLE, CIFAR100_STYLE
from tasks.datasets.food101 import FOOD101_STYLE
from tasks.datasets.imagefolder import IMAGENET_STYLE
from tasks.datasets.inat import INAT2018_STYLE
from tasks.datasets.places365 import PLACES365_STYLE
from tasks.datasets.registry import DATASETS
from tasks.datasets.synth import shapes
from tasks.datasets.synth.writer import MARKER, TMP_PREFIX, ensure_synthetic, is_synthetic, read_marker


def test_render_is_deterministic_and_balanced() -> None:
    images, labels = shapes.render(1030, 10, 32, seed=7)
    again, labels_again = shapes.render(1030, 10, 32, seed=7)
    assert images.dtype == np.uint8 and images.shape == (1030, 32, 32, 3)
    assert labels.dtype == np.int64 and labels.shape == (1030,)
    assert images.tobytes() == again.tobytes() and np.array_equal(labels, labels_again)
    other, _ = shapes.render(1030, 10, 32, seed=8)
    assert not np.array_equal(images, other)
    counts = np.bincount(labels, minlength=10)
    assert counts.max() - counts.min() <= 1
    assert len(np.unique(images.reshape(1030, -1), axis=0)) == 1030


STYLES = {
    "cifar10": CIFAR10_STYLE,
    "imagenet": IMAGENET_STYLE,
    "cifar100": CIFAR100_STYLE,
    "food101": FOOD101_STYLE,
    "places365": PLACES365_STYLE,
    "inat2018": INAT2018_STYLE,
}


@pytest.mark.parametrize("style", list(STYLES.values()), ids=list(STYLES))
def test_class_is_not_predictable_from_mean_colour(style: shapes.SynthStyle) -> None:
    images, labels = shapes.render(4000, 10, 32, seed=3, style=style)
    features = images.reshape(len(images), -1, 3).mean(axis=1)
    train, test = slice(0, 3000), slice(3000, None)
    centroids = np.stack([features[train][labels[train] == k].mean(axis=0) for k in range(10)])
    distances = ((features[test][:, None, :] - centroids[None]) ** 2).sum(-1)
    accuracy = (distances.argmin(axis=1) == labels[test]).mean()
    assert accuracy < 0.16  # chance is 0.10


def test_every_identity_renders_and_has_a_unique_name() -> None:
    names = shapes.identity_names(shapes.NUM_IDENTITIES)
    assert len(set(names)) == shapes.NUM_IDENTITIES == 100 and names[:3] == ["disc", "square", "triangle"]
    images, labels = shapes.render(300, 100, 24, seed=0)
    assert np.bincount(labels).min() == 3
    spread = images.reshape(300, -1).astype(np.int16).std(axis=1)
    assert spread.min() > 5  # every image shows something beyond a flat background
    offset = shapes.identity_names(3, offset=99)
    assert offset == [names[99], names[0], names[1]]


def test_style_validation_and_seed_derivation() -> None:
    with pytest.raises(ValueError):
        shapes.SynthStyle(scale_range=(0.5, 0.2))
    with pytest.raises(ValueError):
        shapes.render(10, 101, 32, seed=0)
    assert shapes.derive_seed(0, "cifar10/train") == shapes.derive_seed(0, "cifar10/train")
    assert shapes.derive_seed(0, "cifar10/train") != shapes.derive_seed(0, "cifar10/test")


def test_save_grid(tmp_path: Path) -> None:
    path = shapes.save_grid(tmp_path / "grid.png", num_classes=4, per_class=3, size=16, zoom=2)
    assert Image.open(path).size == ((3 * 18 + 2) * 2, (4 * 18 + 2) * 2)


def test_ensure_synthetic_writes_markers_and_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = ensure_synthetic(tmp_path / "data", ["cifar10"], "tiny", seed=1)
    marker = read_marker(root, "cifar10")
    assert marker is not None and is_synthetic(root, "cifar10") and not is_synthetic(root, "imagenet")
    assert marker["scale"] == "tiny" and marker["seed"] == 1
    assert marker["generator_version"] == shapes.GENERATOR_VERSION
    assert marker["counts"] == dict(zip(("train", "test"), cifar.CIFAR10_SYNTH_COUNTS["tiny"], strict=True))
    assert DATASETS.get("cifar10").verify(root) == []
    before = (root / "cifar-10-batches-py" / "data_batch_1").read_bytes()

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("should have been cached")

    monkeypatch.setattr(cifar, "write_cifar10", fail)
    ensure_synthetic(root, ["cifar10"], "tiny", seed=1)  # cached: the writer is not called
    monkeypatch.undo()
    (root / "cifar-10-batches-py" / MARKER).unlink()  # incomplete -> regenerated, identically
    ensure_synthetic(root, ["cifar10"], "tiny", seed=1)
    assert is_synthetic(root, "cifar10")
    assert (root / "cifar-10-batches-py" / "data_batch_1").read_bytes() == before
    ensure_synthetic(root, ["cifar10"], "tiny", seed=2)  # other seed -> replaced
    assert read_marker(root, "cifar10")["seed"] == 2  # type: ignore[index]
    assert [p.name for p in root.iterdir() if p.name.startswith(TMP_PREFIX)] == []


def test_interrupted_generation_is_never_complete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "data"
    real_writer = cifar.write_cifar10

    def crash(*args: object, **kwargs: object) -> None:
        real_writer(*args, **kwargs)  # type: ignore[arg-type]
        raise KeyboardInterrupt  # killed after writing the files but before the marker

    monkeypatch.setattr(cifar, "write_cifar10", crash)
    with pytest.raises(KeyboardInterrupt):
        ensure_synthetic(root, ["cifar10"], "tiny")
    monkeypatch.undo()
    assert not (root / "cifar-10-batches-py").exists() and not is_synthetic(root, "cifar10")
    # a hard kill (no cleanup) leaves a temp dir behind: it is removed and the dataset generated
    leftover = root / f"{TMP_PREFIX}cifar10-999999" / "cifar-10-batches-py"
    leftover.mkdir(parents=True)
    (leftover / "data_batch_1").write_bytes(b"partial")
    ensure_synthetic(root, ["cifar10"], "tiny")
    assert is_synthetic(root, "cifar10") and not leftover.parent.exists()
    assert len(DATASETS.get("cifar10").load(root, "train")) == cifar.CIFAR10_SYNTH_COUNTS["tiny"][0]


def test_unmarked_data_outside_a_synthetic_root_is_never_replaced(tmp_path: Path) -> None:
    real = tmp_path / "cifar-10-batches-py"
    real.mkdir()
    (real / "data_batch_1").write_bytes(b"precious")
    with pytest.raises(DatasetError, match="refusing to replace"):
        ensure_synthetic(tmp_path, ["cifar10"], "tiny")
    assert (real / "data_batch_1").read_bytes() == b"precious"
    with pytest.raises(UnknownNameError, match="did you mean"):
        ensure_synthetic(tmp_path, ["cifar1O"], "tiny")
    with pytest.raises(DatasetError, match="scale"):
        ensure_synthetic(tmp_path, ["cifar10"], "huge")


def test_synthetic_imagenet_marker(synth_root: Path) -> None:
    marker = json.loads((synth_root / "imagenet" / MARKER).read_text())
    n_train, n_val = marker["counts"]["train"], marker["counts"]["val"]
    assert (n_train, n_val) == (300, 100) and marker["image_size"] == 40
    with Image.open(next((synth_root / "imagenet" / "train" / "n01440764").iterdir())) as image:
        assert image.size == (40, 40) and image.format == "JPEG"


def test_stand_ins_have_their_own_classes_and_styles(tmp_path: Path) -> None:
    # imagenet100 is a class subset of the ImageNet stand-in (synthetic_owner): see test_imagenet100.py
    classification = [n for n, i in DATASETS.items() if i.loader is not None and i.synthetic_owner is None]
    assert sorted(STYLES) == sorted(classification)  # dense stand-ins: test_voc_coco.py, test_seg_datasets.py
    assert len(set(STYLES.values())) == len(STYLES)  # every stand-in renders in its own style
    identities = {}
    for name, style in STYLES.items():
        count = DATASETS.get(name).synthetic_classes
        identities[name] = frozenset((style.class_offset + k) % shapes.NUM_IDENTITIES for k in range(count))
    pairs = [(a, b) for a in identities for b in identities if a < b and identities[a] == identities[b]]
    assert pairs == [("cifar10", "imagenet")]  # the original pair shares its 10 identities (not its style)
    assert identities["cifar100"] == frozenset(range(100))
    root = ensure_synthetic(tmp_path / "data", list(STYLES), "tiny")
    classes = {}
    for name in STYLES:
        info = DATASETS.get(name)
        assert 32 <= info.synthetic_image_size <= 48
        train = info.load(root, info.train_split)
        assert len(train.classes) == info.synthetic_classes
        assert set(train.labels.tolist()) == set(range(info.synthetic_classes))
        classes[name] = set(train.classes)
    for a in classes:
        for b in classes:
            assert a == b or classes[a] != classes[b]
