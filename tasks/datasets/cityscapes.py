"""Cityscapes (fine annotations) for semantic segmentation: layout, reader, verifier, synthetic stand-in.

On-disk layout (``leftImg8bit_trainvaltest.zip`` and ``gtFine_trainvaltest.zip`` extracted under
``<root>/cityscapes``; the ``*_labelTrainIds.png`` maps written by cityscapesScripts'
``createTrainIdLabelImgs`` or mmsegmentation's ``tools/dataset_converters/cityscapes.py``)::

    <root>/cityscapes/leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    <root>/cityscapes/gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelTrainIds.png

Label ids are the 19 train ids (:data:`CITYSCAPES_CLASSES`, 0 road .. 18 bicycle) and 255 (void: every
other Cityscapes label).  A split is every ``*_leftImg8bit.png`` below ``leftImg8bit/<split>`` (sorted by
path, as mmsegmentation's ``CityscapesDataset`` lists them) with the label of the same base name.
"""

from __future__ import annotations

import os
from pathlib import Path

from core.errors import DatasetError
from tasks.datasets.segmaps import SegSample, check_samples, missing_files, save_image, save_label_png
from tasks.datasets.synth import shapes
from tasks.datasets.synth.dense_scenes import SceneStyle, StuffClass, ThingClass, render_scenes

CITYSCAPES_DIR = "cityscapes"
CITYSCAPES_SPLITS = ("train", "val")
CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip
CITYSCAPES_IGNORE = 255
CITYSCAPES_VALID_IDS = frozenset([*range(len(CITYSCAPES_CLASSES)), CITYSCAPES_IGNORE])
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelTrainIds.png"
CITYSCAPES_PREPARE_HINT = (
    "download leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip from "
    "https://www.cityscapes-dataset.com "
    "and extract both into <root>/cityscapes, then write the *_gtFine_labelTrainIds.png maps with "
    "mmsegmentation's tools/dataset_converters/cityscapes.py <root>/cityscapes (or cityscapesScripts' "
    "createTrainIdLabelImgs); `bench data synth` writes a synthetic stand-in in the same layout instead"
)


def cityscapes_samples(root: Path | str, split: str) -> list[SegSample]:
    """The ``(image, label)`` pairs of ``split`` (``train`` or ``val``), sorted by image path."""
    if split not in CITYSCAPES_SPLITS:
        raise DatasetError(f"Cityscapes has splits {', '.join(CITYSCAPES_SPLITS)}; got {split!r}")
    base = Path(root) / CITYSCAPES_DIR
    image_dir = base / "leftImg8bit" / split
    if not image_dir.is_dir():
        raise DatasetError(f"Cityscapes {split}: no directory {image_dir}; {CITYSCAPES_PREPARE_HINT}")
    samples = []
    for dirpath, _, names in os.walk(image_dir, followlinks=True):
        for name in names:
            if name.endswith(IMAGE_SUFFIX):
                rel = Path(dirpath, name).relative_to(image_dir)
                label = base / "gtFine" / split / rel.parent / (name[: -len(IMAGE_SUFFIX)] + LABEL_SUFFIX)
                samples.append(SegSample(str(image_dir / rel), str(label)))
    return sorted(samples, key=lambda s: s.image)


def verify_cityscapes(root: Path | str, check_images: bool = False) -> list[str]:
    """Problems of ``<root>/cityscapes``: both splits hold images, each with its ``labelTrainIds`` map; with
    ``check_images`` every image decodes and every map has its image's size and ids in 0..18/255."""
    problems: list[str] = []
    splits = {}
    for split in CITYSCAPES_SPLITS:
        try:
            samples = cityscapes_samples(root, split)
        except DatasetError as exc:
            problems.append(str(exc))
            continue
        if not samples:
            problems.append(f"Cityscapes {split}: no *{IMAGE_SUFFIX} images below leftImg8bit/{split}")
        missing = missing_files(samples)
        if missing:
            problems.append(
                f"Cityscapes {split}: missing {', '.join(missing[:3])} (labelTrainIds maps are written by "
                f"tools/dataset_converters/cityscapes.py)"
            )
        splits[split] = samples
    if check_images and not problems:
        for split, samples in splits.items():
            problems += check_samples(samples, CITYSCAPES_VALID_IDS, decode_images=True, desc=split)
    return problems


def count_cityscapes(root: Path, split: str) -> int:
    return len(cityscapes_samples(root, split))


#: Stand-in: street scenes with the road at the bottom and the sky on top; unlabelled (255) patches.
CITYSCAPES_STYLE = SceneStyle(
    stuff=(
        StuffClass(10, "smooth"),  # sky
        StuffClass(2, "bricks"),  # building
        StuffClass(8, "noise"),  # vegetation
        StuffClass(CITYSCAPES_IGNORE, "checker"),  # unlabelled
        StuffClass(1, "dstripes"),  # sidewalk
        StuffClass(0, "hstripes"),  # road
    ),
    things=(ThingClass(11, "star", "stripes"), ThingClass(13, "hexagon", "checker")),  # person, car
    bands=(3, 4),
    max_things=3,
    thing_radius=(0.12, 0.22),
)
#: (train, val) images per scale and the cities they are spread over; images are 64 x 128 PNGs.
CITYSCAPES_SYNTH_COUNTS = {"smoke": (160, 60), "tiny": (8, 6)}
CITYSCAPES_SYNTH_CITIES = {"train": ("aachen", "bochum"), "val": ("frankfurt",)}
CITYSCAPES_SYNTH_SIZE = (64, 128)


def write_synthetic_cityscapes(root: Path | str, seed: int, scale: str) -> None:
    """Render the Cityscapes stand-in into ``<root>/cityscapes`` (frames numbered per city)."""
    if scale not in CITYSCAPES_SYNTH_COUNTS:
        raise DatasetError(
            f"unknown synthetic scale {scale!r}; choose from {sorted(CITYSCAPES_SYNTH_COUNTS)}"
        )
    base = Path(root) / CITYSCAPES_DIR
    for split, count in zip(CITYSCAPES_SPLITS, CITYSCAPES_SYNTH_COUNTS[scale], strict=True):
        images, labels = render_scenes(
            count, *CITYSCAPES_SYNTH_SIZE, shapes.derive_seed(seed, f"cityscapes/{split}"), CITYSCAPES_STYLE
        )
        cities = CITYSCAPES_SYNTH_CITIES[split]
        for k, (image, label) in enumerate(zip(images, labels, strict=True)):
            city = cities[k % len(cities)]
            stem = f"{city}_{k // len(cities):06d}_000019"
            save_image(base / "leftImg8bit" / split / city / f"{stem}{IMAGE_SUFFIX}", image)
            save_label_png(base / "gtFine" / split / city / f"{stem}{LABEL_SUFFIX}", label)
