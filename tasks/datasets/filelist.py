"""Helpers for datasets whose splits are *listed* in index files (Food-101, Places365, iNaturalist).

Such a split names its images explicitly, so a file that is listed but absent (an incomplete extraction)
would otherwise surface only when a ``DataLoader`` worker tries to open it.  The loaders therefore check
every listed file up front with :func:`missing_files`, which lists each distinct parent directory once
(``os.scandir``) instead of calling ``stat`` per image: O(N) in the number of images and one system call
per directory (Places365-Standard: 1.8M images in ~430 directories).

Also here: a JSON index reader, the problem messages shared by the verifiers and a JPEG writer for the
synthetic stand-ins.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from core.errors import DatasetError
from tasks.datasets.base import FolderImageDataset, OnCorrupt, Sample, scan_corrupt

#: How many example paths a message shows.
EXAMPLES = 3


def _examples(paths: Sequence[str]) -> str:
    return ", ".join(paths[:EXAMPLES]) + (", ..." if len(paths) > EXAMPLES else "")


def read_json(path: Path, title: str, hint: str) -> Any:
    """The parsed JSON index file ``path``; a missing or unreadable file is a :class:`DatasetError`
    naming ``title`` and the file (plus ``hint`` on how to prepare the dataset when it is missing)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DatasetError(f"{title} incomplete: no file {path}; {hint}") from None
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{title}: cannot read {path}: {exc}") from None


def missing_files(paths: Sequence[str]) -> list[str]:
    """The entries of ``paths`` that are not present as files, in input order.

    Each distinct parent directory is listed once; a missing parent directory makes all its entries
    missing.  Directory entries (not files) with a listed name count as missing.
    """
    listings: dict[str, frozenset[str]] = {}
    missing = []
    for path in paths:
        parent, name = os.path.split(path)
        names = listings.get(parent)
        if names is None:
            try:
                with os.scandir(parent or ".") as entries:
                    names = frozenset(entry.name for entry in entries if not entry.is_dir())
            except (FileNotFoundError, NotADirectoryError):
                names = frozenset()
            listings[parent] = names
        if name not in names:
            missing.append(path)
    return missing


def missing_message(title: str, listing: Path | str, missing: Sequence[str], total: int) -> str:
    """``"<title>: 3 of 120 images listed in <listing> are missing, e.g. <path>, ..."``."""
    return (
        f"{title}: {len(missing)} of {total} images listed in {listing} are missing on disk, "
        f"e.g. {_examples(missing)}"
    )


def require_listed(samples: Sequence[Sample], title: str, listing: Path | str, hint: str) -> None:
    """Raise :class:`DatasetError` naming the count and the first missing files if any sample is absent."""
    missing = missing_files([path for path, _ in samples])
    if missing:
        raise DatasetError(f"{missing_message(title, listing, missing, len(samples))}; {hint}")


def listed_dataset(
    samples: Sequence[Sample],
    classes: Sequence[str],
    size: int,
    resize: int,
    on_corrupt: OnCorrupt,
    scan_workers: int,
    where: tuple[str, Path | str, str],
) -> FolderImageDataset:
    """A :class:`FolderImageDataset` of listed files after checking that all exist.

    ``where`` is ``(title, split file, prepare hint)`` for the error message.  Missing files raise under
    both ``on_corrupt`` policies: they mean an incomplete copy, not a damaged image.
    """
    require_listed(samples, *where)
    return FolderImageDataset(samples, classes, size, resize, on_corrupt, scan_workers=scan_workers)


def corrupt_problem(title: str, split: str, paths: Sequence[str]) -> list[str]:
    """Decode every file (:func:`scan_corrupt`); one problem naming the unreadable ones, if any."""
    bad = scan_corrupt(paths)
    return [f"{title} {split}: {len(bad)} unreadable image(s), e.g. {_examples(bad)}"] if bad else []


def class_count_problem(title: str, where: Path | str, found: int, real: int, synthetic: int) -> list[str]:
    """A problem unless ``found`` is the real dataset's class count or the synthetic stand-in's."""
    if found in (real, synthetic):
        return []
    return [
        f"{title}: {where} defines {found} classes; expected {real} (or {synthetic} for the synthetic "
        f"stand-in)"
    ]


def write_jpegs(
    paths: Sequence[Path], images: np.ndarray, quality: int = 95, progress: bool = False, desc: str = ""
) -> None:
    """Save ``uint8 [N, H, W, 3]`` images as JPEGs at ``paths`` (parent directories are created)."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or len(images) != len(paths):
        raise ValueError(f"need uint8 images [N, H, W, 3] for {len(paths)} paths, got {list(images.shape)}")
    made: set[Path] = set()
    for path, image in tqdm(
        zip(paths, images, strict=True), total=len(paths), desc=desc or "write", disable=not progress
    ):
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        Image.fromarray(image).save(path, format="JPEG", quality=quality)
