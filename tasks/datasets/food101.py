"""Food-101: loader, verifier, writer of the official layout, synthetic stand-in.

On-disk layout (as extracted from ``food-101.tar.gz``; what ``torchvision.datasets.Food101`` reads)::

    <root>/food-101/images/<class>/<id>.jpg        all images of a class, train and test mixed
    <root>/food-101/meta/train.json                {"<class>": ["<class>/<id>", ...], ...}  (train split)
    <root>/food-101/meta/test.json                 same for the test split (the test split)
    <root>/food-101/meta/classes.txt               one class name per line (sorted)
    <root>/food-101/meta/labels.txt                one human-readable name per line ("Apple pie")
    <root>/food-101/meta/{train,test}.txt          one "<class>/<id>" per line (same lists as the JSON)

Labels follow torchvision: classes are the *sorted* keys of the split's JSON, label = index; samples are
listed in JSON order (classes in key order, images in list order) and the image of entry ``c/i`` is
``images/c/i.jpg``.  The loaders read only the JSON; the verifier also checks ``classes.txt`` against it.

The synthetic stand-in (:func:`write_synthetic_food101`) renders :data:`FOOD101_SYNTH_CLASSES` shape
identities starting at :data:`FOOD101_STYLE` ``.class_offset`` (the outlined shapes) as 40 px JPEGs, with
Food-101's 3:1 train/test ratio and random numeric image ids, named like ``outline_disc``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

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

FOOD101_DIR = "food-101"
FOOD101_SPLITS = ("train", "test")
FOOD101_NUM_CLASSES = 101
FOOD101_PREPARE_HINT = (
    "download food-101.tar.gz from https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/ and extract "
    "it into <root> so that <root>/food-101/images and <root>/food-101/meta exist (or run "
    "torchvision.datasets.Food101(<root>, download=True)); "
    "`bench data synth` writes a synthetic stand-in in the same layout instead"
)
#: Synthetic stand-in: (train images, test images) per scale, classes, image side.
FOOD101_SYNTH_COUNTS = {"smoke": (2400, 800), "tiny": (200, 80)}
FOOD101_SYNTH_CLASSES = 20
FOOD101_SYNTH_SIZE = 40
#: Close-up dishes: a large object anywhere in any orientation, vivid colours, busy textured backgrounds
#: with crumbs; identities 20-39 (the outlined shapes).
FOOD101_STYLE = shapes.SynthStyle(
    scale_range=(0.32, 0.48),
    position_jitter=0.1,
    rotation=180.0,
    aspect_jitter=0.25,
    saturation_range=(0.45, 1.0),
    gradient_prob=0.3,
    texture_amplitude=0.08,
    texture_cells=6,
    pixel_noise=0.02,
    distractors=3,
    distractor_scale=(0.03, 0.07),
    class_offset=20,
)
_TITLE = "Food-101"


def read_split(root: Path | str, split: str) -> tuple[list[Sample], list[str]]:
    """``(samples, classes)`` of ``split`` as torchvision reads them (see the module docstring)."""
    if split not in FOOD101_SPLITS:
        raise DatasetError(f"{_TITLE} has splits 'train' and 'test', not {split!r}")
    base = Path(root) / FOOD101_DIR
    images = base / "images"
    if not images.is_dir():
        raise DatasetError(f"{_TITLE} incomplete: no directory {images}; {FOOD101_PREPARE_HINT}")
    listing = base / "meta" / f"{split}.json"
    metadata = read_json(listing, _TITLE, FOOD101_PREPARE_HINT)
    if not isinstance(metadata, dict) or not all(
        isinstance(entries, list) and all(isinstance(e, str) for e in entries)
        for entries in metadata.values()
    ):
        raise DatasetError(f"{listing}: expected a JSON object mapping class names to lists of strings")
    classes = sorted(metadata)
    index = {name: label for label, name in enumerate(classes)}
    folder = os.fspath(images)
    samples = [
        (os.path.join(folder, *f"{entry}.jpg".split("/")), index[name])
        for name, entries in metadata.items()
        for entry in entries
    ]
    return samples, classes


def load_food101(
    root: Path | str,
    split: str,
    size: int = 224,
    resize: int = 256,
    on_corrupt: OnCorrupt = "raise",
    scan_workers: int = 0,
) -> FolderImageDataset:
    """Food-101 ``split`` (``"train"`` or ``"test"``, the test split); every listed image must exist."""
    samples, classes = read_split(root, split)
    listing = Path(root) / FOOD101_DIR / "meta" / f"{split}.json"
    where = (_TITLE, listing, FOOD101_PREPARE_HINT)
    return listed_dataset(samples, classes, size, resize, on_corrupt, scan_workers, where)


def verify_food101(root: Path | str, check_images: bool = False) -> list[str]:
    """Problems with ``<root>/food-101``: missing directories/files, listed images missing on disk,
    entries filed under the wrong class, class lists that disagree or have the wrong size; with
    ``check_images`` also unreadable images."""
    base = Path(root) / FOOD101_DIR
    if not base.is_dir():
        return [f"{_TITLE}: no directory {base}; {FOOD101_PREPARE_HINT}"]
    problems = []
    splits: dict[str, tuple[list[Sample], list[str]]] = {}
    missing: dict[str, set[str]] = {}
    for split in FOOD101_SPLITS:
        try:
            splits[split] = read_split(root, split)
        except DatasetError as exc:
            if str(exc) not in problems:  # a missing images/ directory is reported once
                problems.append(str(exc))
            continue
        samples, classes = splits[split]
        listing = base / "meta" / f"{split}.json"
        absent = missing_files([path for path, _ in samples])
        missing[split] = set(absent)
        if absent:
            problems.append(missing_message(_TITLE, listing, absent, len(samples)))
        misfiled = [p for p, label in samples if os.path.basename(os.path.dirname(p)) != classes[label]]
        if misfiled:
            problems.append(
                f"{_TITLE}: {len(misfiled)} entries of {listing} name another class's folder, "
                f"e.g. {misfiled[0]}"
            )
    classes_txt = base / "meta" / "classes.txt"
    listed_classes = None
    if classes_txt.is_file():
        listed_classes = [line.strip() for line in classes_txt.read_text().splitlines() if line.strip()]
    else:
        problems.append(f"{_TITLE} incomplete: no file {classes_txt}")
    for split, (_, classes) in splits.items():
        listing = base / "meta" / f"{split}.json"
        problems += class_count_problem(
            _TITLE, listing, len(classes), FOOD101_NUM_CLASSES, FOOD101_SYNTH_CLASSES
        )
        if listed_classes is not None and listed_classes != classes:
            problems.append(f"{_TITLE}: {classes_txt} does not list the sorted classes of {listing}")
    if len(splits) == 2 and splits["train"][1] != splits["test"][1]:
        only = sorted(set(splits["train"][1]) ^ set(splits["test"][1]))
        problems.append(
            f"{_TITLE}: train.json and test.json classes differ ({len(only)} not in both: {only[:5]})"
        )
    if check_images:
        for split, (samples, _) in splits.items():  # missing files are reported above
            problems += corrupt_problem(_TITLE, split, [p for p, _ in samples if p not in missing[split]])
    return problems


def write_food101(
    root: Path | str,
    splits: Mapping[str, tuple[np.ndarray, Sequence[int] | np.ndarray]],
    class_names: Sequence[str],
    seed: int = 0,
    quality: int = 95,
    progress: bool = False,
) -> Path:
    """Write ``<root>/food-101`` in the official layout; returns that folder.

    ``splits`` maps ``"train"``/``"test"`` to ``(uint8 [N, H, W, 3] images, labels)`` with labels indexing
    ``class_names`` (names must not contain ``/``).  Image ids are distinct random numbers (``seed``), so a
    class folder mixes train and test images as in the real archive; JSON lists follow input order.
    """
    base = Path(root) / FOOD101_DIR
    rng = np.random.default_rng(seed)
    total = sum(len(images) for images, _ in splits.values())
    ids = rng.permutation(100000 + np.cumsum(rng.integers(1, 400, total)))  # distinct, 6-7 digits
    used = 0
    (base / "meta").mkdir(parents=True, exist_ok=True)
    for name in class_names:
        (base / "images" / name).mkdir(parents=True, exist_ok=True)
    for split, (images, labels) in splits.items():
        labels = np.asarray(labels, dtype=np.int64)
        entries = [f"{class_names[label]}/{ids[used + i]}" for i, label in enumerate(labels)]
        used += len(entries)
        paths = [base / "images" / f"{entry}.jpg" for entry in entries]
        write_jpegs(paths, images, quality, progress, desc=f"write food-101 {split}")
        grouped: dict[str, list[str]] = {name: [] for name in class_names}
        for entry, label in zip(entries, labels, strict=True):
            grouped[class_names[label]].append(entry)
        by_name = dict(sorted(grouped.items()))
        (base / "meta" / f"{split}.json").write_text(json.dumps(by_name))
        (base / "meta" / f"{split}.txt").write_text("".join(f"{e}\n" for es in by_name.values() for e in es))
    names = sorted(class_names)
    (base / "meta" / "classes.txt").write_text("".join(f"{name}\n" for name in names))
    labels_txt = "".join(f"{name.replace('_', ' ').capitalize()}\n" for name in names)
    (base / "meta" / "labels.txt").write_text(labels_txt)
    return base


def synthetic_class_names() -> list[str]:
    """Names of the stand-in's classes in render-label order (Food-101 style: ``outline_disc``)."""
    return [
        n.replace("-", "_") for n in shapes.identity_names(FOOD101_SYNTH_CLASSES, FOOD101_STYLE.class_offset)
    ]


def write_synthetic_food101(root: Path | str, seed: int, scale: str) -> None:
    """Render the Food-101 stand-in (see the module docstring) into ``<root>/food-101``; ``scale`` is a key of
    :data:`FOOD101_SYNTH_COUNTS`."""
    if scale not in FOOD101_SYNTH_COUNTS:
        raise DatasetError(f"unknown synthetic scale {scale!r}; choose from {sorted(FOOD101_SYNTH_COUNTS)}")
    splits = {}
    for split, count in zip(FOOD101_SPLITS, FOOD101_SYNTH_COUNTS[scale], strict=True):
        splits[split] = shapes.render(
            count,
            FOOD101_SYNTH_CLASSES,
            FOOD101_SYNTH_SIZE,
            shapes.derive_seed(seed, f"food101/{split}"),
            FOOD101_STYLE,
            progress=count >= 2000,
        )
    write_food101(root, splits, synthetic_class_names(), seed=shapes.derive_seed(seed, "food101/ids"))
