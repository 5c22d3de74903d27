"""Cached, atomic generation of synthetic stand-ins under a data root.

A dataset directory ``<root>/<relpath>`` counts as a complete synthetic copy only if it holds the marker
``<relpath>/.augbench-synthetic.json`` (generator version, seed, scale, split counts), which is written last.
Generation happens in ``<root>/.augbench-tmp-<name>-<pid>/`` (same file system) and the finished directory is
renamed into place, so an interrupted run leaves at most a temp directory (removed by the next run) and never
a half-written dataset that looks complete.  Runs on the same root are serialised with a file lock.

Safety: an existing ``<relpath>`` without a marker may be real data.  It is replaced only if ``root`` is a
synthetic root, i.e. holds ``.augbench-synthetic-root``, which :func:`ensure_synthetic` writes when it starts
on a missing or empty directory; otherwise it raises :class:`DatasetError` instead of deleting anything.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from core.errors import DatasetError
from tasks.datasets.registry import DATASETS, SYNTHETIC_SCALES, DatasetInfo

MARKER = ".augbench-synthetic.json"
ROOT_MARKER = ".augbench-synthetic-root"
LOCK = ".augbench-synthetic.lock"
TMP_PREFIX = ".augbench-tmp-"
DEFAULT_SEED = 0


def read_marker(root: Path | str, name: str) -> dict[str, Any] | None:
    """The parsed marker of dataset ``name`` under ``root``, or ``None`` if absent or unreadable.  A dataset
    written by another's stand-in writer (``DatasetInfo.synthetic_owner``) has its owner's marker."""
    info = DATASETS.get(name)
    path = DATASETS.get(info.synthetic_owner or name).path(root) / MARKER
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "generator_version" in data else None


def is_synthetic(root: Path | str, name: str) -> bool:
    """Whether ``<root>/<relpath of name>`` is a complete synthetic stand-in (has a valid marker)."""
    return read_marker(root, name) is not None


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock
        yield
        return
    with open(root / LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _generate(root: Path, info: DatasetInfo, seed: int, scale: str) -> None:
    """Write ``info``'s stand-in into a temp dir, add the marker, rename it to ``root / relpath``."""
    tmp = root / f"{TMP_PREFIX}{info.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        info.write_synthetic(tmp, seed, scale)
        counts = {split: info.count(tmp, split) for split in info.splits}
        marker = {
            "generator": info.synthesizer.__module__,
            "generator_version": info.generator_version,
            "dataset": info.name,
            "seed": seed,
            "scale": scale,
            "counts": counts,
            "num_classes": info.synthetic_classes,
            "image_size": info.synthetic_image_size,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (info.path(tmp) / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        target = info.path(root)
        if target.exists():  # rename it away first: a directory cannot be renamed onto a non-empty one
            os.rename(target, tmp / ".replaced")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(info.path(tmp), target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ensure_synthetic(
    root: Path | str, names: Sequence[str], scale: str = "smoke", seed: int = DEFAULT_SEED
) -> Path:
    """Ensure ``root`` holds complete synthetic stand-ins of ``names`` at ``scale``/``seed``; return ``root``.

    Datasets whose marker matches (generator version, seed, scale) are left alone; others are (re)generated
    atomically (see the module docstring).  Unknown names raise ``UnknownNameError``.
    """
    if scale not in SYNTHETIC_SCALES:
        raise DatasetError(f"unknown synthetic scale {scale!r}; choose from {', '.join(SYNTHETIC_SCALES)}")
    owners = dict.fromkeys(DATASETS.get(name).synthetic_owner or name for name in names)
    infos = [DATASETS.get(name) for name in owners]
    root = Path(root)
    fresh = not root.exists() or not any(root.iterdir())
    root.mkdir(parents=True, exist_ok=True)
    if fresh:
        (root / ROOT_MARKER).write_text(
            "synthetic data root written by augbench; datasets may be regenerated\n"
        )
    with _locked(root):
        for leftover in root.glob(f"{TMP_PREFIX}*"):  # we hold the lock: nobody else is generating
            shutil.rmtree(leftover, ignore_errors=True)
        for info in infos:
            marker = read_marker(root, info.name)
            wanted = {"generator_version": info.generator_version, "seed": seed, "scale": scale}
            if marker is not None and all(marker.get(key) == value for key, value in wanted.items()):
                continue
            target = info.path(root)
            if target.exists() and marker is None and not (root / ROOT_MARKER).exists():
                raise DatasetError(
                    f"refusing to replace {target}: it has no {MARKER} marker, so it may be real data; "
                    f"use an empty directory as the synthetic data root"
                )
            _generate(root, info, seed, scale)
    return root
