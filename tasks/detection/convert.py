"""Backbone weights for the detectors: key conversion (torchvision -> detectron2) and a strict load check.

detectron2 naming (MoCo's ``convert-pretrain-to-detectron2``): torchvision ResNet keys become

* ``conv1.weight`` -> ``stem.conv1.weight``; ``bn1.*`` -> ``stem.conv1.norm.*``;
* ``layer{i}`` -> ``res{i+1}``; inside a block ``bn{j}`` -> ``conv{j}.norm``;
* ``downsample.0`` -> ``shortcut``; ``downsample.1`` -> ``shortcut.norm``.

The result is given to detectron2's checkpointer with ``matching_heuristics`` (it maps ``res5.*`` onto
``roi_heads.res5.*`` for C4 and ``stem``/``res*`` onto ``backbone.bottom_up.*`` for FPN by suffix).

Whatever the backend, every backbone tensor must end up in the detector: :func:`check_complete` fails with a
:class:`~core.errors.CheckpointError` listing what did not load (detectron2 itself only logs missing keys).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import torch

from core.errors import CheckpointError

_BLOCK_NORM = re.compile(r"\.bn(\d)\.")


def torchvision_to_detectron2(key: str) -> str:
    """One torchvision ResNet key in detectron2's naming (see the module docstring)."""
    if not key.startswith("layer"):
        return "stem." + key.replace("bn1.", "conv1.norm.")
    key = re.sub(r"^layer(\d)", lambda m: f"res{int(m.group(1)) + 1}", key)
    key = _BLOCK_NORM.sub(lambda m: f".conv{m.group(1)}.norm.", key)
    return key.replace("downsample.0.", "shortcut.").replace("downsample.1.", "shortcut.norm.")


def detectron2_to_torchvision(key: str) -> str:
    """The inverse of :func:`torchvision_to_detectron2`."""
    if key.startswith("stem."):
        return key.removeprefix("stem.").replace("conv1.norm.", "bn1.")
    key = re.sub(r"^res(\d)", lambda m: f"layer{int(m.group(1)) - 1}", key)
    key = key.replace("shortcut.norm.", "downsample.1.").replace("shortcut.", "downsample.0.")
    return re.sub(r"\.conv(\d)\.norm\.", lambda m: f".bn{m.group(1)}.", key)


def convert_state_dict(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A torchvision ResNet state dict in detectron2's naming (values unchanged)."""
    out = {torchvision_to_detectron2(k): v for k, v in tensors.items()}
    if len(out) != len(tensors):
        raise CheckpointError("backbone keys collide after conversion to detectron2's naming")
    return out


def _listing(keys: Iterable[str], limit: int = 6) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:limit]) + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def check_complete(
    where: str,
    *,
    not_loaded: Iterable[str] = (),
    wrong_shape: Iterable[str] = (),
    uncovered: Iterable[str] = (),
) -> None:
    """Raise :class:`CheckpointError` unless every backbone tensor loaded into the detector.

    ``not_loaded``: backbone tensors that found no place in the model; ``wrong_shape``: tensors whose
    shape differs from the model's; ``uncovered``: model tensors of the pretrained trunk left at their
    initialisation.
    """
    not_loaded, wrong_shape, uncovered = list(not_loaded), list(wrong_shape), list(uncovered)
    parts = []
    if not_loaded:
        parts.append(f"{len(not_loaded)} backbone tensor(s) not loaded ({_listing(not_loaded)})")
    if wrong_shape:
        parts.append(f"{len(wrong_shape)} with the wrong shape ({_listing(wrong_shape)})")
    if uncovered:
        parts.append(f"{len(uncovered)} trunk tensor(s) of the detector left random ({_listing(uncovered)})")
    if parts:
        raise CheckpointError(f"{where}: " + "; ".join(parts))
