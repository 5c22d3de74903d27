"""The source images of a dataset split, in the loader's order, at their stored resolution.

A generator sees the original files (not the eval-transformed crops): ``SourceSet.open(i)`` decodes entry
``i`` as an RGB PIL image.  Entries carry a stable relative path that names the variants in the store:

* folder datasets (ImageNet, Food-101, Places365, iNat 2018): the file's path relative to the dataset
  folder, e.g. ``train/n01440764/n01440764_10026.JPEG``;
* array datasets (the CIFAR pickles): ``<split>/<index:06d>`` (the pickle order).

The order is the dataset loader's order, i.e. the sample index the pretraining stream uses.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from core.errors import DatasetError
from tasks.datasets.base import ArrayImageDataset, FolderImageDataset
from tasks.datasets.registry import DATASETS


@dataclass(frozen=True)
class SourceSet:
    """The source images of ``dataset``/``split`` under ``root`` (see the module docstring).

    Attributes:
        relpaths: relative path of every sample, in loader order.
        labels: int64 ``[N]`` labels in the same order.
        fingerprint: SHA-256 over the relative paths and labels (identifies the split's content listing).
    """

    dataset: str
    split: str
    root: Path
    relpaths: tuple[str, ...]
    labels: np.ndarray
    fingerprint: str
    _paths: tuple[str, ...] | None = None
    _array: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.relpaths)

    def open(self, index: int) -> Image.Image:
        """Entry ``index`` as an RGB image; an unreadable file is a :class:`DatasetError` naming it."""
        if self._array is not None:
            return Image.fromarray(np.ascontiguousarray(self._array[index]))
        assert self._paths is not None
        path = self._paths[index]
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except Exception as exc:  # PIL raises many types for broken files
            raise DatasetError(f"cannot decode source image {path}: {exc}") from None


def fingerprint(relpaths: tuple[str, ...], labels: np.ndarray) -> str:
    h = hashlib.sha256()
    for rel, label in zip(relpaths, labels.tolist(), strict=True):
        h.update(f"{rel}\0{label}\n".encode())
    return h.hexdigest()


def load_sources(root: Path, dataset: str, split: str) -> SourceSet:
    """List the source images of ``dataset``/``split`` under ``root`` (no image is decoded)."""
    return sources_of(DATASETS.get(dataset).load(root, split), root, dataset, split)


def sources_of(ds: object, root: Path, dataset: str, split: str) -> SourceSet:
    """The :class:`SourceSet` of an already loaded split ``ds`` of ``dataset`` under ``root``."""
    folder = DATASETS.get(dataset).path(root)
    if isinstance(ds, FolderImageDataset):
        paths = tuple(path for path, _ in ds.samples)
        relpaths = tuple(os.path.relpath(path, folder) for path in paths)
        return SourceSet(dataset, split, root, relpaths, ds.labels, fingerprint(relpaths, ds.labels), paths)
    if isinstance(ds, ArrayImageDataset):
        relpaths = tuple(f"{split}/{i:06d}" for i in range(len(ds)))
        return SourceSet(
            dataset, split, root, relpaths, ds.labels, fingerprint(relpaths, ds.labels), _array=ds.images
        )
    raise DatasetError(f"dataset {dataset!r}: its images cannot be listed as generation sources")
