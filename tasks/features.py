"""Frozen-feature extraction with an atomic, memory-mapped on-disk cache.

A frozen backbone maps float images ``[B, 3, S, S]`` in ``[0, 1]`` to features ``[B, D]``;
:func:`extract_features` runs it once over a dataset of ``(uint8 [3, S, S], int label)`` items and
streams the features, batch by batch, into ``<cache_dir>/<key>.f16`` (raw little-endian float16,
row-major ``[N, D]``).  At no point are all features held in memory: every batch is written as soon as
it is computed and the result is handed back as a read-only :class:`numpy.memmap`.

Cache layout and commit protocol (per ``key``):

* ``<key>.f16.tmp-<pid>`` -- features being written by process ``pid``;
* ``<key>.f16`` -- the finished features;
* ``<key>.json`` -- the sidecar (format version, shape, dtype, label checksum, precision, creation
  time).  It is written last and is the commit marker: features without a sidecar are never used.

Committing removes a stale sidecar, renames the finished ``.f16`` into place, then writes the sidecar
through its own temporary file and an atomic rename.  A reader therefore sees either a complete entry
or "not cached"; an interrupted run leaves at most an ignored ``.tmp-<pid>`` file behind, which the
next extraction into the same cache removes once its writer is gone.  A sidecar whose shape, dtype,
label checksum or file size does not match the dataset is treated as a miss and the entry is recomputed.

The cache key must name everything the features depend on; :func:`feature_key` builds one from a
weights digest (:func:`state_dict_digest`), the dataset, the split and a transform description.
Anything else that changes the features (resolution, precision, ...) belongs in that description.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal, get_args

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from core.errors import BenchError, DatasetError
from core.fsutil import remove_stale_tmp
from core.hardware import precision_for

__all__ = [
    "FeatureError",
    "FeatureSet",
    "extract_features",
    "feature_key",
    "load_cached_features",
    "resolve_precision",
    "state_dict_digest",
]

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
"""Version of the on-disk layout; part of every key and checked in every sidecar."""

Precision = Literal["auto", "bf16", "fp32"]

_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_FP16_MAX = float(np.finfo(np.float16).max)
CPU = torch.device("cpu")


class FeatureError(BenchError):
    """Features cannot be produced: a bad cache key, a model with the wrong output, non-finite values."""


@dataclass(frozen=True, eq=False)
class FeatureSet:
    """Cached features of one dataset split.

    Attributes:
        features: read-only ``np.memmap`` of float16, shape ``[N, D]``.
        labels: int64 labels, shape ``[N]`` (row ``i`` of ``features`` belongs to ``labels[i]``).
        path: the ``.f16`` file backing ``features``.
    """

    features: np.ndarray
    labels: np.ndarray
    path: Path

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def dim(self) -> int:
        """Feature dimension ``D``."""
        return int(self.features.shape[1])


# ----------------------------------------------------------------------------------------------- keys


def state_dict_digest(module: torch.nn.Module) -> str:
    """SHA-256 (hex) over every parameter and buffer of ``module``, persistent or not.

    Tensors are visited in name order; each contributes its name, dtype, shape and raw bytes, so the
    digest is deterministic across processes and independent of the device the module lives on.
    """
    tensors: dict[str, torch.Tensor] = dict(module.named_parameters())
    tensors.update(module.named_buffers())
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach()
        if t.is_meta:
            raise FeatureError(f"cannot digest {name!r}: tensor has no data (meta device)")
        header = json.dumps([name, str(t.dtype), list(t.shape)]) + "\n"
        h.update(header.encode())
        flat = t.cpu().contiguous().reshape(-1)
        if flat.numel():
            h.update(flat.view(torch.uint8).numpy().data)
    return h.hexdigest()


def _slug(text: str, limit: int = 32) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()
    return slug[:limit] or "x"


def feature_key(weights_digest: str, dataset_name: str, split: str, transform: str) -> str:
    """A short, filename-safe cache key: ``<dataset>-<split>-<20 hex digits of a content hash>``.

    The hash covers all four arguments and :data:`CACHE_FORMAT`; the readable prefix is only a hint.
    """
    payload = json.dumps(
        {
            "format": CACHE_FORMAT,
            "weights": weights_digest,
            "dataset": dataset_name,
            "split": split,
            "transform": transform,
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(payload.encode()).hexdigest()[:20]
    return f"{_slug(dataset_name)}-{_slug(split, 16)}-{digest}"


def _check_key(key: str) -> None:
    if not _KEY_RE.match(key):
        raise FeatureError(
            f"invalid feature cache key {key!r}: use 1-128 characters from [A-Za-z0-9._-], "
            "not starting with '.' or '-'"
        )


def resolve_precision(precision: str, device: torch.device) -> Literal["bf16", "fp32"]:
    """Resolve ``"auto"`` to ``"bf16"`` where :func:`core.hardware.auto_precision` picks bf16 (a CPU with
    native bf16, a CUDA device with bf16 support), else ``"fp32"``."""
    if precision not in get_args(Precision):
        raise FeatureError(f"unknown precision {precision!r}; expected 'auto', 'bf16' or 'fp32'")
    return "bf16" if precision_for(precision, device) == "bf16" else "fp32"


# ---------------------------------------------------------------------------------------------- cache


def _labels_of(dataset: Dataset[Any]) -> np.ndarray:
    labels = getattr(dataset, "labels", None)
    if labels is None:
        raise DatasetError(f"{type(dataset).__name__} has no `labels` attribute")
    arr = np.asarray(labels)
    n = len(dataset)  # type: ignore[arg-type]
    if arr.ndim != 1 or arr.shape[0] != n:
        raise DatasetError(f"dataset labels have shape {arr.shape}, expected ({n},)")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise DatasetError(f"dataset labels must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=True)


def _labels_sha256(labels: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(labels, dtype="<i8").tobytes()).hexdigest()


def _paths(cache_dir: Path, key: str) -> tuple[Path, Path]:
    return cache_dir / f"{key}.f16", cache_dir / f"{key}.json"


def load_cached_features(cache_dir: Path, key: str, labels: np.ndarray) -> FeatureSet | None:
    """The committed cache entry ``key`` if it is complete and matches ``labels``, else ``None``.

    Complete means: the sidecar parses, has the current format, dtype float16, ``N == len(labels)``,
    ``D > 0``, the same label checksum, and the ``.f16`` file has exactly ``N * D * 2`` bytes.
    """
    _check_key(key)
    data_path, meta_path = _paths(Path(cache_dir), key)
    try:
        meta = json.loads(meta_path.read_text())
        n, d = (int(v) for v in meta["shape"])
        ok = (
            meta.get("format") == CACHE_FORMAT
            and meta.get("dtype") == "float16"
            and n == len(labels)
            and d > 0
            and meta.get("labels_sha256") == _labels_sha256(labels)
            and data_path.stat().st_size == n * d * 2
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not ok:
        log.info("feature cache %s does not match the dataset; recomputing", meta_path)
        return None
    features = np.memmap(data_path, dtype=np.float16, mode="r", shape=(n, d))
    return FeatureSet(features=features, labels=np.array(labels, dtype=np.int64), path=data_path)


class _Fp16Writer:
    """Appends float16 ``[b, D]`` batches to a raw file; checks that every batch has the same ``D``."""

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh
        self.rows = 0
        self.dim: int | None = None

    def write(self, batch: np.ndarray) -> None:
        if batch.dtype != np.float16 or batch.ndim != 2:
            raise ValueError(f"expected a float16 [b, D] batch, got {batch.dtype} {batch.shape}")
        if self.dim is None:
            self.dim = int(batch.shape[1])
        elif batch.shape[1] != self.dim:
            raise FeatureError(f"model output width changed from {self.dim} to {batch.shape[1]}")
        self._fh.write(np.ascontiguousarray(batch).data)
        self.rows += int(batch.shape[0])


def _commit(tmp_path: Path, cache_dir: Path, key: str, meta: dict[str, Any]) -> None:
    data_path, meta_path = _paths(cache_dir, key)
    meta_path.unlink(missing_ok=True)  # never pair a stale marker with new data
    os.replace(tmp_path, data_path)
    meta_tmp = cache_dir / f"{key}.json.tmp-{os.getpid()}"
    try:
        with open(meta_tmp, "w") as fh:
            json.dump(meta, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(meta_tmp, meta_path)
    finally:
        meta_tmp.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------ extraction


def extract_features(
    model: torch.nn.Module,
    dataset: Dataset[Any],
    *,
    cache_dir: Path,
    key: str,
    batch_size: int = 256,
    num_workers: int = 0,
    device: torch.device | str = CPU,
    precision: Precision = "auto",
    progress: bool = True,
) -> FeatureSet:
    """Features of ``model`` on every item of ``dataset``, in dataset order, cached under ``key``.

    Args:
        model: frozen backbone, float images ``[B, 3, S, S]`` in ``[0, 1]`` -> features ``[B, D]``;
            it normalises internally.  It is put in eval mode for the pass (its previous mode is
            restored afterwards) and run under ``torch.inference_mode()``.
        dataset: items ``(uint8 tensor [3, S, S], int label)`` and a ``labels`` array of length N
            agreeing with the items' labels.
        cache_dir: directory of the cache (created if missing).
        key: cache key (see :func:`feature_key`); ``[A-Za-z0-9._-]``, at most 128 characters.
        batch_size, num_workers: of the (unshuffled) ``DataLoader``.
        device: where the model runs; images are converted ``uint8 -> float / 255`` there and passed
            in ``channels_last`` memory format.
        precision: ``"bf16"`` runs the model under bf16 autocast, ``"fp32"`` without; ``"auto"`` see
            :func:`resolve_precision`.  Features are stored as float16 either way.
        progress: show a tqdm progress bar.

    Returns:
        A :class:`FeatureSet` whose ``features`` is a read-only float16 memmap ``[N, D]``.  If a
        complete matching entry exists it is returned without running the model.

    Raises:
        DatasetError: missing/mismatched ``labels``, non-uint8 images, an empty dataset.
        FeatureError: invalid key, model output not ``[B, D]``, or non-finite features (including
            values beyond the float16 range).
    """
    _check_key(key)
    device = torch.device(device)
    cache_dir = Path(cache_dir)
    labels = _labels_of(dataset)
    n = labels.shape[0]
    if n == 0:
        raise DatasetError("cannot extract features of an empty dataset")
    cache_dir.mkdir(parents=True, exist_ok=True)
    cached = load_cached_features(cache_dir, key, labels)
    if cached is not None:
        return cached

    prec = resolve_precision(precision, device)
    remove_stale_tmp(cache_dir)  # temporaries of killed extractions (their writers are gone)
    tmp_path = cache_dir / f"{key}.f16.tmp-{os.getpid()}"
    was_training = model.training
    model.eval()
    try:
        with open(tmp_path, "wb") as fh:
            writer = _Fp16Writer(fh)
            _run(model, dataset, labels, writer, batch_size, num_workers, device, prec, progress)
            fh.flush()
            os.fsync(fh.fileno())
        if writer.rows != n or writer.dim is None:
            raise DatasetError(f"dataset yielded {writer.rows} items but has {n} labels")
        meta = {
            "format": CACHE_FORMAT,
            "key": key,
            "shape": [n, writer.dim],
            "dtype": "float16",
            "labels_sha256": _labels_sha256(labels),
            "precision": prec,
            "model": type(model).__name__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        _commit(tmp_path, cache_dir, key, meta)
    finally:
        tmp_path.unlink(missing_ok=True)
        model.train(was_training)
    result = load_cached_features(cache_dir, key, labels)
    if result is None:  # only if another process replaced the entry with something inconsistent
        raise FeatureError(f"feature cache {cache_dir / key} changed while it was being committed")
    return result


def _run(
    model: torch.nn.Module,
    dataset: Dataset[Any],
    labels: np.ndarray,
    writer: _Fp16Writer,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    prec: str,
    progress: bool,
) -> None:
    """The extraction loop: one model call and one ``writer.write`` per batch."""
    n = labels.shape[0]
    pin = device.type == "cuda"
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, pin_memory=pin
    )
    bar = tqdm(total=n, desc="features", unit="img", disable=not progress, leave=False)
    start = 0
    with (
        bar,
        torch.inference_mode(),
        torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=prec == "bf16"),
    ):
        for images, batch_labels in loader:
            b = int(images.shape[0])
            if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
                raise DatasetError(
                    f"expected uint8 images [B, 3, S, S], got {images.dtype} {tuple(images.shape)}"
                )
            if start + b > n or not np.array_equal(batch_labels.numpy(), labels[start : start + b]):
                raise DatasetError(f"item labels disagree with dataset.labels in rows {start}..{start + b}")
            x = images.to(device, non_blocking=True).float().div_(255.0)
            x = x.contiguous(memory_format=torch.channels_last)
            out = model(x)
            if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != b:
                shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise FeatureError(f"model must return features [B, D] with B={b}, got {shape}")
            if out.shape[1] == 0:
                raise FeatureError("model returned zero-width features")
            out32 = out.float()
            if not bool(torch.isfinite(out32).all()) or bool((out32.abs() > _FP16_MAX).any()):
                raise FeatureError(
                    f"model produced non-finite features (or beyond float16 range) in rows "
                    f"{start}..{start + b}"
                )
            writer.write(out32.to(torch.float16).cpu().numpy())
            start += b
            bar.update(b)
