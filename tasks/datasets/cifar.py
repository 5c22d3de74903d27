"""CIFAR-10 and CIFAR-100, "python version": reader (restricted unpickler), writers of the same layouts,
synthetic stand-ins.

On-disk layouts (as extracted from ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``)::

    <root>/cifar-10-batches-py/data_batch_1 ... data_batch_5   (CIFAR-10 train)
    <root>/cifar-10-batches-py/test_batch                       (CIFAR-10 test: the test split)
    <root>/cifar-10-batches-py/batches.meta
    <root>/cifar-100-python/train                               (CIFAR-100 train, one file)
    <root>/cifar-100-python/test                                (CIFAR-100 test: the test split)
    <root>/cifar-100-python/meta

Each batch is a Python-2 pickle of a dict with (under ``encoding="bytes"``) bytes keys: ``b"data"`` a
``uint8`` array ``[N, 3072]`` (per row the R, G and B planes of a 32x32 image, each row-major),
``b"filenames"`` a list of bytes, ``b"batch_label"`` bytes and the labels: CIFAR-10 ``b"labels"``;
CIFAR-100 ``b"fine_labels"`` (0-99, the labels used here) and ``b"coarse_labels"`` (0-19 superclasses).
The meta dict holds the class names: CIFAR-10 ``b"label_names"`` (plus ``b"num_cases_per_batch"``,
``b"num_vis"``); CIFAR-100 ``b"fine_label_names"`` (label = index) and ``b"coarse_label_names"``.

Pickles can execute code, so they are read with a restricted unpickler that resolves only the few numpy
globals needed to rebuild arrays; the writers emit Python-2-style protocol-2 pickles.  Both live in
:mod:`tasks.datasets.cifar_pickle`; the files look like the official ones to every reader (ours with
``encoding="bytes"``, torchvision's ``CIFAR10``/``CIFAR100`` with ``encoding="latin1"``).

Synthetic stand-ins: CIFAR-10 renders shape identities 0-9 (:data:`CIFAR10_STYLE`); CIFAR-100 renders all
100 identities (:data:`CIFAR100_STYLE`, label = identity), with coarse label = the identity's shape (20
superclasses of 5 fills each, like CIFAR-100's 20 superclasses of 5 classes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import DatasetError
from tasks.datasets.base import ArrayImageDataset
from tasks.datasets.cifar_pickle import RestrictedUnpickler as RestrictedUnpickler  # re-exported
from tasks.datasets.cifar_pickle import batch_dict, check_images, read_pickle, write_py2_pickle
from tasks.datasets.synth import shapes

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILES = ("test_batch",)
CIFAR10_META = "batches.meta"
CIFAR10_PREPARE_HINT = (
    "download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and extract it into "
    "<root> (or run torchvision.datasets.CIFAR10(<root>, download=True)); "
    "`bench data synth` writes a synthetic stand-in in the same format instead"
)
CIFAR100_DIR = "cifar-100-python"
CIFAR100_PREPARE_HINT = (
    "download cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and extract it into "
    "<root> so that <root>/cifar-100-python/{train,test,meta} exist (or run "
    "torchvision.datasets.CIFAR100(<root>, download=True)); "
    "`bench data synth` writes a synthetic stand-in in the same format instead"
)
#: Synthetic stand-in sizes per scale: (train images, test images).
CIFAR10_SYNTH_COUNTS = {"smoke": (5000, 1000), "tiny": (500, 200)}
CIFAR100_SYNTH_COUNTS = {"smoke": (5000, 1000), "tiny": (500, 200)}
#: Rendering style of the CIFAR-10 stand-in (identities 0..9 of :mod:`tasks.datasets.synth.shapes`).
CIFAR10_STYLE = shapes.SynthStyle(
    scale_range=(0.28, 0.45),
    position_jitter=0.12,
    rotation=30.0,
    distractors=1,
    texture_amplitude=0.03,
)
#: Rendering style of the CIFAR-100 stand-in (all 100 identities): larger, more centred objects (the
#: patterned fills need the pixels), moderate rotation, little clutter.
CIFAR100_STYLE = shapes.SynthStyle(
    scale_range=(0.3, 0.46),
    position_jitter=0.1,
    rotation=45.0,
    aspect_jitter=0.1,
    gradient_prob=0.4,
    texture_amplitude=0.03,
    distractors=1,
    distractor_scale=(0.03, 0.07),
    class_offset=0,
)


@dataclass(frozen=True)
class CifarLayout:
    """Where one CIFAR variant keeps what (see the module docstring)."""

    title: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta: str
    label_key: str
    names_key: str
    num_classes: int
    hint: str


CIFAR10 = CifarLayout(
    "CIFAR-10", CIFAR10_DIR, CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILES, CIFAR10_META, "labels", "label_names",
    10, CIFAR10_PREPARE_HINT,
)  # fmt: skip
CIFAR100 = CifarLayout(
    "CIFAR-100", CIFAR100_DIR, ("train",), ("test",), "meta", "fine_labels", "fine_label_names", 100,
    CIFAR100_PREPARE_HINT,
)  # fmt: skip

# ----------------------------------------------------------------------------------------------- reading


def _text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def read_cifar_batches(paths: Sequence[Path], label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate CIFAR batch files into ``(uint8 images [N, 32, 32, 3] HWC, int64 labels [N])``.

    ``label_key`` is ``"labels"`` for CIFAR-10 (``"fine_labels"`` for CIFAR-100).
    """
    images, labels = [], []
    for path in paths:
        entry = read_pickle(path)
        data, batch_labels = entry.get("data"), entry.get(label_key)
        if (
            not isinstance(data, np.ndarray)
            or data.dtype != np.uint8
            or data.ndim != 2
            or data.shape[1] != 3072
        ):
            shape = getattr(data, "shape", None)
            raise DatasetError(
                f"{path}: 'data' must be a uint8 array [N, 3072], got {type(data).__name__} {shape}"
            )
        if batch_labels is None:
            raise DatasetError(f"{path}: no {label_key!r} entry")
        batch = np.asarray(batch_labels, dtype=np.int64).reshape(-1)
        if len(batch) != len(data):
            raise DatasetError(f"{path}: {len(data)} images but {len(batch)} labels")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(batch)
    return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels)


def read_label_names(path: Path, key: str) -> list[str]:
    """Class names from a CIFAR meta pickle (``key`` = ``"label_names"`` for CIFAR-10)."""
    names = read_pickle(path).get(key)
    if not isinstance(names, list) or not names:
        raise DatasetError(f"{path}: missing or empty {key!r}")
    return [_text(name) for name in names]


def _require_files(layout: CifarLayout, folder: Path, names: Sequence[str]) -> list[Path]:
    if not folder.is_dir():
        raise DatasetError(f"{layout.title} not found: no directory {folder}; {layout.hint}")
    paths = [folder / name for name in names]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise DatasetError(f"{layout.title} incomplete: {folder} lacks {', '.join(missing)}; {layout.hint}")
    return paths


def load_cifar(
    layout: CifarLayout, root: Path | str, split: str, size: int = 32, resize: int = 32
) -> ArrayImageDataset:
    """Load ``split`` (``"train"`` or ``"test"``) of the CIFAR variant ``layout`` from ``<root>``.

    Images stay in memory; ``size``/``resize`` configure the eval transform (32/32 = native, no-op).
    """
    if split not in ("train", "test"):
        raise DatasetError(f"{layout.title} has splits 'train' and 'test', not {split!r}")
    folder = Path(root) / layout.folder
    files = layout.train_files if split == "train" else layout.test_files
    meta, *batches = _require_files(layout, folder, (layout.meta, *files))
    classes = read_label_names(meta, layout.names_key)
    images, labels = read_cifar_batches(batches, layout.label_key)
    if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
        raise DatasetError(f"{folder}: labels outside [0, {len(classes)}) for split {split!r}")
    return ArrayImageDataset(images, labels, classes, size=size, resize=resize)


def load_cifar10(root: Path | str, split: str, size: int = 32, resize: int = 32) -> ArrayImageDataset:
    """CIFAR-10 ``split``: ``"train"`` (the 5 data batches) or ``"test"`` (test_batch)."""
    return load_cifar(CIFAR10, root, split, size, resize)


def load_cifar100(root: Path | str, split: str, size: int = 32, resize: int = 32) -> ArrayImageDataset:
    """CIFAR-100 ``split`` (``"train"`` or ``"test"``) with the 100 fine labels and their names."""
    return load_cifar(CIFAR100, root, split, size, resize)


def verify_cifar(layout: CifarLayout, root: Path | str) -> list[str]:
    """Check the layout and contents of one CIFAR variant under ``root``; returns problems (empty if ok).

    Every pickle is read in full, so this also catches damaged files.
    """
    try:
        train, test = load_cifar(layout, root, "train"), load_cifar(layout, root, "test")
    except DatasetError as exc:
        return [str(exc)]
    problems = []
    if train.num_classes != layout.num_classes:
        meta = Path(root) / layout.folder / layout.meta
        problems.append(
            f"{layout.title}: {meta} lists {train.num_classes} class names; expected {layout.num_classes}"
        )
    for split, ds in (("train", train), ("test", test)):
        if len(ds) == 0:
            problems.append(f"{layout.title} {split} split is empty")
        missing = sorted(set(range(ds.num_classes)) - set(np.unique(ds.labels).tolist()))
        if missing:
            shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
            problems.append(f"{layout.title} {split} split has no images of {len(missing)} classes: {shown}")
    if train.classes != test.classes:
        problems.append(f"{layout.title} train and test class names differ")
    return problems


def verify_cifar10(root: Path | str, check_images: bool = False) -> list[str]:
    """Problems with ``<root>/cifar-10-batches-py`` (``check_images`` changes nothing: pickles are read in
    full either way; kept for a uniform API)."""
    del check_images
    return verify_cifar(CIFAR10, root)


def verify_cifar100(root: Path | str, check_images: bool = False) -> list[str]:
    """Problems with ``<root>/cifar-100-python`` (``check_images`` as for :func:`verify_cifar10`)."""
    del check_images
    return verify_cifar(CIFAR100, root)


# ----------------------------------------------------------------------------------------------- writing


def write_cifar10(
    root: Path | str,
    train_images: np.ndarray,
    train_labels: Sequence[int] | np.ndarray,
    test_images: np.ndarray,
    test_labels: Sequence[int] | np.ndarray,
    class_names: Sequence[str],
) -> Path:
    """Write ``<root>/cifar-10-batches-py`` exactly as the official archive lays it out; returns that folder.

    Images are ``uint8`` ``[N, 32, 32, 3]`` (HWC, RGB); the train set is split into 5 batches of (nearly)
    equal size, in order.
    """
    train_y = check_images(train_images, train_labels, len(class_names))
    test_y = check_images(test_images, test_labels, len(class_names))
    folder = Path(root) / CIFAR10_DIR
    folder.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, len(train_images), len(CIFAR10_TRAIN_FILES) + 1).round().astype(int)
    for i, name in enumerate(CIFAR10_TRAIN_FILES):
        lo, hi = bounds[i], bounds[i + 1]
        entry = batch_dict(
            f"training batch {i + 1} of 5", train_images[lo:hi], train_y[lo:hi], class_names, lo
        )
        write_py2_pickle(folder / name, entry)
    entry = batch_dict("testing batch 1 of 1", test_images, test_y, class_names, len(train_images))
    write_py2_pickle(folder / CIFAR10_TEST_FILES[0], entry)
    meta = {
        b"num_cases_per_batch": int(bounds[1] - bounds[0]),
        b"label_names": [name.encode() for name in class_names],
        b"num_vis": 3072,
    }
    write_py2_pickle(folder / CIFAR10_META, meta)
    return folder


def write_cifar100(
    root: Path | str,
    train_images: np.ndarray,
    train_labels: Sequence[int] | np.ndarray,
    test_images: np.ndarray,
    test_labels: Sequence[int] | np.ndarray,
    class_names: Sequence[str],
    coarse_of_class: Sequence[int],
    coarse_names: Sequence[str],
) -> Path:
    """Write ``<root>/cifar-100-python/{train,test,meta}`` as the official archive lays it out; returns the
    folder.  ``train_labels``/``test_labels`` are fine labels (indices into ``class_names``); each image's
    coarse label is ``coarse_of_class[fine]`` (an index into ``coarse_names``)."""
    coarse = np.asarray(coarse_of_class, dtype=np.int64)
    if coarse.shape != (len(class_names),) or coarse.min() < 0 or coarse.max() >= len(coarse_names):
        raise ValueError(f"need one coarse label in [0, {len(coarse_names)}) per class")
    folder = Path(root) / CIFAR100_DIR
    folder.mkdir(parents=True, exist_ok=True)
    first = 0
    for name, images, labels, batch_label in (
        ("train", train_images, train_labels, "training batch 1 of 1"),
        ("test", test_images, test_labels, "testing batch 1 of 1"),
    ):
        fine = check_images(images, labels, len(class_names))
        entry = batch_dict(batch_label, images, fine, class_names, first, label_key=b"fine_labels")
        entry[b"coarse_labels"] = [int(c) for c in coarse[fine]]
        write_py2_pickle(folder / name, entry)
        first += len(images)
    meta = {
        b"fine_label_names": [name.encode() for name in class_names],
        b"coarse_label_names": [name.encode() for name in coarse_names],
    }
    write_py2_pickle(folder / "meta", meta)
    return folder


def _check_scale(scale: str, counts: dict[str, tuple[int, int]]) -> tuple[int, int]:
    if scale not in counts:
        raise DatasetError(f"unknown synthetic scale {scale!r}; choose from {sorted(counts)}")
    return counts[scale]


def write_synthetic_cifar10(root: Path | str, seed: int, scale: str) -> None:
    """Render the procedural CIFAR-10 stand-in (10 shape identities, 32 px) and write it with
    :func:`write_cifar10`; ``scale`` is a key of :data:`CIFAR10_SYNTH_COUNTS`."""
    n_train, n_test = _check_scale(scale, CIFAR10_SYNTH_COUNTS)
    progress = n_train >= 2000
    train_x, train_y = shapes.render(
        n_train, 10, 32, shapes.derive_seed(seed, "cifar10/train"), CIFAR10_STYLE, progress=progress
    )
    test_x, test_y = shapes.render(n_test, 10, 32, shapes.derive_seed(seed, "cifar10/test"), CIFAR10_STYLE)
    names = shapes.identity_names(10, CIFAR10_STYLE.class_offset)
    write_cifar10(root, train_x, train_y, test_x, test_y, names)


def write_synthetic_cifar100(root: Path | str, seed: int, scale: str) -> None:
    """Render the CIFAR-100 stand-in (all 100 shape identities, :data:`CIFAR100_STYLE`, 32 px; names like
    ``stripes_star``, coarse class = shape) and write it with :func:`write_cifar100`; ``scale`` is a key of
    :data:`CIFAR100_SYNTH_COUNTS`."""
    n_train, n_test = _check_scale(scale, CIFAR100_SYNTH_COUNTS)
    num = shapes.NUM_IDENTITIES
    style = CIFAR100_STYLE
    train_x, train_y = shapes.render(
        n_train, num, 32, shapes.derive_seed(seed, "cifar100/train"), style, progress=n_train >= 2000
    )
    test_x, test_y = shapes.render(n_test, num, 32, shapes.derive_seed(seed, "cifar100/test"), style)
    names = [name.replace("-", "_") for name in shapes.identity_names(num, style.class_offset)]
    shape_count = len(shapes.SHAPE_NAMES)
    coarse = [(style.class_offset + k) % num % shape_count for k in range(num)]
    coarse_names = [name.replace("-", "_") for name in shapes.SHAPE_NAMES]
    write_cifar100(root, train_x, train_y, test_x, test_y, names, coarse, coarse_names)
