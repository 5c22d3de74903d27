"""Checkpoints: full training state (resumable) and the exported backbone (safetensors).

* Training state: ``torch.save`` of plain containers of tensors/numbers, always loaded with
  ``torch.load(weights_only=True)`` so no pickled code is ever executed.
* Exported backbone: ``backbone.safetensors`` holding the torchvision-structured ResNet state dict
  (``conv1.weight``, ``layer1.0.bn1.running_mean``, ...) and string metadata (recipe, step, code version).

Every write goes to a temporary file in the same directory and is renamed into place (atomic on POSIX),
so a kill never leaves a truncated checkpoint under the final name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from core.errors import CheckpointError
from core.fsutil import atomic_path

EXPORT_FORMAT = "augbench-backbone/1"


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Atomically write a training-state checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a training-state checkpoint without unpickling arbitrary objects."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint not found: {path}") from None
    except Exception as exc:  # corrupt file or disallowed pickled globals
        raise CheckpointError(f"cannot load checkpoint {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not an augbench training checkpoint")
    return state


def export_backbone(path: Path, net: nn.Module, metadata: dict[str, Any]) -> None:
    """Write ``net.state_dict()`` as safetensors with JSON-encoded ``metadata`` values."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    meta = {"format": EXPORT_FORMAT, **{k: json.dumps(v) for k, v in metadata.items()}}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def read_backbone_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and decoded metadata of an exported backbone."""
    if not path.is_file():
        raise CheckpointError(f"backbone file not found: {path}")
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            raw = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read safetensors file {path}: {exc}") from None
    meta: dict[str, Any] = {}
    for k, v in raw.items():
        try:
            meta[k] = json.loads(v)
        except json.JSONDecodeError:
            meta[k] = v
    return tensors, meta


def require_finite(tensors: dict[str, torch.Tensor], source: str) -> None:
    """Raise :class:`CheckpointError` naming the tensors of ``source`` that hold NaN or infinite values
    (a diverged or corrupted checkpoint would otherwise give meaningless scores)."""
    bad = sorted(k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all()))
    if bad:
        raise CheckpointError(
            f"{source}: {len(bad)} tensor(s) hold NaN or infinite values (e.g. {', '.join(bad[:3])}); "
            f"the weights are unusable (diverged or corrupted)"
        )


def load_into(net: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> list[str]:
    """Load ``tensors`` into ``net`` requiring every key and shape to match; returns the loaded keys.

    A partial or mismatched load is a :class:`CheckpointError` that lists what differs (silent
    partial loads are the classic failure of transfer benchmarks).
    """
    own = net.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    shape = sorted(k for k in set(own) & set(tensors) if own[k].shape != tensors[k].shape)
    if missing or unexpected or shape:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shape)):
            if keys:
                parts.append(f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})")
        raise CheckpointError(f"{source} does not match the backbone: " + "; ".join(parts))
    require_finite(tensors, source)
    net.load_state_dict(tensors, strict=True)
    return sorted(tensors)
