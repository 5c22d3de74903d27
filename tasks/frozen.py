"""Frozen-backbone features of a dataset's train and test splits, shared by every frozen-feature task.

Each split is loaded through the dataset's registered loader with the deterministic eval transform
(resize the shorter side to ``resize``, centre-crop ``size``; :class:`EvalResolution` per profile),
passed once through the frozen backbone and cached on disk (:mod:`tasks.features`).  The cache key
covers everything the features depend on:

* the backbone weights (``ctx.weights_digest``, a hash of every tensor);
* the dataset name, the data root and a *content fingerprint* of the split (:func:`split_fingerprint`:
  the image file list, or the image bytes of in-memory datasets, plus the synthetic writer's marker),
  so regenerated or edited data, and splits whose corrupt files were skipped, never reuse stale
  features;
* the split and the transform.

So ``linear/<ds>`` and ``knn/<ds>`` (and the representation metrics) extract each split once between them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pretrain.backbones import Backbone
from tasks.base import TaskContext
from tasks.datasets.base import ArrayImageDataset, FolderImageDataset, ImageDataset, OnCorrupt
from tasks.datasets.registry import DATASETS
from tasks.datasets.synth.writer import read_marker
from tasks.features import FeatureSet, extract_features, feature_key


@dataclass(frozen=True)
class EvalResolution:
    """Eval transform (resize shorter side to ``resize``, centre-crop ``size``) for one profile."""

    resize: int
    size: int

    @property
    def transform(self) -> str:
        return f"resize{self.resize}-centercrop{self.size}"


@dataclass(frozen=True, eq=False)
class SplitFeatures:
    """Cached features of both splits plus what a result should record about them."""

    train: FeatureSet
    test: FeatureSet
    num_classes: int
    skipped: dict[str, list[str]]  # split -> unreadable files dropped (``on_corrupt="skip"``)
    seconds: float


def split_fingerprint(dataset: ImageDataset, root: Path, name: str) -> str:
    """SHA-256 (hex, 16 digits) of what the split's pixels are made of (see module docstring)."""
    h = hashlib.sha256()
    marker = read_marker(root, name)
    h.update(json.dumps(marker, sort_keys=True).encode())
    if isinstance(dataset, FolderImageDataset):
        for path, label in dataset.samples:
            h.update(f"{path}\t{label}\n".encode())
    elif isinstance(dataset, ArrayImageDataset):
        h.update(np.ascontiguousarray(dataset.images).data)
    else:  # unknown kinds: at least the labels
        h.update(np.ascontiguousarray(dataset.labels, dtype="<i8").tobytes())
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=4)
def _load(
    dataset: str, root: Path, split: str, size: int, resize: int, on_corrupt: OnCorrupt, stamp: int
) -> ImageDataset:
    del stamp  # part of the cache key only
    return DATASETS.get(dataset).load(root, split, size=size, resize=resize, on_corrupt=on_corrupt)


def load_split(dataset: str, split: str, res: EvalResolution, ctx: TaskContext) -> ImageDataset:
    """``split`` of ``dataset`` under ``ctx.data_root`` with the eval transform ``res``.

    The last few loads are memoised per process (keyed by the arguments and the modification time of the
    dataset's directory, which a regenerated stand-in changes), so ``linear/<ds>`` and ``knn/<ds>`` scan a
    split's file list -- or, with ``on_corrupt="skip"``, decode every image of it -- once, not once each.
    """
    folder = DATASETS.get(dataset).path(ctx.data_root)
    stamp = folder.stat().st_mtime_ns if folder.is_dir() else 0
    return _load(dataset, Path(ctx.data_root), split, res.size, res.resize, ctx.on_corrupt, stamp)


def split_feature_set(
    backbone: Backbone, dataset: str, split: str, res: EvalResolution, ctx: TaskContext
) -> tuple[FeatureSet, ImageDataset]:
    """Frozen features of one split (cached; see module docstring) and the split they were computed on."""
    ds = load_split(dataset, split, res, ctx)
    fingerprint = split_fingerprint(ds, ctx.data_root, dataset)
    key = feature_key(ctx.weights_digest, f"{dataset}@{ctx.data_root}#{fingerprint}", split, res.transform)
    features = extract_features(
        backbone,
        ds,
        cache_dir=ctx.cache_dir / "features",
        key=key,
        device=ctx.device,
        num_workers=ctx.num_workers,
        progress=ctx.progress,
    )
    return features, ds


def split_features(
    backbone: Backbone, dataset: str, train_split: str, test_split: str, res: EvalResolution, ctx: TaskContext
) -> SplitFeatures:
    """Frozen features of ``train_split`` and ``test_split`` (cached; see module docstring)."""
    t0 = time.perf_counter()
    feats: dict[str, FeatureSet] = {}
    skipped: dict[str, list[str]] = {}
    num_classes = 0
    for split in (train_split, test_split):
        feats[split], ds = split_feature_set(backbone, dataset, split, res, ctx)
        skipped[split] = list(getattr(ds, "skipped", ()))
        num_classes = len(ds.classes)
    return SplitFeatures(
        feats[train_split], feats[test_split], num_classes, skipped, time.perf_counter() - t0
    )
