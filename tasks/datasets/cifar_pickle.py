"""CIFAR-style pickles: safe reading (restricted unpickler) and writing of Python-2-style protocol-2 files.

Pickles can execute code, so :func:`read_pickle` uses :class:`RestrictedUnpickler`, which resolves only the
few numpy globals needed to rebuild arrays (and ``_codecs.encode`` limited to latin-1).

:func:`write_py2_pickle` emits the opcodes itself (strings as ``BINSTRING``, arrays through numpy's
``_reconstruct`` recipe), so the files look like the official ones to every reader: ours
(:mod:`tasks.datasets.cifar`, ``encoding="bytes"``) and torchvision's (``encoding="latin1"``).
:func:`batch_dict` builds one batch's dict (``data``, labels under a given key, ``filenames``,
``batch_label``).  The layouts (which files, which keys) live in :mod:`tasks.datasets.cifar`.
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

from core.errors import DatasetError


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


def check_images(images: np.ndarray, labels: Sequence[int] | np.ndarray, num_classes: int) -> np.ndarray:
    """Validate ``uint8 [N, 32, 32, 3]`` images and their labels; returns the labels as ``int64``."""
    if images.dtype != np.uint8 or images.shape[1:] != (32, 32, 3):
        raise ValueError(
            f"CIFAR images must be uint8 [N, 32, 32, 3], got {images.dtype} {list(images.shape)}"
        )
    out = np.asarray(labels, dtype=np.int64)
    if out.shape != (len(images),) or (out.size and (out.min() < 0 or out.max() >= num_classes)):
        raise ValueError(f"need {len(images)} labels in [0, {num_classes})")
    return out


def batch_dict(
    batch_label: str,
    images: np.ndarray,
    labels: np.ndarray,
    names: Sequence[str],
    first: int,
    label_key: bytes = b"labels",
) -> dict[bytes, Any]:
    """One batch: rows ``[N, 3072]`` (R, G, B planes), labels under ``label_key``, ``filenames`` like the
    official ``<class>_s_<number>.png`` (numbered from ``first``) and ``batch_label``."""
    rows = np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), 3072))
    return {
        b"batch_label": batch_label.encode(),
        label_key: [int(label) for label in labels],
        b"data": rows,
        b"filenames": [f"{names[label]}_s_{first + i:06d}.png".encode() for i, label in enumerate(labels)],
    }
