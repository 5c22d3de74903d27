"""CIFAR-10 reader/writer: exact round trip, agreement with torchvision's reader, errors, pickle safety."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar as tv_cifar

from core.errors import DatasetError
from tasks.datasets.base import ArrayImageDataset, eval_transform, load_uint8_tensor
from tasks.datasets.cifar import (
    CIFAR10_DIR,
    CIFAR10_TRAIN_FILES,
    load_cifar10,
    read_pickle,
    verify_cifar10,
    write_cifar10,
)
from tasks.datasets.registry import DATASETS

NAMES = ["plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _random_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n)


@pytest.fixture()
def written(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    train_x, train_y = _random_split(23, 0)
    test_x, test_y = _random_split(7, 1)
    write_cifar10(tmp_path, train_x, train_y, test_x, test_y, NAMES)
    return tmp_path, train_x, train_y, test_x, test_y


def test_round_trip_is_exact(written: tuple) -> None:
    root, train_x, train_y, test_x, test_y = written
    for split, images, labels in (("train", train_x, train_y), ("test", test_x, test_y)):
        ds = load_cifar10(root, split)
        assert np.array_equal(ds.images, images)
        assert ds.labels.dtype == np.int64 and np.array_equal(ds.labels, labels)
        assert ds.classes == tuple(NAMES) and len(ds) == len(images)
        image, label = ds[3]
        assert image.dtype == torch.uint8 and image.shape == (3, 32, 32)
        assert torch.equal(image, torch.from_numpy(images[3]).permute(2, 0, 1)) and label == labels[3]


def test_files_have_the_official_structure(written: tuple) -> None:
    root, train_x, _, _, _ = written
    folder = root / CIFAR10_DIR
    sizes = []
    for i, name in enumerate(CIFAR10_TRAIN_FILES):
        with open(folder / name, "rb") as f:
            entry = pickle.load(f, encoding="bytes")  # trusted: our own file
        assert set(entry) == {b"data", b"labels", b"filenames", b"batch_label"}
        assert entry[b"batch_label"] == f"training batch {i + 1} of 5".encode()
        data = entry[b"data"]
        assert data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072
        assert all(isinstance(x, int) for x in entry[b"labels"])
        assert all(isinstance(x, bytes) for x in entry[b"filenames"])
        sizes.append(len(data))
    assert sum(sizes) == 23 and max(sizes) - min(sizes) <= 1
    with open(folder / "data_batch_1", "rb") as f:
        first = pickle.load(f, encoding="bytes")[b"data"][0]
    for channel in range(3):  # R plane, G plane, B plane, each row-major
        assert np.array_equal(first[channel * 1024 : (channel + 1) * 1024], train_x[0, :, :, channel].ravel())
    with open(folder / "batches.meta", "rb") as f:
        meta = pickle.load(f, encoding="bytes")
    assert meta[b"label_names"] == [n.encode() for n in NAMES] and meta[b"num_vis"] == 3072
    assert meta[b"num_cases_per_batch"] == sizes[0]
    with open(folder / "test_batch", "rb") as f:
        assert pickle.load(f, encoding="latin1")["batch_label"] == "testing batch 1 of 1"  # Python 2 strings


@pytest.mark.parametrize("train", [True, False])
def test_matches_torchvision_reader(synth_root: Path, monkeypatch: pytest.MonkeyPatch, train: bool) -> None:
    monkeypatch.setattr(tv_cifar.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)
    reference = tv_cifar.CIFAR10(str(synth_root), train=train, download=False)
    ours = load_cifar10(synth_root, "train" if train else "test")
    assert np.array_equal(reference.data, ours.images)
    assert reference.targets == ours.labels.tolist()
    assert tuple(reference.classes) == ours.classes
    image, label = ours[5]
    assert torch.equal(image, torch.from_numpy(np.array(reference[5][0])).permute(2, 0, 1))
    assert label == reference[5][1]


def test_missing_dataset_names_path_and_how_to_prepare(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as info:
        load_cifar10(tmp_path, "train")
    message = str(info.value)
    assert str(tmp_path / CIFAR10_DIR) in message
    for hint in (
        "https://www.cs.toronto.edu/~kriz/cifar.html",
        "torchvision.datasets.CIFAR10",
        "bench data synth",
    ):
        assert hint in message
    with pytest.raises(DatasetError, match="bench data synth"):
        DATASETS.get("cifar10").load(tmp_path, "test")


def test_missing_batch_is_named(written: tuple) -> None:
    root = written[0]
    (root / CIFAR10_DIR / "data_batch_4").unlink()
    with pytest.raises(DatasetError, match="data_batch_4"):
        load_cifar10(root, "train")
    assert load_cifar10(root, "test")  # the other split is still fine
    assert any("data_batch_4" in problem for problem in verify_cifar10(root))


@pytest.mark.parametrize("damage", ["truncate", "garble"])
def test_damaged_pickle_names_the_file(written: tuple, damage: str) -> None:
    path = written[0] / CIFAR10_DIR / "data_batch_3"
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    else:
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(DatasetError, match=re.escape(str(path))):
        load_cifar10(written[0], "train")


class _Evil:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple:
        return (os.system, (self.command,))


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_malicious_pickle_is_refused_without_running(written: tuple, tmp_path: Path, protocol: int) -> None:
    sentinel = tmp_path / "pwned"
    path = written[0] / CIFAR10_DIR / "test_batch"
    path.write_bytes(pickle.dumps({b"data": _Evil(f"touch {sentinel}")}, protocol=protocol))
    with pytest.raises(DatasetError, match=r"refusing to unpickle (posix|os|nt)\.system"):
        load_cifar10(written[0], "test")
    assert not sentinel.exists()


def test_codecs_global_is_limited_to_latin1(tmp_path: Path) -> None:
    path = tmp_path / "batch"
    # _codecs.encode("abcd", "base64"): codecs beyond latin-1 (base64, zlib, ...) are refused
    path.write_bytes(b"\x80\x02c_codecs\nencode\nX\x04\x00\x00\x00abcdX\x06\x00\x00\x00base64\x86R.")
    with pytest.raises(DatasetError, match=r"refusing to unpickle _codecs\.encode"):
        read_pickle(path)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_reads_pickles_written_by_python3_numpy(tmp_path: Path, protocol: int) -> None:
    images, labels = _random_split(4, 2)
    rows = images.transpose(0, 3, 1, 2).reshape(4, 3072)
    entry = {b"data": rows, b"labels": [np.int64(x) for x in labels], b"batch_label": b"x", b"filenames": []}
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps(entry, protocol=protocol))  # numpy._core globals, _codecs.encode, scalars
    loaded = read_pickle(path)
    assert np.array_equal(loaded["data"], rows) and [int(x) for x in loaded["labels"]] == labels.tolist()


def test_eval_transform_and_bulk_loading(synth_root: Path) -> None:
    ds = DATASETS.get("cifar10").load(synth_root, "test", size=24, resize=28)
    assert isinstance(ds, ArrayImageDataset)
    images, labels = load_uint8_tensor(ds)
    assert images.shape == (len(ds), 3, 24, 24) and images.dtype == torch.uint8
    assert torch.equal(labels, torch.from_numpy(ds.labels))
    for i in (0, 17):  # the batched path equals the per-item path
        assert torch.equal(images[i], ds[i][0])
    raw = torch.from_numpy(ds.images[0]).permute(2, 0, 1).contiguous()
    assert eval_transform(raw, 32, 32) is raw  # native size: no-op
    assert verify_cifar10(synth_root) == []
