"""Representation metrics as ordinary tasks: invariance / diversity, CKA and OPD.

They are built from task templates (:mod:`tasks.registry`), so the task name is what the user typed and
results sit next to accuracies in result files and leaderboards.  Full definitions, estimators, memory
bounds and a small study: ``docs/representation.md``.

``invariance[:<policy>[:<layer>]]`` (:class:`InvarianceTask`, family ``invariance``)
    Metrics ``invariance`` (primary) and ``diversity`` (definitions in
    :mod:`tasks.representation.invariance`) of the evaluated weights under an augmentation policy.

    * ``policy``: a recipe name (or recipe file) whose ``augment`` config and ``data.image_size`` are used,
      resolved under the run's profile; empty or omitted = the evaluated recipe's own resolved config
      (``moco`` for an external checkpoint).  Any policy works, including masking and mixing stages.
    * ``layer``: ``backbone`` (default; the pooled backbone features) or ``projector`` (the method's
      projection head applied to them, loaded from the run's ``checkpoints/last.pt``; recipe runs only).
    * anchors: ``min(A, N)`` images of the ``imagenet`` test split (``val``), a subset drawn without
      replacement by ``numpy.random.default_rng(anchor_seed)`` and read in index order, in near-equal
      batches of at most ``batch_size``; ``K`` views per anchor (:mod:`tasks.representation.views`).
      The view randomness comes from a ``torch.Generator`` on the task's device seeded with the run's
      seed.  Values per profile (:data:`INVARIANCE`): smoke ``A = 512, K = 8``, paper ``A = 5000, K = 10``.
    * The anchor set is fixed per profile (not per recipe), so values compare across recipes; ImageNet is
      the pretraining data of every registered recipe in both profiles.

``cka:<recipe|checkpoint>[@<dataset>]`` / ``opd:<recipe|checkpoint>[@<dataset>]`` (:class:`ComparisonTask`)
    The evaluated backbone against a reference backbone (``TaskContext.reference``: a recipe pretrained or
    reused with the same profile, data and seed, or a checkpoint file) on the same images: the cached
    frozen features (:func:`tasks.frozen.split_feature_set`, shared with ``linear/`` and ``knn/``) of the test
    split of ``dataset`` (default ``imagenet``: its ``val`` split) with that dataset's eval transform.

    * ``cka``: metrics ``cka`` (exact full-data linear CKA, streamed from the fp16 feature memmaps with
      :class:`~tasks.representation.cka.StreamingLinearCKA`; memory ``O((D1 + D2)^2)``) and
      ``cka_minibatch`` (the unbiased-HSIC minibatch estimator, :func:`minibatch_linear_cka`, minibatches
      of :data:`MINIBATCH_SIZE` rows read by index from the memmaps, :func:`minibatch_epochs` passes, seed
      :data:`MINIBATCH_SEED`).
    * ``opd``: metric ``opd`` (orthogonal Procrustes distance, centred and Frobenius-normalised, in
      ``[0, 2]``, lower = more similar; streamed, memory ``O(D1 D2)``).

Every metric here is descriptive (``higher_is_better: null`` in results, :class:`tasks.base.Metric` with
``None``): more invariance, diversity or similarity is not "better" per se, so leaderboards mark no best
value for them (OPD is a distance: lower = more similar, not better).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from core.config import to_dict
from core.errors import BenchError, ConfigError, UnknownNameError
from pretrain.augment.policy import AugmentPolicy
from pretrain.backbones import Backbone
from pretrain.config import RecipeConfig
from tasks.base import Metric, TaskContext, TaskOutput
from tasks.datasets.registry import DATASETS
from tasks.features import FeatureSet
from tasks.frozen import EvalResolution, split_feature_set
from tasks.representation.cka import minibatch_linear_cka, streaming_linear_cka
from tasks.representation.opd import streaming_procrustes_distance
from tasks.representation.views import VIEW, load_projector, measure_invariance, stages_on_view

__all__ = [
    "CKA_DESCRIPTION",
    "CKA_USAGE",
    "INVARIANCE",
    "INVARIANCE_DESCRIPTION",
    "INVARIANCE_USAGE",
    "OPD_DESCRIPTION",
    "OPD_USAGE",
    "ComparisonTask",
    "InvarianceSettings",
    "InvarianceTask",
    "build_comparison_task",
    "build_invariance_task",
]

Layer = Literal["backbone", "projector"]
LAYERS: tuple[Layer, ...] = ("backbone", "projector")
DEFAULT_POLICY = "moco"
"""Policy of the bare ``invariance`` task for an external checkpoint (no recipe of its own)."""
ANCHOR_DATASET = "imagenet"
DEFAULT_COMPARISON_DATASET = "imagenet"
MINIBATCH_SIZE = 256
MINIBATCH_SEED = 0

INVARIANCE_USAGE = "invariance[:<policy recipe>[:backbone|projector]]"
INVARIANCE_DESCRIPTION = (
    "invariance and diversity of the embedding under a recipe's augmentation policy "
    "(default: the evaluated recipe's), imagenet val anchors"
)
CKA_USAGE = "cka:<recipe|checkpoint>[@<dataset>]"
CKA_DESCRIPTION = "linear CKA (exact + unbiased minibatch) vs a reference backbone, test-split features"
OPD_USAGE = "opd:<recipe|checkpoint>[@<dataset>]"
OPD_DESCRIPTION = "orthogonal Procrustes distance (centred, Frobenius-normalised) vs a reference backbone"


@dataclass(frozen=True)
class InvarianceSettings:
    """Anchors ``A``, views per anchor ``K``, anchors per batch, and the anchor-subset seed."""

    anchors: int
    views: int
    batch_size: int
    anchor_seed: int = 0


INVARIANCE = {
    "smoke": InvarianceSettings(anchors=512, views=8, batch_size=128),
    "paper": InvarianceSettings(anchors=5000, views=10, batch_size=250),
}


# ------------------------------------------------------------------------------------------- parsing


def _check_policy(policy: str) -> None:
    """A recipe name (unknown names raise with "did you mean") or an existing recipe file."""
    from pretrain.recipes import get_recipe

    if policy.endswith((".yaml", ".yml")):
        if not Path(policy).expanduser().is_file():
            raise ConfigError(f"invariance policy recipe file not found: {policy}")
        return
    get_recipe(policy)


def build_invariance_task(arg: str | None) -> InvarianceTask:
    """The task named ``invariance[:<arg>]``, ``arg = <policy>[:<layer>]`` (validated here)."""
    if not arg:
        return InvarianceTask("invariance")
    policy, _, layer = arg.partition(":")
    if ":" in layer:
        raise ConfigError(f"task 'invariance:{arg}' has too many ':' fields; usage: {INVARIANCE_USAGE}")
    layer = layer or "backbone"
    if layer not in LAYERS:
        raise UnknownNameError("invariance layer", layer, LAYERS)
    if policy in LAYERS:
        raise ConfigError(
            f"'{policy}' is a layer, not a policy recipe: write 'invariance::{policy}' for the default policy"
        )
    if policy:
        _check_policy(policy)
    chosen: Layer = "projector" if layer == "projector" else "backbone"
    return InvarianceTask(f"invariance:{arg}", policy or None, chosen)


def _split_dataset(arg: str) -> tuple[str, str | None]:
    """``<reference>[@<dataset>]``: a suffix after the last ``@`` without ``/`` or ``.`` is a dataset."""
    ref, sep, ds = arg.rpartition("@")
    if not sep or "/" in ds or "." in ds:
        return arg, None
    if not ref:
        raise ConfigError(f"'{arg}' names no reference before '@'")
    return ref, ds


def build_comparison_task(
    kind: Literal["cka", "opd"], resolutions: Mapping[str, Mapping[str, EvalResolution]], arg: str | None
) -> ComparisonTask:
    """The task named ``<kind>:<arg>``; ``resolutions``: eval resolution per dataset and profile."""
    usage = CKA_USAGE if kind == "cka" else OPD_USAGE
    if not arg:
        raise ConfigError(f"task {kind!r} needs a reference: {usage}")
    ref, dataset = _split_dataset(arg)
    if dataset is not None and dataset not in resolutions:
        raise UnknownNameError(f"{kind} dataset", dataset, resolutions)
    ds = dataset or DEFAULT_COMPARISON_DATASET
    return ComparisonTask(f"{kind}:{arg}", kind, ref, ds, dict(resolutions[ds]))


# ----------------------------------------------------------------------------------------- invariance


def _anchor_indices(n: int, s: InvarianceSettings) -> np.ndarray:
    """``min(A, n)`` distinct indices of ``range(n)`` (seeded), sorted."""
    if n <= s.anchors:
        return np.arange(n)
    rng = np.random.default_rng(s.anchor_seed)
    return np.sort(rng.choice(n, size=s.anchors, replace=False))


def _batches(n: int, batch_size: int) -> list[list[int]]:
    """``range(n)`` cut into ``ceil(n / batch_size)`` consecutive batches of near-equal size."""
    return [b.tolist() for b in np.array_split(np.arange(n), max(1, math.ceil(n / batch_size)))]


@dataclass(frozen=True)
class InvarianceTask:
    """Invariance and diversity under a policy (see the module docstring and ``docs/representation.md``)."""

    name: str
    policy: str | None = None  # recipe name/file; None: the evaluated recipe's (checkpoints: DEFAULT_POLICY)
    layer: Layer = "backbone"
    version: int = 1
    family: str = "invariance"
    primary: str = "invariance"
    metrics: tuple[Metric, ...] = (Metric("invariance", None), Metric("diversity", None))

    @property
    def datasets(self) -> tuple[str, ...]:
        return (ANCHOR_DATASET,)

    @property
    def description(self) -> str:
        policy = self.policy or "the evaluated recipe's policy"
        return f"invariance/diversity of the {self.layer} embedding under {policy}, {ANCHOR_DATASET} anchors"

    def protocol(self, profile: str) -> dict[str, Any]:
        s = INVARIANCE[profile]
        return {
            "name": "invariance-diversity",
            "policy": self.policy or "evaluated-recipe",
            "layer": self.layer,
            "anchors": s.anchors,
            "views_per_anchor": s.views,
            "batch_size": s.batch_size,
            "anchor_seed": s.anchor_seed,
            "anchor_dataset": ANCHOR_DATASET,
            "anchor_split": DATASETS.get(ANCHOR_DATASET).test_split,
            "view_index": VIEW,
            "clean_anchor": "whole source image resampled to the view size (view pipeline's crop op)",
            "embedding_precision": "fp32",
        }

    def _policy_recipe(self, ctx: TaskContext) -> RecipeConfig:
        from pretrain.recipes import resolve_recipe

        if self.policy is None:
            return ctx.recipe if ctx.recipe is not None else resolve_recipe(DEFAULT_POLICY, ctx.profile)
        return resolve_recipe(self.policy, ctx.profile)

    def run(self, backbone: Backbone, ctx: TaskContext) -> TaskOutput:
        t0 = time.perf_counter()
        s = INVARIANCE[ctx.profile]
        recipe = self._policy_recipe(ctx)
        embed: torch.nn.Module = backbone
        provenance: dict[str, str] = {}
        if self.layer == "projector":
            embed, provenance = load_projector(ctx.recipe, ctx.run_dir, ctx.weights_digest, ctx.device)
        info = DATASETS.get(ANCHOR_DATASET)
        size = recipe.data.image_size
        ds = info.load(ctx.data_root, info.test_split, size=size, resize=size, on_corrupt=ctx.on_corrupt)
        idx = _anchor_indices(len(ds), s)
        batches = _batches(len(idx), s.batch_size)
        loader = DataLoader(Subset(ds, idx.tolist()), batch_sampler=batches, num_workers=ctx.num_workers)
        generator = torch.Generator(device=ctx.device).manual_seed(ctx.seed)
        was_training = embed.training
        embed.eval()
        try:
            acc, anchor_cos = measure_invariance(
                embed, _images(loader), AugmentPolicy(recipe.augment), s.views, generator, ctx.device
            )
        finally:
            embed.train(was_training)
        return TaskOutput(
            metrics={"invariance": acc.invariance(), "diversity": acc.diversity()},
            details={
                "policy": recipe.name,
                "policy_augment": to_dict(recipe.augment),
                "source_image_size": size,
                "view_size": recipe.augment.views[VIEW].size,
                "stages_on_view": stages_on_view(recipe.augment),
                "stages_not_on_view": [s_.kind for s_ in recipe.augment.stages if VIEW not in s_.views],
                "layer": self.layer,
                **provenance,
                "anchor_pair_cosine": anchor_cos,
                "embedding_dim": acc.d,
                "views_per_anchor": s.views,
                "anchors": int(acc.anchors),
                "anchor_pool": len(ds),
                "anchor_seed": s.anchor_seed,
                "view_seed": ctx.seed,
                "skipped_images": len(getattr(ds, "skipped", ())),
                "seconds": time.perf_counter() - t0,
            },
        )


def _images(loader: DataLoader[Any]) -> Iterator[torch.Tensor]:
    for images, _ in loader:
        yield images


# ---------------------------------------------------------------------------------------- comparison


def minibatch_epochs(n: int, batch_size: int) -> int:
    """Passes over the data for the minibatch CKA: enough for >= 20 minibatches, between 1 and 10."""
    per_epoch = max(1, n // batch_size)
    return min(10, max(1, math.ceil(20 / per_epoch)))


@dataclass(frozen=True)
class ComparisonTask:
    """CKA or OPD between the evaluated backbone and a reference (see the module docstring)."""

    name: str
    kind: Literal["cka", "opd"]
    reference: str
    dataset: str
    resolutions: dict[str, EvalResolution]
    version: int = 1

    @property
    def family(self) -> str:
        return self.kind

    @property
    def primary(self) -> str:
        return self.kind

    @property
    def metrics(self) -> tuple[Metric, ...]:
        if self.kind == "cka":
            return (Metric("cka", None), Metric("cka_minibatch", None))
        return (Metric("opd", None),)

    @property
    def datasets(self) -> tuple[str, ...]:
        return (self.dataset,)

    @property
    def split(self) -> str:
        return DATASETS.get(self.dataset).test_split

    @property
    def description(self) -> str:
        what = "linear CKA" if self.kind == "cka" else "orthogonal Procrustes distance"
        return f"{what} vs {self.reference} on {self.dataset} {self.split} features"

    def protocol(self, profile: str) -> dict[str, Any]:
        proto: dict[str, Any] = {
            "name": "linear-cka" if self.kind == "cka" else "opd-centred-frobenius",
            "reference": self.reference,
            "dataset": self.dataset,
            "split": self.split,
            "eval_transform": self.resolutions[profile].transform,
            "features": "frozen pooled backbone features, fp16 cache",
        }
        if self.kind == "cka":
            proto["minibatch"] = {"batch_size": MINIBATCH_SIZE, "seed": MINIBATCH_SEED, "estimator": "hsic1"}
        return proto

    def _test_features(self, backbone: Backbone, ctx: TaskContext) -> FeatureSet:
        # only the test split, under the same cache key as linear/knn
        res = self.resolutions[ctx.profile]
        return split_feature_set(backbone, self.dataset, self.split, res, ctx)[0]

    def run(self, backbone: Backbone, ctx: TaskContext) -> TaskOutput:
        t0 = time.perf_counter()
        if ctx.reference is None:
            raise BenchError(f"task {self.name} needs a reference resolver (run it via bench run / eval)")
        ref = ctx.reference(self.reference)
        own = self._test_features(backbone, ctx)
        other = self._test_features(ref.backbone, dataclasses.replace(ctx, weights_digest=ref.digest))
        if not np.array_equal(own.labels, other.labels):
            raise BenchError(f"task {self.name}: the two feature sets cover different images")
        n = len(own)
        details: dict[str, Any] = {
            "reference": {"label": ref.label, "weights_digest": ref.digest, **ref.details},
            "dataset": self.dataset,
            "split": self.split,
            "n_images": n,
            "feature_dims": [own.dim, other.dim],
        }
        if self.kind == "cka":
            bs = min(MINIBATCH_SIZE, n)
            epochs = minibatch_epochs(n, bs)
            metrics = {
                "cka": streaming_linear_cka(own.features, other.features),
                "cka_minibatch": minibatch_linear_cka(
                    own.features, other.features, batch_size=bs, epochs=epochs, seed=MINIBATCH_SEED
                ),
            }
            details["minibatch"] = {"batch_size": bs, "epochs": epochs, "batches": epochs * (n // bs)}
        else:
            metrics = {"opd": streaming_procrustes_distance(own.features, other.features)}
        details["seconds"] = time.perf_counter() - t0
        return TaskOutput(metrics=metrics, details=details)
