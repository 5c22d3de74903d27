"""ADE20K (SceneParsing, ADEChallengeData2016): layout, reader, verifier, synthetic stand-in.

On-disk layout (``ADEChallengeData2016.zip`` extracted under ``<root>/ade``)::

    <root>/ade/ADEChallengeData2016/images/{training,validation}/ADE_{train,val}_<8 digits>.jpg
    <root>/ade/ADEChallengeData2016/annotations/{training,validation}/ADE_{train,val}_<8 digits>.png

Annotations hold 0 ("other", ignored) and the 150 classes as 1..150; training and evaluation use
``reduce_zero_label`` (class ``k`` -> ``k - 1``, 0 -> 255 ignored), so models predict 150 classes.  Splits
``train`` / ``val`` are every ``.jpg`` below ``images/training`` / ``images/validation`` (sorted), each with
the ``.png`` annotation of the same name (mmsegmentation's ``ADE20KDataset``).
"""

from __future__ import annotations

import os
from pathlib import Path

from core.errors import DatasetError
from tasks.datasets.segmaps import SegSample, check_samples, missing_files, save_image, save_label_png
from tasks.datasets.synth import shapes
from tasks.datasets.synth.dense_scenes import SceneStyle, StuffClass, ThingClass, render_scenes

ADE20K_DIR = "ade/ADEChallengeData2016"
ADE20K_SPLITS = ("train", "val")
ADE20K_FOLDERS = {"train": "training", "val": "validation"}
ADE20K_NUM_CLASSES = 150
ADE20K_VALID_IDS = frozenset(range(ADE20K_NUM_CLASSES + 1))
ADE20K_PREPARE_HINT = (
    "download ADEChallengeData2016.zip (http://data.csail.mit.edu/places/ADEchallenge/"
    "ADEChallengeData2016.zip) and extract it into <root>/ade; `bench data synth` writes a synthetic "
    "stand-in in the same layout instead"
)


def ade20k_samples(root: Path | str, split: str) -> list[SegSample]:
    """The ``(image, annotation)`` pairs of ``split`` (``train`` or ``val``), sorted by image path."""
    if split not in ADE20K_FOLDERS:
        raise DatasetError(f"ADE20K has splits {', '.join(ADE20K_SPLITS)}; got {split!r}")
    base = Path(root) / ADE20K_DIR
    image_dir = base / "images" / ADE20K_FOLDERS[split]
    if not image_dir.is_dir():
        raise DatasetError(f"ADE20K {split}: no directory {image_dir}; {ADE20K_PREPARE_HINT}")
    label_dir = base / "annotations" / ADE20K_FOLDERS[split]
    samples = []
    for dirpath, _, names in os.walk(image_dir, followlinks=True):
        for name in names:
            if name.endswith(".jpg"):
                rel = Path(dirpath, name).relative_to(image_dir)
                samples.append(SegSample(str(image_dir / rel), str(label_dir / rel.with_suffix(".png"))))
    return sorted(samples, key=lambda s: s.image)


def verify_ade20k(root: Path | str, check_images: bool = False) -> list[str]:
    """Problems of ``<root>/ade/ADEChallengeData2016``: both splits hold images with annotations; with
    ``check_images`` every image decodes and every annotation has its image's size and ids in 0..150."""
    problems: list[str] = []
    splits = {}
    for split in ADE20K_SPLITS:
        try:
            samples = ade20k_samples(root, split)
        except DatasetError as exc:
            problems.append(str(exc))
            continue
        if not samples:
            problems.append(f"ADE20K {split}: no .jpg images below images/{ADE20K_FOLDERS[split]}")
        missing = missing_files(samples)
        if missing:
            problems.append(f"ADE20K {split}: missing {', '.join(missing[:3])}")
        splits[split] = samples
    if check_images and not problems:
        for split, samples in splits.items():
            problems += check_samples(samples, ADE20K_VALID_IDS, decode_images=True, desc=split)
    return problems


def count_ade20k(root: Path, split: str) -> int:
    return len(ade20k_samples(root, split))


#: Stand-in: indoor/outdoor scenes over eight ADE classes plus "other" (0, ignored).
ADE20K_STYLE = SceneStyle(
    stuff=(
        StuffClass(3, "smooth"),  # sky
        StuffClass(6, "checker"),  # ceiling
        StuffClass(2, "bricks"),  # building
        StuffClass(1, "vstripes"),  # wall
        StuffClass(5, "noise"),  # tree
        StuffClass(0, "dots"),  # other (ignored)
        StuffClass(4, "dstripes"),  # floor
        StuffClass(7, "hstripes"),  # road
    ),
    things=(  # person, car, chair
        ThingClass(13, "heart", "dots"),
        ThingClass(21, "arrow", "stripes"),
        ThingClass(20, "ring", "solid"),
    ),
    bands=(2, 3),
    max_things=3,
    thing_radius=(0.12, 0.24),
    ignore_label=0,
)
#: (train, val) images per scale; images are 64 x 64 JPEGs.
ADE20K_SYNTH_COUNTS = {"smoke": (240, 100), "tiny": (10, 8)}
ADE20K_SYNTH_SIZE = (64, 64)


def write_synthetic_ade20k(root: Path | str, seed: int, scale: str) -> None:
    """Render the ADE20K stand-in into ``<root>/ade/ADEChallengeData2016``."""
    if scale not in ADE20K_SYNTH_COUNTS:
        raise DatasetError(f"unknown synthetic scale {scale!r}; choose from {sorted(ADE20K_SYNTH_COUNTS)}")
    base = Path(root) / ADE20K_DIR
    for split, count in zip(ADE20K_SPLITS, ADE20K_SYNTH_COUNTS[scale], strict=True):
        images, labels = render_scenes(
            count, *ADE20K_SYNTH_SIZE, shapes.derive_seed(seed, f"ade20k/{split}"), ADE20K_STYLE
        )
        folder = ADE20K_FOLDERS[split]
        for k, (image, label) in enumerate(zip(images, labels, strict=True)):
            stem = f"ADE_{split}_{k + 1:08d}"
            save_image(base / "images" / folder / f"{stem}.jpg", image)
            save_label_png(base / "annotations" / folder / f"{stem}.png", label)
