"""A stand-in for ``mmcv.ops`` when only ``mmcv-lite`` (no compiled ops) is installed.

``mmcv-lite`` ships the Python sources of ``mmcv.ops`` but not the compiled extension ``mmcv._ext``, so
``import mmcv.ops`` fails, and with it ``import mmseg.models``: several mmseg modules import names from
``mmcv.ops`` at import time (``point_sample`` in ``mmseg.models.utils.point_sample``,
``mmseg.utils.mask_classification`` and the SAN head; ``sigmoid_focal_loss`` in the focal loss;
``CrissCrossAttention`` / ``PSAMask`` inside ``try: ... except ModuleNotFoundError``).

:func:`install` registers a small module under ``sys.modules["mmcv.ops"]`` that provides

* ``point_sample``: pure PyTorch (``F.grid_sample`` on points given in [0, 1] image coordinates), the
  same function mmcv implements in Python;
* ``sigmoid_focal_loss``: present so the import succeeds; calling it raises (mmseg itself uses its
  pure-PyTorch ``py_sigmoid_focal_loss`` on CPU tensors);
* every other name: ``ModuleNotFoundError`` naming the compiled op, so mmseg's optional imports fall back
  as they do without mmcv ops.

It does nothing when the full ``mmcv`` (with ``mmcv._ext``) is installed: then the real ops are used.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from typing import Any

import torch
import torch.nn.functional as F

SHIM_NAME = "augbench-mmcv-ops-compat"
FULL_MMCV_HINT = "install the full `mmcv` (compiled ops) instead of `mmcv-lite` to use it"


def full_mmcv_available() -> bool:
    """Whether the compiled ops of the full ``mmcv`` package are importable."""
    try:
        return importlib.util.find_spec("mmcv._ext") is not None
    except (ImportError, ValueError):
        return False


def point_sample(
    input: torch.Tensor, points: torch.Tensor, align_corners: bool = False, **kwargs: Any
) -> torch.Tensor:
    """Bilinearly sample ``input`` at ``points`` (mmcv's ``point_sample`` contract).

    Shapes: ``input`` ``[N, C, H, W]``; ``points`` ``[N, P, 2]`` or ``[N, Hg, Wg, 2]`` holding ``(x, y)`` in
    ``[0, 1] x [0, 1]`` image coordinates.  Returns ``[N, C, P]`` or ``[N, C, Hg, Wg]``.  ``align_corners``
    and ``kwargs`` (``mode``, ``padding_mode``) are passed to :func:`torch.nn.functional.grid_sample`
    (zero padding outside the image).
    """
    squeeze = points.dim() == 3
    grid = points.unsqueeze(2) if squeeze else points
    out = F.grid_sample(input, grid * 2.0 - 1.0, align_corners=align_corners, **kwargs)
    return out.squeeze(3) if squeeze else out


def sigmoid_focal_loss(*args: Any, **kwargs: Any) -> torch.Tensor:
    """Placeholder for mmcv's compiled sigmoid focal loss: always raises."""
    raise RuntimeError(f"mmcv.ops.sigmoid_focal_loss is a compiled mmcv op; {FULL_MMCV_HINT}")


def _missing(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    raise ModuleNotFoundError(f"mmcv.ops.{name} is a compiled mmcv op (not in mmcv-lite); {FULL_MMCV_HINT}")


def build_module() -> types.ModuleType:
    """The ``mmcv.ops`` stand-in module (see the module docstring)."""
    module = types.ModuleType("mmcv.ops", "augbench's pure-PyTorch stand-in for mmcv.ops (mmcv-lite)")
    vars(module).update(
        point_sample=point_sample,
        sigmoid_focal_loss=sigmoid_focal_loss,
        __getattr__=_missing,
        __path__=[],  # a package: ``import mmcv.ops.x`` fails with ModuleNotFoundError
        __augbench__=SHIM_NAME,
    )
    return module


def install() -> bool:
    """Register the stand-in as ``mmcv.ops`` unless the full mmcv is installed; idempotent.

    Must run before mmseg is imported.  Returns whether the stand-in is (now) in use.
    """
    current = sys.modules.get("mmcv.ops")
    if current is not None:
        return getattr(current, "__augbench__", None) == SHIM_NAME
    if full_mmcv_available():
        return False
    import mmcv

    module = build_module()
    sys.modules["mmcv.ops"] = module
    mmcv.ops = module
    return True
