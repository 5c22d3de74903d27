"""Segmentation layouts: scene renderer, VOC annotation writer, readers, verifiers, mmseg's datasets."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.errors import DatasetError
from tasks.datasets import ade20k, cityscapes, voc_seg
from tasks.datasets.registry import DATASETS
from tasks.datasets.segmaps import SegSample, check_samples, read_label_map
from tasks.datasets.synth import dense_scenes as scenes
from tasks.datasets.synth.writer import ensure_synthetic, read_marker

SEG_DATASETS = ("voc12aug", "cityscapes", "ade20k")
STYLES = {
    "voc12aug": voc_seg.VOC_STYLE,
    "cityscapes": cityscapes.CITYSCAPES_STYLE,
    "ade20k": ade20k.ADE20K_STYLE,
}
SAMPLES = {
    "voc12aug": voc_seg.voc_samples,
    "cityscapes": cityscapes.cityscapes_samples,
    "ade20k": ade20k.ade20k_samples,
}


@pytest.fixture(scope="module")
def seg_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny stand-ins of the three segmentation datasets (read-only for tests)."""
    return ensure_synthetic(tmp_path_factory.mktemp("seg"), list(SEG_DATASETS), "tiny")


@pytest.fixture
def copy_root(seg_root: Path, tmp_path: Path) -> Path:
    """A writable copy of the tiny stand-ins."""
    root = tmp_path / "root"
    shutil.copytree(seg_root, root)
    return root


@pytest.mark.parametrize("name", SEG_DATASETS)
def test_scenes_are_deterministic_and_use_the_style_labels(name: str) -> None:
    style = STYLES[name]
    images, labels = scenes.render_scenes(40, 48, 64, seed=3, style=style)
    again, labels_again = scenes.render_scenes(40, 48, 64, seed=3, style=style)
    assert images.shape == (40, 48, 64, 3) and labels.shape == (40, 48, 64)
    assert images.dtype == labels.dtype == np.uint8
    assert images.tobytes() == again.tobytes() and labels.tobytes() == labels_again.tobytes()
    present = set(np.unique(labels).tolist())
    assert present <= set(style.labels)
    things = {t.label for t in style.things}
    assert present & things, "objects are drawn"
    stuff = {c.label for c in style.stuff} - {style.ignore_label}
    assert len(present & stuff) == min(2, len(stuff)) or len(present & stuff) > 2, "stuff classes appear"


def test_scene_colour_does_not_give_the_class_away() -> None:
    """Per-pixel colour alone predicts the class barely better than the majority class."""
    images, labels = scenes.render_scenes(200, 32, 32, seed=0, style=voc_seg.VOC_STYLE)
    rgb = images.reshape(-1, 3).astype(np.float64) / 255
    lab = labels.reshape(-1)
    keep = lab != 255
    rgb, lab = rgb[keep], lab[keep]
    half = len(lab) // 2
    classes = np.unique(lab)
    centroids = np.stack([rgb[:half][lab[:half] == c].mean(0) for c in classes])
    pred = classes[((rgb[half:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)]
    per_class_acc = [(pred[lab[half:] == c] == c).mean() for c in classes]
    assert np.mean(per_class_acc) < 0.35  # chance for 6 classes is 0.17


def test_voc_palette_matches_the_devkit_colour_map() -> None:
    palette = np.array(voc_seg.voc_palette()).reshape(256, 3)
    assert palette[0].tolist() == [0, 0, 0]
    assert palette[1].tolist() == [128, 0, 0]  # aeroplane
    assert palette[15].tolist() == [192, 128, 128]  # person
    assert palette[255].tolist() == [224, 224, 192]  # void border


def test_write_voc_segmentation(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    maps = {f"2012_{k:06d}": rng.choice([0, 3, 15, 255], size=(6, 9)).astype(np.uint8) for k in range(7)}
    ids = list(maps)
    voc = tmp_path / "VOC2012"
    voc_seg.write_voc_segmentation(voc, maps, ids[:2], ids[2:4])
    sets = voc / "ImageSets" / "Segmentation"
    read = {
        name: (sets / f"{name}.txt").read_text().split()
        for name in ("train", "val", "trainval", "aug", "trainaug")
    }
    assert read["train"] == ids[:2] and read["val"] == ids[2:4] and read["trainval"] == ids[:4]
    assert read["aug"] == ids[4:] and read["trainaug"] == ids[:2] + ids[4:]
    with Image.open(voc / "SegmentationClass" / f"{ids[0]}.png") as img:
        assert img.mode == "P" and img.getpalette()[:6] == [0, 0, 0, 128, 0, 0]
        assert np.array_equal(np.asarray(img), maps[ids[0]])
    assert not (voc / "SegmentationClass" / f"{ids[5]}.png").exists()  # SBD-only ids: Aug labels only
    for image_id in ids:
        with Image.open(voc / "SegmentationClassAug" / f"{image_id}.png") as img:
            assert img.mode == "L" and np.array_equal(np.asarray(img), maps[image_id])
    with pytest.raises(ValueError, match="overlap"):
        voc_seg.write_voc_segmentation(voc, maps, ids[:2], ids[1:3])
    with pytest.raises(ValueError, match="ids 0..20"):
        voc_seg.write_voc_segmentation(voc, {"x": np.full((2, 2), 21, np.uint8)}, ["x"], [])


@pytest.mark.parametrize("name", SEG_DATASETS)
def test_stand_ins_verify_and_count(seg_root: Path, name: str) -> None:
    info = DATASETS.get(name)
    assert info.verify(seg_root, check_images=True) == []
    marker = read_marker(seg_root, name)
    assert marker is not None and marker["generator_version"] == info.generator_version
    assert info.generator_version % 1000 == scenes.SCENES_VERSION  # the dense-scene renderer's version
    for split in info.splits:
        counted = marker["counts"][split] if info.synthetic_owner is None else info.count(seg_root, split)
        assert counted == len(SAMPLES[name](seg_root, split)) > 0
    with pytest.raises(DatasetError, match="not an image-classification dataset"):
        info.load(seg_root, info.test_split)


def test_voc_splits_read_their_label_folders(seg_root: Path) -> None:
    train, aug, val = (voc_seg.voc_samples(seg_root, s) for s in ("train", "aug", "val"))
    assert all("/SegmentationClass/" in s.label for s in train + val)
    assert all("/SegmentationClassAug/" in s.label for s in aug)
    stems = [{Path(s.image).stem for s in split} for split in (train, aug, val)]
    assert not (stems[0] & stems[2]) and not (stems[1] & stems[2]) and not (stems[0] & stems[1])


def _first_label(root: Path, name: str) -> SegSample:
    return SAMPLES[name](root, DATASETS.get(name).test_split)[0]


@pytest.mark.parametrize("name", SEG_DATASETS)
def test_label_of_the_wrong_size_is_reported(copy_root: Path, name: str) -> None:
    sample = _first_label(copy_root, name)
    labels = read_label_map(sample.label)
    Image.fromarray(labels[:-3]).save(sample.label)
    (problem,) = [p for p in DATASETS.get(name).verify(copy_root, check_images=True) if sample.label in p]
    assert "but its image" in problem and f"{labels.shape[1]}x{labels.shape[0] - 3}" in problem


@pytest.mark.parametrize("name", SEG_DATASETS)
def test_out_of_range_ids_are_reported(copy_root: Path, name: str) -> None:
    sample = _first_label(copy_root, name)
    labels = read_label_map(sample.label).copy()
    labels[0, 0] = 200
    Image.fromarray(labels).save(sample.label)
    problems = DATASETS.get(name).verify(copy_root, check_images=True)
    assert any(sample.label in p and "[200]" in p and "outside the valid ids" in p for p in problems)


def test_rgb_label_map_is_reported(copy_root: Path) -> None:
    sample = _first_label(copy_root, "cityscapes")
    labels = read_label_map(sample.label)
    Image.fromarray(np.stack([labels] * 3, -1)).save(sample.label)
    assert check_samples([sample], cityscapes.CITYSCAPES_VALID_IDS) == [
        f"label map {sample.label} must be a single-channel 8-bit PNG (mode L or P), got mode RGB"
    ]


def test_split_file_naming_an_absent_image_is_reported(copy_root: Path) -> None:
    val = copy_root / voc_seg.VOC2012_DIR / "ImageSets" / "Segmentation" / "val.txt"
    val.write_text(val.read_text() + "2012_999999\n")
    problems = DATASETS.get("voc12aug").verify(copy_root)
    assert any("val.txt are missing" in p and "2012_999999.jpg" in p for p in problems)


def test_missing_labels_and_datasets_are_reported(copy_root: Path, tmp_path: Path) -> None:
    sample = cityscapes.cityscapes_samples(copy_root, "train")[0]
    Path(sample.label).unlink()
    assert any(sample.label in p for p in DATASETS.get("cityscapes").verify(copy_root))
    for name in SEG_DATASETS:
        (problem,) = DATASETS.get(name).verify(tmp_path / "empty")
        assert "no directory" in problem


@pytest.mark.parametrize("name", SEG_DATASETS)
def test_mmseg_dataset_classes_read_the_stand_ins(seg_root: Path, name: str) -> None:
    """mmsegmentation's own dataset classes list the same files and load the same label maps."""
    pytest.importorskip("mmseg")
    from tasks.segmentation.mmseg_backend import load_mmseg
    from tasks.segmentation.protocols import DATASETS as SEG

    load_mmseg("test")
    from mmengine.registry import DefaultScope
    from mmseg.registry import DATASETS as MMSEG_DATASETS

    ds = SEG[name]
    image_dir, label_dir, ann_file = ds.test_part
    cfg = dict(
        type=ds.mmseg_type,
        data_root=str(DATASETS.get(name).path(seg_root)),
        data_prefix=dict(img_path=image_dir, seg_map_path=label_dir),
        reduce_zero_label=ds.reduce_zero_label,
        pipeline=[dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"), dict(type="PackSegInputs")],
    )
    if ann_file:
        cfg["ann_file"] = ann_file
    with DefaultScope.overwrite_default_scope("mmseg"):
        dataset = MMSEG_DATASETS.build(cfg)
        item = dataset[1]
    ours = SAMPLES[name](seg_root, ds.test_split)
    assert [d["img_path"] for d in dataset.load_data_list()] == [s.image for s in ours]
    assert [d["seg_map_path"] for d in dataset.load_data_list()] == [s.label for s in ours]
    expected = read_label_map(ours[1].label).astype(np.int64)
    if ds.reduce_zero_label:  # ADE20K: 0 ("other") -> 255, k -> k - 1
        expected = np.where(expected == 0, 255, expected - 1)
    assert np.array_equal(item["data_samples"].gt_sem_seg.data[0].numpy(), expected)
    assert tuple(item["inputs"].shape[1:]) == expected.shape
    assert len(dataset.metainfo["classes"]) == ds.num_classes
