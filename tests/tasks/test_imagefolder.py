"""ImageFolder scanning/loading: torchvision parity, writer round trip, missing data, corrupt images."""

from __future__ import annotations

import gc
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
from tasks.datasets.imagefolder import (
    IMAGENET_DIR,
    load_imagenet,
    scan_image_folder,
    synthetic_wnids,
    verify_imagenet,
    write_image_folder,
)
from tasks.datasets.registry import DATASETS
from tasks.datasets.synth import shapes


def _images(n: int, size: int = 20, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.fixture()
def imagenet_copy(synth_root: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the tiny synthetic ImageNet tree."""
    shutil.copytree(synth_root / IMAGENET_DIR, tmp_path / IMAGENET_DIR)
    return tmp_path


@pytest.mark.parametrize("split", ["train", "val"])
def test_scan_matches_torchvision_on_synthetic_imagenet(synth_root: Path, split: str) -> None:
    folder = synth_root / IMAGENET_DIR / split
    samples, classes = scan_image_folder(folder)
    reference = tvd.ImageFolder(str(folder))
    assert samples == reference.samples
    assert {name: i for i, name in enumerate(classes)} == reference.class_to_idx
    assert classes == synthetic_wnids(10)


def test_scan_matches_torchvision_on_an_irregular_tree(tmp_path: Path) -> None:
    image = Image.fromarray(_images(1)[0])
    for rel in ["b/x.png", "b/sub/y.PNG", "b/sub/deeper/z.jpeg", "a/2.bmp", "a/10.bmp", "c/k.webp"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        image.save(tmp_path / rel)
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    (tmp_path / "stray.png").write_bytes(b"")  # files at the top level are not classes
    samples, classes = scan_image_folder(tmp_path)
    reference = tvd.ImageFolder(str(tmp_path))
    assert samples == reference.samples and classes == reference.classes


def test_png_round_trip_is_exact_and_jpeg_is_close(tmp_path: Path) -> None:
    images, labels, names = _images(12, size=40), np.arange(12) % 3, ["n1", "n2", "n3"]
    write_image_folder(tmp_path / "png", images, labels, names, ext=".png")
    ds = FolderImageDataset(*scan_image_folder(tmp_path / "png"), size=40, resize=40)
    order = np.argsort(labels, kind="stable")  # files are grouped by class, in input order within a class
    assert np.array_equal(ds.labels, labels[order])
    decoded, _ = load_uint8_tensor(ds)
    assert torch.equal(decoded, torch.from_numpy(images[order]).permute(0, 3, 1, 2))
    write_image_folder(tmp_path / "jpeg", images, labels, names)
    samples, _ = scan_image_folder(tmp_path / "jpeg")
    assert Path(samples[0][0]).name == "n1_000000.JPEG"
    natural, _ = shapes.render(12, 3, 40, seed=0)  # JPEG-friendly content
    write_image_folder(tmp_path / "natural", natural, labels, names, quality=95)
    decoded, _ = load_uint8_tensor(FolderImageDataset(*scan_image_folder(tmp_path / "natural"), 40, 40))
    error = (decoded.float() - torch.from_numpy(natural[order]).permute(0, 3, 1, 2).float()).abs().mean()
    assert error < 6  # q95 with 4:2:0 chroma drops the pixel noise


def test_eval_transform_on_folder_images(synth_root: Path) -> None:
    ds = load_imagenet(synth_root, "val", size=32, resize=36)
    image, label = ds[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8 and label == ds.labels[0]
    native = load_imagenet(synth_root, "val", size=40, resize=40)[0][0]
    reference = torch.from_numpy(np.array(Image.open(ds.samples[0][0]).convert("RGB"))).permute(2, 0, 1)
    assert torch.equal(native, reference)
    assert DATASETS.get("imagenet").load(synth_root, "train", size=32).resize == 37  # keeps 256/224


def test_missing_or_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as info:
        load_imagenet(tmp_path, "train")
    message = str(info.value)
    assert str(tmp_path / IMAGENET_DIR / "train") in message
    assert "image-net.org" in message and "valprep" in message and "bench data synth" in message
    (tmp_path / IMAGENET_DIR / "val" / "n01").mkdir(parents=True)
    (tmp_path / IMAGENET_DIR / "val" / "n02").mkdir()
    Image.fromarray(_images(1)[0]).save(tmp_path / IMAGENET_DIR / "val" / "n01" / "a.JPEG")
    with pytest.raises(DatasetError, match="n02"):
        load_imagenet(tmp_path, "val")
    problems = DATASETS.get("imagenet").verify(tmp_path)
    assert any("train" in p for p in problems) and any("n02" in p for p in problems)


def _corrupt(root: Path) -> str:
    """Overwrite one val image with garbage and truncate another; return the garbage file's path."""
    samples, _ = scan_image_folder(root / IMAGENET_DIR / "val")
    garbage, truncated = Path(samples[7][0]), Path(samples[30][0])
    garbage.write_bytes(b"this is not a JPEG" * 10)
    truncated.write_bytes(truncated.read_bytes()[:300])
    return str(garbage)


def test_corrupt_image_raises_with_its_path(imagenet_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # After a worker error, PyTorch waits one status-check interval (5 s) for the worker to exit; shorten it.
    monkeypatch.setattr(torch.utils.data._utils, "MP_STATUS_CHECK_INTERVAL", 0.1, raising=False)
    monkeypatch.setattr(torch.utils.data._utils.worker, "MP_STATUS_CHECK_INTERVAL", 0.1, raising=False)
    bad = _corrupt(imagenet_copy)
    ds = load_imagenet(imagenet_copy, "val", size=40, resize=40)
    assert ds[0][0].shape == (3, 40, 40)  # lazy: other images still load
    with pytest.raises(DatasetError, match=re.escape(bad)):
        ds[7]
    with pytest.raises(DatasetError, match=re.escape(bad)):  # re-raised from a DataLoader worker process
        load_uint8_tensor(ds, num_workers=1)
    gc.collect()  # shut the worker down while the short interval is patched in


def test_corrupt_images_are_skipped_and_counted(imagenet_copy: Path) -> None:
    bad = _corrupt(imagenet_copy)
    full = load_imagenet(imagenet_copy, "val", size=40, resize=40)
    ds = DATASETS.get("imagenet").load(imagenet_copy, "val", size=40, resize=40, on_corrupt="skip")
    assert isinstance(ds, FolderImageDataset)
    assert len(ds.skipped) == 2 and ds.skipped[0] == bad and len(ds) == len(full) - 2
    kept = [s for s in full.samples if s[0] not in ds.skipped]
    assert ds.samples == kept and ds.labels.tolist() == [label for _, label in kept]
    images, labels = load_uint8_tensor(ds)
    assert images.shape == (len(full) - 2, 3, 40, 40) and len(labels) == len(full) - 2
    problems = DATASETS.get("imagenet").verify(imagenet_copy, check_images=True)
    assert len(problems) == 1 and "2 unreadable" in problems[0] and bad in problems[0]
    assert verify_imagenet(imagenet_copy) == []  # layout alone is fine


def test_verify_detects_class_mismatch(imagenet_copy: Path) -> None:
    shutil.rmtree(imagenet_copy / IMAGENET_DIR / "val" / synthetic_wnids()[3])
    problems = verify_imagenet(imagenet_copy)
    assert len(problems) == 1 and synthetic_wnids()[3] in problems[0]
