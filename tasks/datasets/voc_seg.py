"""PASCAL VOC 2012 semantic segmentation with the SBD augmentation ("VOC12aug"): layout, reader, verifier,
writer and synthetic stand-in.

On-disk layout (``VOCtrainval_11-May-2012.tar`` extracted under ``<root>``, plus the SBD labels converted
by mmsegmentation's ``tools/dataset_converters/voc_aug.py``)::

    <root>/VOCdevkit/VOC2012/JPEGImages/<id>.jpg
    <root>/VOCdevkit/VOC2012/SegmentationClass/<id>.png       palette PNG: index = class id
    <root>/VOCdevkit/VOC2012/SegmentationClassAug/<id>.png    grayscale PNG (SBD labels)
    <root>/VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val,trainval,aug,trainaug}.txt

Class ids: 0 background, 1..20 the VOC classes (:data:`VOC_CLASSES`), 255 the void border (ignored).
Splits (as mmsegmentation's ``pascal_voc12_aug`` config reads them): ``train`` = ``train.txt`` with
``SegmentationClass`` labels, ``aug`` = ``aug.txt`` with ``SegmentationClassAug`` labels (training uses
both, concatenated: the 10,582 "trainaug" images of the real data), ``val`` = ``val.txt`` with
``SegmentationClass`` labels (1,449 images, the test split).

The converter's lists, which :func:`write_voc_segmentation` reproduces: with ``S`` the SBD ids,
``aug = S - (train + val)`` and ``trainaug = (train + S) - val``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.errors import DatasetError
from tasks.datasets.segmaps import (
    SegSample,
    check_samples,
    missing_files,
    read_id_list,
    save_image,
    save_label_png,
    write_id_list,
)
from tasks.datasets.synth import shapes
from tasks.datasets.synth.dense_scenes import SceneStyle, StuffClass, ThingClass, render_scenes

VOC2012_DIR = "VOCdevkit/VOC2012"
VOC_SPLITS = ("train", "aug", "val")
VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip
VOC_IGNORE = 255
VOC_VALID_IDS = frozenset([*range(len(VOC_CLASSES)), VOC_IGNORE])
#: split -> (id list file, label folder)
VOC_SPLIT_FILES = {
    "train": ("train.txt", "SegmentationClass"),
    "aug": ("aug.txt", "SegmentationClassAug"),
    "val": ("val.txt", "SegmentationClass"),
}
VOC12AUG_PREPARE_HINT = (
    "download VOCtrainval_11-May-2012.tar (http://host.robots.ox.ac.uk/pascal/VOC/voc2012/) and extract it "
    "into <root> (giving <root>/VOCdevkit/VOC2012), download the SBD release (benchmark.tgz) and run "
    "mmsegmentation's tools/dataset_converters/voc_aug.py <root>/VOCdevkit <sbd>/benchmark_RELEASE to write "
    "SegmentationClassAug and ImageSets/Segmentation/aug.txt; `bench data synth` writes a synthetic "
    "stand-in in the same layout instead"
)


def voc_palette() -> list[int]:
    """The 256-entry PASCAL VOC colour map as 768 ints (class ``i`` -> bit-interleaved RGB; 255 cream)."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette += [r, g, b]
    return palette


def write_voc_segmentation(
    voc2012_dir: Path, class_maps: dict[str, np.ndarray], train_ids: list[str], val_ids: list[str]
) -> None:
    """Write the VOC 2012 segmentation annotations of ``class_maps`` (id -> ``uint8 [H, W]``: 0 background,
    1..20 classes, 255 ignore) under ``voc2012_dir``.

    Writes ``SegmentationClass/<id>.png`` (palette PNG) for ``train_ids + val_ids``,
    ``SegmentationClassAug/<id>.png`` (grayscale PNG) for every id of ``class_maps`` (the SBD-converted
    labels), and ``ImageSets/Segmentation/{train,val,trainval,aug,trainaug}.txt``, where the ids of
    ``class_maps`` outside ``train_ids`` and ``val_ids`` play the SBD-only images: ``aug`` lists them and
    ``trainaug`` = ``train + aug`` (mmsegmentation's ``voc_aug`` conversion).  Images are not written.
    """
    train, val = list(train_ids), list(val_ids)
    if set(train) & set(val):
        raise ValueError(f"train and val ids overlap: {sorted(set(train) & set(val))[:5]}")
    unknown = [i for i in (*train, *val) if i not in class_maps]
    if unknown:
        raise ValueError(f"ids without a class map: {unknown[:5]}")
    for image_id, labels in class_maps.items():
        bad = sorted(set(np.unique(labels).tolist()) - VOC_VALID_IDS)
        if labels.dtype != np.uint8 or labels.ndim != 2 or bad:
            raise ValueError(f"class map {image_id}: need uint8 [H, W] with ids 0..20/255, got ids {bad}")
    palette = voc_palette()
    for image_id in (*train, *val):
        save_label_png(voc2012_dir / "SegmentationClass" / f"{image_id}.png", class_maps[image_id], palette)
    for image_id, labels in class_maps.items():
        save_label_png(voc2012_dir / "SegmentationClassAug" / f"{image_id}.png", labels)
    taken = set(train) | set(val)
    aug = [i for i in class_maps if i not in taken]
    sets = voc2012_dir / "ImageSets" / "Segmentation"
    for name, ids in {
        "train": train,
        "val": val,
        "trainval": train + val,
        "aug": aug,
        "trainaug": train + aug,
    }.items():
        write_id_list(sets / f"{name}.txt", ids)


def voc_samples(root: Path | str, split: str) -> list[SegSample]:
    """The ``(image, label)`` pairs of ``split`` (``train``, ``aug`` or ``val``) in list order."""
    if split not in VOC_SPLIT_FILES:
        raise DatasetError(f"VOC12aug has splits {', '.join(VOC_SPLITS)}; got {split!r}")
    voc = Path(root) / VOC2012_DIR
    list_file, label_dir = VOC_SPLIT_FILES[split]
    ids = read_id_list(voc / "ImageSets" / "Segmentation" / list_file)
    return [SegSample(str(voc / "JPEGImages" / f"{i}.jpg"), str(voc / label_dir / f"{i}.png")) for i in ids]


def verify_voc12aug(root: Path | str, check_images: bool = False) -> list[str]:
    """Problems of ``<root>/VOCdevkit/VOC2012`` as a VOC12aug copy: folders, split files, every listed
    image and label present, val disjoint from training; with ``check_images`` every image decodes and
    every label map has its image's size and ids in 0..20/255."""
    voc = Path(root) / VOC2012_DIR
    problems = [
        f"VOC2012: missing folder {voc / d}"
        for d in ("JPEGImages", "SegmentationClass", "SegmentationClassAug")
        if not (voc / d).is_dir()
    ]
    splits: dict[str, list[SegSample]] = {}
    for split in VOC_SPLITS:
        try:
            splits[split] = voc_samples(root, split)
        except DatasetError as exc:
            problems.append(str(exc))
    for split, samples in splits.items():
        if not samples:
            problems.append(f"VOC2012 {split}: {VOC_SPLIT_FILES[split][0]} lists no images")
        missing = missing_files(samples)
        if missing:
            problems.append(
                f"VOC2012 {split}: files listed by {VOC_SPLIT_FILES[split][0]} are missing: "
                f"{', '.join(missing[:3])}"
            )
    if "val" in splits:
        val = {Path(s.image).stem for s in splits["val"]}
        for split in ("train", "aug"):
            leaked = sorted(val & {Path(s.image).stem for s in splits.get(split, [])})
            if leaked:
                problems.append(f"VOC2012: {len(leaked)} val image(s) also in {split}, e.g. {leaked[0]}")
    if check_images and not problems:
        for split, samples in splits.items():
            problems += check_samples(samples, VOC_VALID_IDS, decode_images=True, desc=f"VOC2012 {split}")
    return problems


#: Stand-in classes: background (any texture) and five VOC classes, each a shape of the ImageNet
#: stand-in's identities (so pretraining on it can transfer) with a fill pattern of its own.
VOC_STYLE = SceneStyle(
    stuff=tuple(StuffClass(0, t) for t in ("smooth", "noise", "hstripes", "checker", "dots")),
    things=(
        ThingClass(1, "cross", "solid"),  # aeroplane
        ThingClass(3, "triangle", "stripes"),  # bird
        ThingClass(7, "square", "checker"),  # car
        ThingClass(8, "star", "dots"),  # cat
        ThingClass(15, "disc", "rings"),  # person
    ),
    bands=(1, 2),
    max_things=3,
    min_things=1,
    thing_radius=(0.16, 0.3),
    boundary_ignore=1.0,
)
#: (train, aug, val) images per synthetic scale; images are 64 x 80 (H x W) JPEGs.
VOC_SYNTH_COUNTS = {"smoke": (120, 240, 100), "tiny": (12, 12, 8)}
VOC_SYNTH_SIZE = (64, 80)


def write_synthetic_voc12aug(root: Path | str, seed: int, scale: str) -> None:
    """Render the VOC12aug stand-in into ``<root>/VOCdevkit/VOC2012`` (images ``2012_9<k:05d>``, JPEG quality
    95; ids apart from the detection stand-in's ``2012_<k:06d>`` in the same tree, see
    :func:`tasks.datasets.voc.write_synthetic_voc`); annotations through :func:`write_voc_segmentation`."""
    if scale not in VOC_SYNTH_COUNTS:
        raise DatasetError(f"unknown synthetic scale {scale!r}; choose from {sorted(VOC_SYNTH_COUNTS)}")
    voc = Path(root) / VOC2012_DIR
    counts = dict(zip(VOC_SPLITS, VOC_SYNTH_COUNTS[scale], strict=True))
    class_maps: dict[str, np.ndarray] = {}
    ids: dict[str, list[str]] = {}
    start = 0
    for split, count in counts.items():
        images, labels = render_scenes(
            count, *VOC_SYNTH_SIZE, shapes.derive_seed(seed, f"voc12aug/{split}"), VOC_STYLE
        )
        ids[split] = [f"2012_9{start + k:05d}" for k in range(count)]
        start += count
        for image_id, image, label in zip(ids[split], images, labels, strict=True):
            save_image(voc / "JPEGImages" / f"{image_id}.jpg", image)
            class_maps[image_id] = label
    write_voc_segmentation(voc, class_maps, ids["train"], ids["val"])


def count_voc12aug(root: Path, split: str) -> int:
    """Number of images listed for ``split``."""
    return len(voc_samples(root, split))
