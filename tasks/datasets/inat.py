"""iNaturalist 2018: loader, verifier, writer of the competition release's layout, long-tailed stand-in.

On-disk layout (``train2018.json.tar.gz``, ``val2018.json.tar.gz`` and ``train_val2018.tar.gz`` extracted
into one folder)::

    <root>/inat2018/train2018.json     split "train"
    <root>/inat2018/val2018.json       split "val" (the test split: the competition's test set is unlabelled)
    <root>/inat2018/train_val2018/<supercategory>/<category_id>/<hash>.jpg   images of both splits

Each JSON is COCO-style: ``"images"`` ``[{"id", "file_name", "width", "height", ...}]`` with ``file_name``
relative to ``<root>/inat2018`` (``"train_val2018/Aves/2761/<hash>.jpg"``), ``"annotations"``
``[{"id", "image_id", "category_id"}]`` (one per image) and ``"categories"`` ``[{"id", "name",
"supercategory"}]`` (all 8,142 in both files).  Label = index of the image's ``category_id`` among the
sorted category ids (identity for the official 0..8141); class names are the categories' ``name``; samples
follow the order of ``"images"``.  The files are large (the train JSON is ~300 MB): they are parsed once
with :mod:`json` and mapped with dictionaries, O(N) in images and annotations.

The synthetic stand-in (:func:`write_synthetic_inat2018`) renders :data:`INAT2018_SYNTH_CLASSES` identities
starting at :data:`INAT2018_STYLE` ``.class_offset`` (checkered and dotted shapes) as 40 px JPEGs.  Like the
real data its train split is long-tailed (class sizes decay geometrically from ``head`` to ``tail``, in a
seeded order of classes) and its val split balanced; every class is present in both.  Category ids are
0..K-1 as in the release (so torchvision's directory-based ``INaturalist(version="2018")`` reads the image
tree too), but the JSON lists the categories by supercategory and name, not by id.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from core.errors import DatasetError
from tasks.datasets.base import FolderImageDataset, OnCorrupt, Sample
from tasks.datasets.filelist import (
    class_count_problem,
    corrupt_problem,
    listed_dataset,
    missing_files,
    missing_message,
    read_json,
    write_jpegs,
)
from tasks.datasets.synth import shapes

INAT2018_DIR = "inat2018"
INAT2018_SPLITS = ("train", "val")
INAT2018_IMAGES = "train_val2018"
INAT2018_NUM_CLASSES = 8142
INAT2018_PREPARE_HINT = (
    "download train_val2018.tar.gz, train2018.json.tar.gz and val2018.json.tar.gz of the iNaturalist 2018 "
    "competition (links at https://github.com/visipedia/inat_comp/tree/master/2018) and extract all three "
    "into <root>/inat2018, giving train2018.json, val2018.json and train_val2018/; "
    "`bench data synth` writes a synthetic stand-in in the same layout instead"
)


class TailScale(NamedTuple):
    """Stand-in sizes: train images of the largest and smallest class, val images per class."""

    head: int
    tail: int
    val_per_class: int


INAT2018_SYNTH_SCALES = {"smoke": TailScale(200, 10, 15), "tiny": TailScale(24, 2, 3)}
INAT2018_SYNTH_CLASSES = 40
INAT2018_SYNTH_SIZE = 40
#: Organisms in the wild: mid-sized subjects in any pose, muted natural colours with lower contrast,
#: fine-grained background texture and clutter; identities 60-99 (checkered and dotted shapes).
INAT2018_STYLE = shapes.SynthStyle(
    scale_range=(0.26, 0.42),
    position_jitter=0.2,
    rotation=90.0,
    aspect_jitter=0.2,
    saturation_range=(0.15, 0.8),
    value_range=(0.15, 0.95),
    min_contrast=0.3,
    texture_amplitude=0.1,
    texture_cells=8,
    distractors=3,
    distractor_scale=(0.03, 0.08),
    class_offset=60,
)
_TITLE = "iNaturalist 2018"


def split_file(root: Path | str, split: str) -> Path:
    """``<root>/inat2018/<split>2018.json``."""
    return Path(root) / INAT2018_DIR / f"{split}2018.json"


def read_split(root: Path | str, split: str) -> tuple[list[Sample], list[str]]:
    """``(samples, classes)`` of ``split`` (see the module docstring for the label mapping)."""
    if split not in INAT2018_SPLITS:
        raise DatasetError(f"{_TITLE} has splits 'train' and 'val', not {split!r}")
    base = Path(root) / INAT2018_DIR
    if not (base / INAT2018_IMAGES).is_dir():
        raise DatasetError(
            f"{_TITLE} incomplete: no directory {base / INAT2018_IMAGES}; {INAT2018_PREPARE_HINT}"
        )
    listing = split_file(root, split)
    data = read_json(listing, _TITLE, INAT2018_PREPARE_HINT)
    try:
        names = {c["id"]: str(c["name"]) for c in data["categories"]}
        category_of = {a["image_id"]: a["category_id"] for a in data["annotations"]}
        files = [(image["id"], image["file_name"]) for image in data["images"]]
    except (KeyError, TypeError) as exc:
        raise DatasetError(
            f"{listing}: not a COCO-style iNaturalist file ({type(exc).__name__}: {exc})"
        ) from None
    if len(names) != len(data["categories"]):
        raise DatasetError(f"{listing}: duplicate category ids")
    ids = sorted(names)
    index = {category: label for label, category in enumerate(ids)}
    unknown = {category for category in category_of.values() if category not in index}
    if unknown:
        raise DatasetError(
            f"{listing}: annotations use {len(unknown)} unknown category ids, e.g. {min(unknown)}"
        )
    unlabelled = [name for image_id, name in files if image_id not in category_of]
    if unlabelled:
        raise DatasetError(f"{listing}: {len(unlabelled)} images have no annotation, e.g. {unlabelled[0]}")
    folder = os.fspath(base)
    samples = [(os.path.join(folder, name), index[category_of[image_id]]) for image_id, name in files]
    return samples, [names[category] for category in ids]


def load_inat2018(
    root: Path | str,
    split: str,
    size: int = 224,
    resize: int = 256,
    on_corrupt: OnCorrupt = "raise",
    scan_workers: int = 0,
) -> FolderImageDataset:
    """iNaturalist 2018 ``split`` (``"train"`` or ``"val"``, the test split); all listed images must exist."""
    samples, classes = read_split(root, split)
    where = (_TITLE, split_file(root, split), INAT2018_PREPARE_HINT)
    return listed_dataset(samples, classes, size, resize, on_corrupt, scan_workers, where)


def verify_inat2018(root: Path | str, check_images: bool = False) -> list[str]:
    """Problems with ``<root>/inat2018``: missing files/directories, malformed JSON, listed images missing on
    disk, a wrong class count, train/val categories that differ, classes without images; with
    ``check_images`` also unreadable images."""
    base = Path(root) / INAT2018_DIR
    if not base.is_dir():
        return [f"{_TITLE}: no directory {base}; {INAT2018_PREPARE_HINT}"]
    problems: list[str] = []
    classes: dict[str, list[str]] = {}
    for split in INAT2018_SPLITS:
        try:
            samples, classes[split] = read_split(root, split)
        except DatasetError as exc:
            if str(exc) not in problems:  # a missing image directory is reported once
                problems.append(str(exc))
            continue
        listing = split_file(root, split)
        absent = missing_files([path for path, _ in samples])
        if absent:
            problems.append(missing_message(_TITLE, listing, absent, len(samples)))
        found = len(classes[split])
        problems += class_count_problem(_TITLE, listing, found, INAT2018_NUM_CLASSES, INAT2018_SYNTH_CLASSES)
        empty = found - len(np.unique(np.fromiter((label for _, label in samples), np.int64, len(samples))))
        if empty:
            problems.append(f"{_TITLE} {split}: {empty} of {found} categories have no images")
        if check_images:
            gone = set(absent)
            problems += corrupt_problem(_TITLE, split, [path for path, _ in samples if path not in gone])
    if len(classes) == 2 and classes["train"] != classes["val"]:
        problems.append(f"{_TITLE}: train2018.json and val2018.json define different categories")
    return problems


class Category(NamedTuple):
    """One iNaturalist category as written by :func:`write_inat2018`."""

    id: int
    name: str
    supercategory: str


def write_inat2018(
    root: Path | str,
    splits: Mapping[str, tuple[np.ndarray, Sequence[int] | np.ndarray]],
    categories: Sequence[Category],
    seed: int = 0,
    quality: int = 95,
    progress: bool = False,
) -> Path:
    """Write ``<root>/inat2018`` in the release layout; returns that folder.

    ``splits`` maps ``"train"``/``"val"`` to ``(uint8 [N, H, W, 3] images, labels)`` with labels indexing
    ``categories`` (written in the given order; loaded labels are ranks of the ids).  Image ids run on across
    splits; file names are hex digests of ``(seed, split, index)``.
    """
    base = Path(root) / INAT2018_DIR
    base.mkdir(parents=True, exist_ok=True)
    next_id = 0
    for split, (images, labels) in splits.items():
        labels = np.asarray(labels, dtype=np.int64)
        height, width = images.shape[1:3]
        entries, paths = [], []
        for i, label in enumerate(labels):
            category = categories[label]
            digest = hashlib.md5(f"{seed}/{split}/{i}".encode()).hexdigest()
            name = f"{INAT2018_IMAGES}/{category.supercategory}/{category.id}/{digest}.jpg"
            entries.append((next_id + i, name, category.id))
            paths.append(base / name)
        write_jpegs(paths, images, quality, progress, desc=f"write inat2018 {split}")
        doc = {
            "info": {"year": 2018, "description": f"iNaturalist 2018 layout, {split} split"},
            "images": [
                {"id": image_id, "file_name": name, "width": int(width), "height": int(height), "license": 0}
                for image_id, name, _ in entries
            ],
            "annotations": [
                {"id": image_id, "image_id": image_id, "category_id": category_id}
                for image_id, _, category_id in entries
            ],
            "categories": [c._asdict() for c in categories],
            "licenses": [{"id": 0, "name": "synthetic", "url": ""}],
        }
        split_file(root, split).write_text(json.dumps(doc))
        next_id += len(labels)
    return base


def long_tail_counts(num_classes: int, head: int, tail: int, rng: np.random.Generator) -> np.ndarray:
    """Class sizes decaying geometrically from ``head`` to ``tail``, assigned to classes in random order."""
    decay = (tail / head) ** (np.arange(num_classes) / max(num_classes - 1, 1))
    return rng.permutation(np.maximum(np.round(head * decay), 1).astype(np.int64))


def synthetic_categories() -> list[Category]:
    """The stand-in's categories in render-label order: id = label, names like ``Checker disc``,
    supercategory = the fill (``Checker``, ``Dots``)."""
    offset = INAT2018_STYLE.class_offset
    out = []
    for k, name in enumerate(shapes.identity_names(INAT2018_SYNTH_CLASSES, offset)):
        fill, _, shape = name.partition("-")
        out.append(Category(k, f"{fill.capitalize()} {shape}", fill.capitalize()))
    return out


def write_synthetic_inat2018(root: Path | str, seed: int, scale: str) -> None:
    """Render the long-tailed iNaturalist stand-in (see the module docstring) into ``<root>/inat2018``;
    ``scale`` is a key of :data:`INAT2018_SYNTH_SCALES`."""
    if scale not in INAT2018_SYNTH_SCALES:
        raise DatasetError(f"unknown synthetic scale {scale!r}; choose from {sorted(INAT2018_SYNTH_SCALES)}")
    head, tail, per_class = INAT2018_SYNTH_SCALES[scale]
    rng = np.random.default_rng(shapes.derive_seed(seed, "inat2018/labels"))
    classes = np.arange(INAT2018_SYNTH_CLASSES)
    counts = {
        "train": long_tail_counts(INAT2018_SYNTH_CLASSES, head, tail, rng),
        "val": np.full(INAT2018_SYNTH_CLASSES, per_class),
    }
    splits = {}
    for split in INAT2018_SPLITS:
        labels = rng.permutation(np.repeat(classes, counts[split]))
        images = shapes.render_labels(
            labels,
            INAT2018_SYNTH_SIZE,
            shapes.derive_seed(seed, f"inat2018/{split}"),
            INAT2018_STYLE,
            progress=len(labels) >= 2000,
        )
        splits[split] = (images, labels)
    categories = synthetic_categories()
    listed = sorted(categories, key=lambda c: (c.supercategory, c.name))  # file order != id order
    relabel = np.array([listed.index(c) for c in categories])
    splits = {split: (images, relabel[labels]) for split, (images, labels) in splits.items()}
    write_inat2018(root, splits, listed, seed=shapes.derive_seed(seed, "inat2018/names"))
