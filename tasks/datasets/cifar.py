"""CIFAR-10, "python version": reader (restricted unpickler), writer of the same layout, synthetic stand-in.

On-disk layout (as extracted from ``cifar-10-python.tar.gz``)::

    <root>/cifar-10-batches-py/data_batch_1 ... data_batch_5   (train)
    <root>/cifar-10-batches-py/test_batch                       (test)
    <root>/cifar-10-batches-py/batches.meta

Each batch is a Python-2 pickle of a dict with (under ``encoding="bytes"``) bytes keys: ``b"data"`` a
``uint8`` array ``[N, 3072]`` (per row the R, G and B planes of a 32x32 image, each row-major),
``b"labels"`` a list of ints, ``b"filenames"`` a list of bytes and ``b"batch_label"`` bytes.  The meta
dict holds ``b"label_names"`` (list of bytes), ``b"num_cases_per_batch"`` and ``b"num_vis"``.

Pickles can execute code, so they are read with :class:`RestrictedUnpickler`, which resolves only the
few numpy globals needed to rebuild arrays.  :func:`write_cifar10` writes Python-2-style protocol-2
pickles (strings as ``BINSTRING``) with its own small opcode emitter, so the files look like the official
ones to every reader (ours with ``encoding="bytes"``, torchvision's with ``encoding="latin1"``).
"""

from __future__ import annotations

import importlib
import io
import pickle
import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import DatasetError
from tasks.datasets.base import ArrayImageDataset
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
#: Synthetic stand-in sizes per scale: (train images, test images).
CIFAR10_SYNTH_COUNTS = {"smoke": (5000, 1000), "tiny": (500, 200)}
#: Rendering style of the CIFAR-10 stand-in (identities 0..9 of :mod:`tasks.datasets.synth.shapes`).
CIFAR10_STYLE = shapes.SynthStyle(
    scale_range=(0.28, 0.45),
    position_jitter=0.12,
    rotation=30.0,
    distractors=1,
    texture_amplitude=0.03,
)

# ----------------------------------------------------------------------------------------------- reading


def _numpy_attr(submodule: str, name: str) -> Callable[[], Any]:
    """Lazy getter for ``numpy._core.<submodule>.<name>`` (``numpy.core`` before numpy 2)."""

    def get() -> Any:
        try:
            module = importlib.import_module(f"numpy._core.{submodule}")
        except ImportError:  # numpy < 1.26 has no numpy._core
            module = importlib.import_module(f"numpy.core.{submodule}")
        return getattr(module, name)

    return get


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` restricted to latin-1: how Python 3 spells bytes in protocol-2 pickles."""
    if (
        not isinstance(text, str)
        or not isinstance(encoding, str)
        or encoding.lower().replace("-", "") != "latin1"
    ):
        raise pickle.UnpicklingError(f"refusing to unpickle _codecs.encode(..., {encoding!r})")
    return text.encode("latin1")


_ALLOWED_GLOBALS: dict[tuple[str, str], Callable[[], Any]] = {
    # Arrays: protocols 0-4 (_reconstruct + ndarray + dtype), protocol 5 (_frombuffer); numpy scalars.
    **{
        (f"{package}.{sub}", name): _numpy_attr(sub, name)
        for package in ("numpy.core", "numpy._core")
        for sub, name in (
            ("multiarray", "_reconstruct"),
            ("multiarray", "scalar"),
            ("numeric", "_frombuffer"),
        )
    },
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    # Python 3 writes bytes into protocol-2 pickles as _codecs.encode(str, "latin1").
    ("_codecs", "encode"): lambda: _latin1_encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals needed to rebuild numpy arrays (and latin-1 bytes).

    Any other global (``os.system``, ``builtins.eval``, ...) raises ``pickle.UnpicklingError`` with
    "refusing to unpickle <module>.<name>" before anything is called.
    """

    def find_class(self, module: str, name: str) -> Any:
        getter = _ALLOWED_GLOBALS.get((module, name))
        if getter is None:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")
        return getter()


def read_pickle(path: Path) -> dict[str, Any]:
    """Read one CIFAR pickle with :class:`RestrictedUnpickler`; bytes keys are decoded to ``str``.

    A missing, truncated, garbled or malicious file raises :class:`DatasetError` naming ``path``.
    """
    try:
        with open(path, "rb") as f:
            obj = RestrictedUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise DatasetError(f"missing CIFAR file {path}") from None
    except Exception as exc:  # truncated/garbled pickles raise many types (EOFError, ValueError, ...)
        raise DatasetError(f"cannot read CIFAR pickle {path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(obj, dict):
        raise DatasetError(f"CIFAR pickle {path} holds a {type(obj).__name__}, expected a dict")
    return {key.decode("latin1") if isinstance(key, bytes) else str(key): value for key, value in obj.items()}


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


def _require_files(folder: Path, names: Sequence[str]) -> list[Path]:
    if not folder.is_dir():
        raise DatasetError(f"CIFAR-10 not found: no directory {folder}; {CIFAR10_PREPARE_HINT}")
    paths = [folder / name for name in names]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise DatasetError(
            f"CIFAR-10 incomplete: {folder} lacks {', '.join(missing)}; {CIFAR10_PREPARE_HINT}"
        )
    return paths


def load_cifar10(root: Path | str, split: str, size: int = 32, resize: int = 32) -> ArrayImageDataset:
    """Load CIFAR-10 ``split`` from ``<root>``: ``"train"`` (the 5 data batches) or ``"test"`` (test_batch).

    Images stay in memory; ``size``/``resize`` configure the eval transform (32/32 = native, no-op).
    """
    if split not in ("train", "test"):
        raise DatasetError(f"CIFAR-10 has splits 'train' and 'test', not {split!r}")
    folder = Path(root) / CIFAR10_DIR
    files = CIFAR10_TRAIN_FILES if split == "train" else CIFAR10_TEST_FILES
    meta, *batches = _require_files(folder, (CIFAR10_META, *files))
    classes = read_label_names(meta, "label_names")
    images, labels = read_cifar_batches(batches, "labels")
    if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
        raise DatasetError(f"{folder}: labels outside [0, {len(classes)}) for split {split!r}")
    return ArrayImageDataset(images, labels, classes, size=size, resize=resize)


def verify_cifar10(root: Path | str, check_images: bool = False) -> list[str]:
    """Check the layout and contents of ``<root>/cifar-10-batches-py``; returns problems (empty if ok).

    Every pickle is read in full either way, so ``check_images`` changes nothing (kept for a uniform API).
    """
    del check_images
    try:
        train, test = load_cifar10(root, "train"), load_cifar10(root, "test")
    except DatasetError as exc:
        return [str(exc)]
    problems = []
    for split, ds in (("train", train), ("test", test)):
        if len(ds) == 0:
            problems.append(f"CIFAR-10 {split} split is empty")
        missing = sorted(set(range(ds.num_classes)) - set(np.unique(ds.labels).tolist()))
        if missing:
            problems.append(f"CIFAR-10 {split} split has no images of classes {missing}")
    if train.classes != test.classes:
        problems.append("CIFAR-10 train and test class names differ")
    return problems


# ----------------------------------------------------------------------------------------------- writing


def _pack_int(value: int) -> bytes:
    if 0 <= value < 256:
        return pickle.BININT1 + bytes([value])
    if 0 <= value < 65536:
        return pickle.BININT2 + struct.pack("<H", value)
    if -(2**31) <= value < 2**31:
        return pickle.BININT + struct.pack("<i", value)
    raise ValueError(f"integer {value} out of range for a CIFAR pickle")


def _pack_string(value: bytes | str) -> bytes:
    """A Python 2 ``str`` (``SHORT_BINSTRING``/``BINSTRING``): bytes under "bytes", str under "latin1"."""
    raw = value.encode("latin1") if isinstance(value, str) else value
    if len(raw) < 256:
        return pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw
    return pickle.BINSTRING + struct.pack("<i", len(raw)) + raw


_DTYPE_U1 = (
    pickle.GLOBAL + b"numpy\ndtype\n" + _pack_string("u1") + pickle.NEWFALSE + pickle.NEWTRUE + pickle.TUPLE3
    + pickle.REDUCE + pickle.MARK + _pack_int(3) + _pack_string("|") + pickle.NONE * 3 + _pack_int(-1)
    + _pack_int(-1) + _pack_int(0) + pickle.TUPLE + pickle.BUILD
)  # fmt: skip


def _emit(obj: Any, out: io.BytesIO) -> None:
    """Append the protocol-2 opcodes that rebuild ``obj`` (dict/list/int/bytes/str/uint8 ndarray)."""
    if isinstance(obj, (bool, np.bool_)) or obj is None:
        out.write(pickle.NONE if obj is None else (pickle.NEWTRUE if obj else pickle.NEWFALSE))
    elif isinstance(obj, (int, np.integer)):
        out.write(_pack_int(int(obj)))
    elif isinstance(obj, (bytes, str)):
        out.write(_pack_string(obj))
    elif isinstance(obj, (list, tuple)):
        out.write(pickle.MARK)
        for item in obj:
            _emit(item, out)
        out.write(pickle.TUPLE if isinstance(obj, tuple) else pickle.LIST)
    elif isinstance(obj, dict):
        out.write(pickle.EMPTY_DICT + pickle.MARK)
        for key, value in obj.items():
            _emit(key, out)
            _emit(value, out)
        out.write(pickle.SETITEMS)
    elif isinstance(obj, np.ndarray) and obj.dtype == np.uint8:
        # numpy's own recipe: _reconstruct(ndarray, (0,), b"b").__setstate__((1, shape, dtype, False, raw))
        out.write(
            pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n" + pickle.GLOBAL + b"numpy\nndarray\n"
        )
        out.write(_pack_int(0) + pickle.TUPLE1 + _pack_string(b"b") + pickle.TUPLE3 + pickle.REDUCE)
        out.write(pickle.MARK + _pack_int(1))
        _emit(tuple(obj.shape), out)
        out.write(_DTYPE_U1 + pickle.NEWFALSE + _pack_string(np.ascontiguousarray(obj).tobytes()))
        out.write(pickle.TUPLE + pickle.BUILD)
    else:
        raise TypeError(f"cannot write {type(obj).__name__} into a CIFAR pickle")


def write_py2_pickle(path: Path, obj: dict[bytes, Any]) -> None:
    """Write ``obj`` as a Python-2-style protocol-2 pickle (the format of the official CIFAR files)."""
    out = io.BytesIO()
    out.write(pickle.PROTO + bytes([2]))
    _emit(obj, out)
    out.write(pickle.STOP)
    path.write_bytes(out.getvalue())


def _check_images(images: np.ndarray, labels: Sequence[int] | np.ndarray, num_classes: int) -> np.ndarray:
    if images.dtype != np.uint8 or images.shape[1:] != (32, 32, 3):
        raise ValueError(
            f"CIFAR images must be uint8 [N, 32, 32, 3], got {images.dtype} {list(images.shape)}"
        )
    out = np.asarray(labels, dtype=np.int64)
    if out.shape != (len(images),) or (out.size and (out.min() < 0 or out.max() >= num_classes)):
        raise ValueError(f"need {len(images)} labels in [0, {num_classes})")
    return out


def _batch_dict(
    batch_label: str, images: np.ndarray, labels: np.ndarray, names: Sequence[str], first: int
) -> dict:
    rows = np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), 3072))
    return {
        b"batch_label": batch_label.encode(),
        b"labels": [int(label) for label in labels],
        b"data": rows,
        b"filenames": [f"{names[label]}_s_{first + i:06d}.png".encode() for i, label in enumerate(labels)],
    }


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
    train_y = _check_images(train_images, train_labels, len(class_names))
    test_y = _check_images(test_images, test_labels, len(class_names))
    folder = Path(root) / CIFAR10_DIR
    folder.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, len(train_images), len(CIFAR10_TRAIN_FILES) + 1).round().astype(int)
    for i, name in enumerate(CIFAR10_TRAIN_FILES):
        lo, hi = bounds[i], bounds[i + 1]
        entry = _batch_dict(
            f"training batch {i + 1} of 5", train_images[lo:hi], train_y[lo:hi], class_names, lo
        )
        write_py2_pickle(folder / name, entry)
    entry = _batch_dict("testing batch 1 of 1", test_images, test_y, class_names, len(train_images))
    write_py2_pickle(folder / CIFAR10_TEST_FILES[0], entry)
    meta = {
        b"num_cases_per_batch": int(bounds[1] - bounds[0]),
        b"label_names": [name.encode() for name in class_names],
        b"num_vis": 3072,
    }
    write_py2_pickle(folder / CIFAR10_META, meta)
    return folder


def write_synthetic_cifar10(root: Path | str, seed: int, scale: str) -> None:
    """Render the procedural CIFAR-10 stand-in (10 shape identities, 32 px) and write it with
    :func:`write_cifar10`; ``scale`` is a key of :data:`CIFAR10_SYNTH_COUNTS`."""
    if scale not in CIFAR10_SYNTH_COUNTS:
        raise DatasetError(f"unknown synthetic scale {scale!r}; choose from {sorted(CIFAR10_SYNTH_COUNTS)}")
    n_train, n_test = CIFAR10_SYNTH_COUNTS[scale]
    progress = n_train >= 2000
    train_x, train_y = shapes.render(
        n_train, 10, 32, shapes.derive_seed(seed, "cifar10/train"), CIFAR10_STYLE, progress=progress
    )
    test_x, test_y = shapes.render(n_test, 10, 32, shapes.derive_seed(seed, "cifar10/test"), CIFAR10_STYLE)
    names = shapes.identity_names(10, CIFAR10_STYLE.class_offset)
    write_cifar10(root, train_x, train_y, test_x, test_y, names)
