"""The task contract.

A task is a declared object: ``name`` (what users type, e.g. ``linear/cifar10``), ``version`` (bumped
whenever its scores could change), ``family``, the ``datasets`` it needs, its ``metrics`` (with
``higher_is_better``) and ``primary`` metric, its ``protocol(profile)`` (recorded in results) and
``run(backbone, ctx) -> TaskOutput``.  Tasks never launch processes; the harness decides where they run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from pretrain.backbones import Backbone
from pretrain.config import RecipeConfig
from tasks.datasets.base import OnCorrupt


@dataclass(frozen=True)
class Metric:
    """A reported metric.  ``higher_is_better``: ``True`` / ``False``, or ``None`` for a *descriptive*
    metric (invariance, CKA, ...) that has no better direction (leaderboards mark no best value for it)."""

    name: str
    higher_is_better: bool | None = True


@dataclass(frozen=True, eq=False)
class Reference:
    """A second backbone a comparison task (CKA, OPD) measures against.

    ``label``: what the user named (a recipe name or a checkpoint path); ``digest``: hash of its weights
    (feature-cache key); ``details``: provenance to record (its run directory or checkpoint sha256).
    """

    label: str
    backbone: Backbone
    digest: str
    details: dict[str, Any]


@dataclass(frozen=True)
class TaskContext:
    """Everything a task may use besides the backbone.

    Attributes:
        data_root: the dataset root (real data or the synthetic stand-ins).
        synthetic: whether ``data_root`` holds the synthetic stand-ins.
        profile: "smoke" or "paper" (sets resolutions and probe budgets).
        weights_digest: content hash of the backbone weights (feature-cache key).
        on_corrupt: unreadable images: "raise" (fail naming the file) or "skip" (drop them, scanned up
            front; results list them in ``details.skipped_images``).
        work_dir: a directory a long task may keep resumable state in (``None``: no resume).
        recipe: the evaluated recipe (``None`` for an external checkpoint).
        run_dir: its run directory (``checkpoints/last.pt`` holds the full method state), or ``None``.
        reference: resolves a recipe name or checkpoint path to a :class:`Reference` backbone (the
            harness pretrains or reuses the recipe's run with the same profile, data and seed).
    """

    data_root: Path
    synthetic: bool
    profile: str
    device: torch.device
    cache_dir: Path
    seed: int
    weights_digest: str
    progress: bool = True
    num_workers: int = 0
    on_corrupt: OnCorrupt = "raise"
    work_dir: Path | None = None
    recipe: RecipeConfig | None = None
    run_dir: Path | None = None
    reference: Callable[[str], Reference] | None = None


@dataclass(frozen=True)
class TaskOutput:
    metrics: dict[str, float]
    details: dict[str, Any] = field(default_factory=dict)


class Task(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def family(self) -> str: ...
    @property
    def datasets(self) -> tuple[str, ...]: ...
    @property
    def metrics(self) -> tuple[Metric, ...]: ...
    @property
    def primary(self) -> str: ...
    @property
    def description(self) -> str: ...

    def protocol(self, profile: str) -> dict[str, Any]: ...

    def run(self, backbone: Backbone, ctx: TaskContext) -> TaskOutput: ...
