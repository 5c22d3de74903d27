"""Loading external checkpoints into a registered backbone, without executing pickled code.

Accepted files:

* ``*.safetensors`` (e.g. our own ``backbone.safetensors``, or any safetensors state dict);
* PyTorch files (``.pt``, ``.pth``, ``.pth.tar``, ``.ckpt``) read with ``torch.load(weights_only=True)``:
  a plain state dict (torchvision style) or a training checkpoint that nests it under one of
  :data:`CONTAINER_KEYS` (MoCo / SimCLR / Lightning style: ``{"state_dict": {...}, "epoch": ...}``).
  A file that needs arbitrary pickled objects is refused (:class:`~core.errors.CheckpointError`).

Key matching: the checkpoint's keys usually carry a prefix in front of the torchvision ResNet keys
(MoCo v2: ``module.encoder_q.``; Lightning: ``backbone.``; DDP: ``module.``).  For every checkpoint key
that *ends with* a backbone key, the part in front is a candidate prefix; the prefix explaining the most
backbone keys wins (ties: the shortest, then the one met first in the file, e.g. MoCo's query encoder
``encoder_q`` before its momentum encoder ``encoder_k``), unless ``prefix`` is given explicitly.
Under that prefix:

* backbone keys found with the right shape are loaded;
* backbone keys that are absent (``missing``) or have another shape (``mismatched``) make the load an error
  unless ``allow_partial`` (then they keep their random initialisation and the report lists them);
  BatchNorm's ``num_batches_tracked`` counters are exempt (they do not affect evaluation);
* checkpoint keys that are not backbone keys (projection heads, the classifier ``fc.*``, the momentum
  encoder, ...) are ignored and counted in the report.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.errors import CheckpointError
from pretrain.checkpoint import read_backbone_file, require_finite

CONTAINER_KEYS = ("state_dict", "model", "module", "backbone", "model_state_dict", "network")
EXEMPT_SUFFIX = "num_batches_tracked"


@dataclass(frozen=True)
class LoadReport:
    """What an external load did (recorded in results)."""

    path: str
    sha256: str
    prefix: str
    loaded: list[str]
    missing: list[str]
    mismatched: list[str]
    ignored: list[str]
    exempt_missing: list[str] = field(default_factory=list)

    def summary(self) -> str:
        total = len(self.loaded) + len(self.missing) + len(self.mismatched) + len(self.exempt_missing)
        text = f"loaded {len(self.loaded)}/{total} backbone tensors from {self.path}"
        text += f" (key prefix {self.prefix!r})" if self.prefix else ""
        if self.missing or self.mismatched:
            text += f"; NOT loaded: {len(self.missing)} missing, {len(self.mismatched)} shape-mismatched"
        if self.ignored:
            text += f"; ignored {len(self.ignored)} non-backbone tensors (e.g. {', '.join(self.ignored[:3])})"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "sha256": self.sha256,
            "prefix": self.prefix,
            "loaded": len(self.loaded),
            "missing": self.missing,
            "mismatched": self.mismatched,
            "ignored": len(self.ignored),
            "ignored_examples": self.ignored[:20],
            "exempt_missing": len(self.exempt_missing),
        }


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _tensor_dict(obj: Any) -> dict[str, torch.Tensor] | None:
    if isinstance(obj, dict) and obj and all(isinstance(k, str) for k in obj):
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if len(tensors) >= max(1, len(obj) // 2):
            return tensors
    return None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The flat ``name -> tensor`` dict stored in ``path`` (see module docstring for the formats)."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return read_backbone_file(path)[0]
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, or pickled globals that weights_only refuses
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()  # torch colours parts of its message
        first = text.splitlines()[0] if text else type(exc).__name__
        raise CheckpointError(
            f"cannot load {path} safely (torch.load with weights_only=True): {first}. Only tensors, "
            f"numbers and containers are accepted; re-save the state dict or convert it to safetensors"
        ) from None
    for candidate in (obj, *(obj.get(k) for k in CONTAINER_KEYS if isinstance(obj, dict))):
        tensors = _tensor_dict(candidate)
        if tensors is not None:
            return tensors
    keys = list(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
    raise CheckpointError(f"{path} holds no state dict of tensors (top-level keys: {keys})")


def best_prefix(keys: list[str], own: set[str]) -> str:
    """The key prefix under which the most backbone keys (``own``) are found (ties: the shortest, then
    the first met in ``keys``)."""
    votes: Counter[str] = Counter()
    for key in keys:
        for name in own:
            if key.endswith(name) and (len(key) == len(name) or key[-len(name) - 1] == "."):
                votes[key[: len(key) - len(name)]] += 1
    if not votes:
        return ""
    return min(votes, key=lambda p: (-votes[p], len(p)))


def load_external(
    net: nn.Module, path: Path, *, prefix: str | None = None, allow_partial: bool = False
) -> LoadReport:
    """Load the checkpoint at ``path`` into ``net`` (see module docstring); returns what was loaded."""
    tensors = read_state_dict(path)
    own = net.state_dict()
    chosen = best_prefix(list(tensors), set(own)) if prefix is None else prefix
    under = {k[len(chosen) :]: v for k, v in tensors.items() if k.startswith(chosen)}
    loaded = sorted(k for k in own if k in under and under[k].shape == own[k].shape)
    mismatched = sorted(k for k in own if k in under and under[k].shape != own[k].shape)
    absent = sorted(k for k in own if k not in under)
    exempt = [k for k in absent if k.endswith(EXEMPT_SUFFIX)]
    missing = [k for k in absent if not k.endswith(EXEMPT_SUFFIX)]
    ignored = sorted(k for k in tensors if not (k.startswith(chosen) and k[len(chosen) :] in own))
    report = LoadReport(str(path), file_sha256(path), chosen, loaded, missing, mismatched, ignored, exempt)
    if not loaded:
        raise CheckpointError(
            f"{path}: no tensor matches the backbone ({len(tensors)} tensors, e.g. "
            f"{', '.join(list(tensors)[:3])}); is --backbone right?"
        )
    if (missing or mismatched) and not allow_partial:
        parts = [f"{len(v)} {n} (e.g. {', '.join(v[:3])})" for n, v in (("missing", missing),
                 ("shape-mismatched", mismatched)) if v]  # fmt: skip
        raise CheckpointError(
            f"{path} does not fully match the backbone: "
            + "; ".join(parts)
            + " (pass --allow-partial to evaluate anyway with those tensors left random)"
        )
    require_finite({k: under[k] for k in loaded}, str(path))
    with torch.no_grad():
        for k in loaded:
            own[k].copy_(under[k])
    return report
