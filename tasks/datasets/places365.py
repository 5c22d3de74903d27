"""Places365-Standard: loader, verifier, writer of the official layout, synthetic stand-in.

On-disk layout (the extracted archives, as ``torchvision.datasets.Places365(<root>/places365)`` reads
them)::

    <root>/places365/categories_places365.txt      "/a/airfield 0" per line: category, label
    <root>/places365/places365_train_standard.txt  "/a/airfield/00000001.jpg 0" per line   (split "train")
    <root>/places365/places365_val.txt             "Places365_val_00000001.jpg 165" per line (split "val")
    <root>/places365/data_256_standard/a/airfield/00000001.jpg    train images, small variant (256x256)
    <root>/places365/val_256/Places365_val_00000001.jpg           val images, small variant
    <root>/places365/data_large_standard/...  and  val_large/...   the same for the large variant

The image of a list entry is ``<images dir>/<entry with its leading "/" stripped>``.  Labels are the
numbers in the list files; class names are the categories (``"/a/airfield"``) in label order (in the
official file, sorted order = label order, which is how torchvision orders ``classes``).  Splits:
``"train"`` (train-standard) and ``"val"``, which is the test split (the official test set has no labels).

Variants: ``"small"`` (``data_256_standard``, ``val_256``) or ``"large"`` (``data_large_standard``,
``val_large``).  ``variant=None`` picks small if any of its image directories exists, else large if any of
its directories exists, else small (so errors name the small directories).  The small train archive
extracts to ``data_256``; torchvision's download renames it to ``data_256_standard``, and so must a manual
extraction (the loader says so if it finds ``data_256``).

The synthetic stand-in (:func:`write_synthetic_places365`) renders :data:`PLACES365_SYNTH_CLASSES` identities
starting at :data:`PLACES365_STYLE` ``.class_offset`` (striped and checkered shapes) as 48 px JPEGs into the
small variant, categories like ``/s/stripes_disc``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from core.errors import DatasetError
from tasks.datasets.base import FolderImageDataset, OnCorrupt, Sample
from tasks.datasets.filelist import (
    class_count_problem,
    corrupt_problem,
    listed_dataset,
    missing_files,
    missing_message,
    write_jpegs,
)
from tasks.datasets.synth import shapes

Variant = Literal["small", "large"]
PLACES365_DIR = "places365"
PLACES365_SPLITS = ("train", "val")
PLACES365_NUM_CLASSES = 365
PLACES365_CATEGORIES = "categories_places365.txt"
PLACES365_SPLIT_FILES = {"train": "places365_train_standard.txt", "val": "places365_val.txt"}
VARIANTS: tuple[Variant, ...] = ("small", "large")
PLACES365_IMAGE_DIRS: dict[Variant, dict[str, str]] = {
    "small": {"train": "data_256_standard", "val": "val_256"},
    "large": {"train": "data_large_standard", "val": "val_large"},
}
PLACES365_PREPARE_HINT = (
    "from http://places2.csail.mit.edu/download.html download filelist_places365-standard.tar, "
    "train_256_places365standard.tar and val_256.tar (or the large variants "
    "train_large_places365standard.tar and val_large.tar) into <root>/places365 and extract them there, "
    "renaming the extracted train folder "
    "data_256 (data_large) to data_256_standard (data_large_standard); torchvision.datasets.Places365("
    "<root>/places365, small=True, download=True) does all of this; "
    "`bench data synth` writes a synthetic stand-in in the same layout instead"
)
#: Synthetic stand-in: (train images, val images) per scale, classes, image side.
PLACES365_SYNTH_COUNTS = {"smoke": (2700, 900), "tiny": (240, 90)}
PLACES365_SYNTH_CLASSES = 30
PLACES365_SYNTH_SIZE = 48
#: Scenes: large, upright structures (little rotation, strong stretch) often cut by the border, sky-like
#: gradients, clutter; identities 40-69 (striped and checkered shapes).
PLACES365_STYLE = shapes.SynthStyle(
    scale_range=(0.3, 0.5),
    position_jitter=0.22,
    rotation=15.0,
    aspect_jitter=0.3,
    gradient_prob=0.9,
    gradient_strength=0.6,
    texture_amplitude=0.07,
    texture_cells=3,
    distractors=4,
    distractor_scale=(0.04, 0.1),
    class_offset=40,
)
_TITLE = "Places365"


def detect_variant(root: Path | str) -> Variant:
    """The image variant present under ``<root>/places365`` (see the module docstring)."""
    base = Path(root) / PLACES365_DIR
    for variant in VARIANTS:
        if any((base / name).is_dir() for name in PLACES365_IMAGE_DIRS[variant].values()):
            return variant
    return "small"


def _lines(path: Path) -> list[tuple[int, list[str]]]:
    """Non-blank lines of ``path`` split on whitespace, with 1-based line numbers."""
    try:
        with open(path, encoding="utf-8") as f:
            return [(number, parts) for number, line in enumerate(f, 1) if (parts := line.split())]
    except FileNotFoundError:
        raise DatasetError(f"{_TITLE} incomplete: no file {path}; {PLACES365_PREPARE_HINT}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{_TITLE}: cannot read {path}: {exc}") from None


def _pairs(path: Path) -> list[tuple[str, int]]:
    """``(name, integer)`` per line of a list file; malformed lines raise naming the line."""
    pairs = []
    for number, parts in _lines(path):
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise DatasetError(f"{path}:{number}: expected '<name> <label>', got {' '.join(parts)!r}")
        pairs.append((parts[0], int(parts[1])))
    return pairs


def read_categories(root: Path | str) -> list[str]:
    """Category names in label order from ``categories_places365.txt`` (labels must be 0..K-1, once each)."""
    path = Path(root) / PLACES365_DIR / PLACES365_CATEGORIES
    pairs = _pairs(path)
    names: list[str | None] = [None] * len(pairs)
    for name, label in pairs:
        if not 0 <= label < len(pairs) or names[label] is not None:
            raise DatasetError(f"{path}: labels must be 0..{len(pairs) - 1}, each once; bad label {label}")
        names[label] = name
    if not pairs:
        raise DatasetError(f"{path}: no categories")
    return [name for name in names if name is not None]


def _images_dir(base: Path, split: str, variant: Variant) -> Path:
    folder = base / PLACES365_IMAGE_DIRS[variant][split]
    if not folder.is_dir():
        unrenamed = base / ("data_256" if variant == "small" else "data_large")
        extra = (
            f" (found {unrenamed}: rename it to {folder.name})"
            if split == "train" and unrenamed.is_dir()
            else ""
        )
        raise DatasetError(f"{_TITLE} incomplete: no directory {folder}{extra}; {PLACES365_PREPARE_HINT}")
    return folder


def read_split(
    root: Path | str, split: str, variant: Variant | None = None
) -> tuple[list[Sample], list[str]]:
    """``(samples, classes)`` of ``split`` as torchvision's ``Places365`` lists them."""
    if split not in PLACES365_SPLITS:
        raise DatasetError(f"{_TITLE} has splits 'train' (train-standard) and 'val', not {split!r}")
    base = Path(root) / PLACES365_DIR
    variant = variant or detect_variant(root)
    if variant not in PLACES365_IMAGE_DIRS:
        raise DatasetError(f"{_TITLE} variant must be 'small' or 'large', not {variant!r}")
    classes = read_categories(root)
    listing = base / PLACES365_SPLIT_FILES[split]
    entries = _pairs(listing)
    folder = os.fspath(_images_dir(base, split, variant))
    bad = [label for _, label in entries if not 0 <= label < len(classes)]
    if bad:
        raise DatasetError(f"{listing}: {len(bad)} labels outside [0, {len(classes)}), e.g. {bad[0]}")
    return [(os.path.join(folder, name.lstrip("/")), label) for name, label in entries], classes


def load_places365(
    root: Path | str,
    split: str,
    size: int = 224,
    resize: int = 256,
    on_corrupt: OnCorrupt = "raise",
    variant: Variant | None = None,
    scan_workers: int = 0,
) -> FolderImageDataset:
    """Places365 ``split`` (``"train"`` or ``"val"``, the test split) of ``variant`` (default: detected);
    every listed image must exist."""
    samples, classes = read_split(root, split, variant)
    listing = Path(root) / PLACES365_DIR / PLACES365_SPLIT_FILES[split]
    where = (_TITLE, listing, PLACES365_PREPARE_HINT)
    return listed_dataset(samples, classes, size, resize, on_corrupt, scan_workers, where)


def verify_places365(
    root: Path | str, check_images: bool = False, variant: Variant | None = None
) -> list[str]:
    """Problems with ``<root>/places365``: missing files/directories, malformed lists, listed images missing
    on disk, a wrong class count, classes without train images; with ``check_images`` unreadable images."""
    base = Path(root) / PLACES365_DIR
    if not base.is_dir():
        return [f"{_TITLE}: no directory {base}; {PLACES365_PREPARE_HINT}"]
    try:
        classes = read_categories(root)
    except DatasetError as exc:
        return [str(exc)]
    categories = base / PLACES365_CATEGORIES
    problems = class_count_problem(
        _TITLE, categories, len(classes), PLACES365_NUM_CLASSES, PLACES365_SYNTH_CLASSES
    )
    for split in PLACES365_SPLITS:
        try:
            samples, _ = read_split(root, split, variant)
        except DatasetError as exc:
            problems.append(str(exc))
            continue
        absent = missing_files([path for path, _ in samples])
        if absent:
            problems.append(
                missing_message(_TITLE, base / PLACES365_SPLIT_FILES[split], absent, len(samples))
            )
        empty = sorted(set(range(len(classes))) - {label for _, label in samples})
        if empty:
            names = ", ".join(classes[label] for label in empty[:5]) + (", ..." if len(empty) > 5 else "")
            problems.append(
                f"{_TITLE} {split}: {len(empty)} of {len(classes)} classes have no images ({names})"
            )
        if check_images:
            gone = set(absent)
            problems += corrupt_problem(_TITLE, split, [path for path, _ in samples if path not in gone])
    return problems


def write_places365(
    root: Path | str,
    splits: Mapping[str, tuple[np.ndarray, Sequence[int] | np.ndarray]],
    class_names: Sequence[str],
    small: bool = True,
    quality: int = 95,
    progress: bool = False,
) -> Path:
    """Write ``<root>/places365`` in the official layout (``small`` or large image directories); returns it.

    ``splits`` maps ``"train"``/``"val"`` to ``(uint8 [N, H, W, 3] images, labels)`` with labels indexing
    ``class_names`` (bare names like ``airfield`` or ``apartment_building/outdoor``).  Categories become
    ``/<first letter>/<name>`` and, as in the official file, are numbered in sorted order, so written labels
    are the ranks of the names.  Train images are numbered per class, val images globally, in input order.
    """
    base = Path(root) / PLACES365_DIR
    base.mkdir(parents=True, exist_ok=True)
    categories = [f"/{name[0]}/{name}" for name in class_names]
    order = sorted(range(len(categories)), key=categories.__getitem__)
    rank = np.empty(len(categories), dtype=np.int64)
    rank[order] = np.arange(len(categories))
    (base / PLACES365_CATEGORIES).write_text("".join(f"{categories[k]} {rank[k]}\n" for k in order))
    dirs = PLACES365_IMAGE_DIRS["small" if small else "large"]
    for split, (images, labels) in splits.items():
        labels = np.asarray(labels, dtype=np.int64)
        if split == "train":
            counters = [0] * len(categories)
            entries = []
            for label in labels:
                counters[label] += 1
                entries.append(f"{categories[label]}/{counters[label]:08d}.jpg")
            grouped = sorted(range(len(labels)), key=lambda i: (rank[labels[i]], i))
        else:
            entries = [f"Places365_val_{i + 1:08d}.jpg" for i in range(len(labels))]
            grouped = list(range(len(labels)))
        paths = [base / dirs[split] / entry.lstrip("/") for entry in entries]
        write_jpegs(paths, images, quality, progress, desc=f"write places365 {split}")
        lines = "".join(f"{entries[i]} {rank[labels[i]]}\n" for i in grouped)
        (base / PLACES365_SPLIT_FILES[split]).write_text(lines)
    return base


def synthetic_class_names() -> list[str]:
    """Bare names of the stand-in's classes in render-label order (``stripes_disc``, ...)."""
    names = shapes.identity_names(PLACES365_SYNTH_CLASSES, PLACES365_STYLE.class_offset)
    return [name.replace("-", "_") for name in names]


def write_synthetic_places365(root: Path | str, seed: int, scale: str) -> None:
    """Render the Places365 stand-in (see the module docstring) into ``<root>/places365`` (small variant);
    ``scale`` is a key of :data:`PLACES365_SYNTH_COUNTS`."""
    if scale not in PLACES365_SYNTH_COUNTS:
        raise DatasetError(f"unknown synthetic scale {scale!r}; choose from {sorted(PLACES365_SYNTH_COUNTS)}")
    splits = {}
    for split, count in zip(PLACES365_SPLITS, PLACES365_SYNTH_COUNTS[scale], strict=True):
        splits[split] = shapes.render(
            count,
            PLACES365_SYNTH_CLASSES,
            PLACES365_SYNTH_SIZE,
            shapes.derive_seed(seed, f"places365/{split}"),
            PLACES365_STYLE,
            progress=count >= 2000,
        )
    write_places365(root, splits, synthetic_class_names())
