"""Frozen-feature classification tasks: the linear probe (``linear/<dataset>``) and kNN (``knn/<dataset>``).

Both run on the same cached features (:mod:`tasks.frozen`): the backbone is frozen, each split passes
once through the deterministic eval transform (resize the shorter side, centre crop; resolutions per
dataset and profile in :mod:`tasks.registry`) and its pooled features are cached as fp16.

* Protocol ``linear-cached`` (:class:`LinearProbeTask`): a linear classifier fitted on the cached train
  features with a hyper-parameter sweep trained in one pass, selected on a validation split carved from
  train (never the test split), refitted on the whole train split (:mod:`tasks.linear`); top-1 / top-5
  (%) on the dataset's test split.
* Protocol ``knn-cosine`` (:class:`KnnTask`): InstDisc's temperature-weighted cosine kNN (T = 0.07) with
  k = 20 and k = 200 (:mod:`tasks.knn`); nothing is fitted, so nothing can be selected on the test split.

Which split is "test" is the dataset's ``test_split`` (CIFAR: test; ImageNet, Places365, iNat 2018: val;
Food-101: test).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from pretrain.backbones import Backbone
from tasks.base import Metric, TaskContext, TaskOutput
from tasks.datasets.registry import DATASETS
from tasks.frozen import EvalResolution, SplitFeatures, split_features
from tasks.knn import KnnConfig, knn_classify
from tasks.linear import ProbeConfig, fit_linear_probe

# Probe budgets per profile (the sweep is cheap on cached features, so both use the full sweep).
SMOKE_PROBE = ProbeConfig()
PAPER_PROBE = ProbeConfig()
KNN = KnnConfig()


@dataclass(frozen=True)
class _FrozenTask:
    """Common part of the frozen-feature tasks on one dataset."""

    dataset: str
    resolutions: dict[str, EvalResolution]

    @property
    def datasets(self) -> tuple[str, ...]:
        return (self.dataset,)

    @property
    def splits(self) -> tuple[str, str]:
        info = DATASETS.get(self.dataset)
        return info.train_split, info.test_split

    def _protocol(self, name: str, profile: str) -> dict[str, Any]:
        train_split, test_split = self.splits
        return {
            "name": name,
            "train_split": train_split,
            "test_split": test_split,
            "eval_transform": self.resolutions[profile].transform,
        }

    def _features(self, backbone: Backbone, ctx: TaskContext) -> SplitFeatures:
        return split_features(backbone, self.dataset, *self.splits, self.resolutions[ctx.profile], ctx)

    @staticmethod
    def _common_details(feats: SplitFeatures) -> dict[str, Any]:
        return {
            "num_classes": feats.num_classes,
            "feature_dim": feats.train.dim,
            "feature_seconds": feats.seconds,
            "skipped_images": {split: len(paths) for split, paths in feats.skipped.items()},
            "skipped_paths": {split: paths[:100] for split, paths in feats.skipped.items() if paths},
        }


@dataclass(frozen=True)
class LinearProbeTask(_FrozenTask):
    """Linear probe on frozen features of ``dataset`` (protocol ``linear-cached``, see module docstring)."""

    version: int = 1
    family: str = "linear"
    primary: str = "top1"
    metrics: tuple[Metric, ...] = (Metric("top1"), Metric("top5"))

    @property
    def name(self) -> str:
        return f"linear/{self.dataset}"

    @property
    def description(self) -> str:
        return f"linear probe on frozen features, top-1/top-5 on {self.dataset} {self.splits[1]}"

    def probe_config(self, profile: str) -> ProbeConfig:
        return PAPER_PROBE if profile == "paper" else SMOKE_PROBE

    def protocol(self, profile: str) -> dict[str, Any]:
        return {**self._protocol("linear-cached", profile), "probe": asdict(self.probe_config(profile))}

    def run(self, backbone: Backbone, ctx: TaskContext) -> TaskOutput:
        feats = self._features(backbone, ctx)
        result = fit_linear_probe(
            feats.train, feats.test, feats.num_classes, self.probe_config(ctx.profile), ctx.device
        )
        return TaskOutput(
            metrics={"top1": result.top1, "top5": result.top5},
            details={
                "selected": result.selected,
                "val_top1": result.val_top1,
                "optimizer": result.optimizer,
                "n_train": result.n_train,
                "n_val": result.n_val,
                "n_test": result.n_test,
                "probe_seconds": result.seconds,
                **self._common_details(feats),
            },
        )


@dataclass(frozen=True)
class KnnTask(_FrozenTask):
    """Weighted cosine kNN on frozen features of ``dataset`` (protocol ``knn-cosine``)."""

    version: int = 1
    family: str = "knn"
    primary: str = "k200_top1"
    metrics: tuple[Metric, ...] = tuple(Metric(f"k{k}_top{t}") for k in KNN.ks for t in (1, 5))

    @property
    def name(self) -> str:
        return f"knn/{self.dataset}"

    @property
    def description(self) -> str:
        ks = "/".join(str(k) for k in KNN.ks)
        return f"cosine kNN (k={ks}, T={KNN.temperature}) on frozen features, {self.dataset} {self.splits[1]}"

    def protocol(self, profile: str) -> dict[str, Any]:
        return {**self._protocol("knn-cosine", profile), "knn": asdict(KNN)}

    def run(self, backbone: Backbone, ctx: TaskContext) -> TaskOutput:
        feats = self._features(backbone, ctx)
        train = (feats.train.features, feats.train.labels)
        test = (feats.test.features, feats.test.labels)
        result = knn_classify(train, test, feats.num_classes, KNN, ctx.device)
        metrics = {}
        for k in KNN.ks:
            metrics[f"k{k}_top1"] = result.top1[k]
            metrics[f"k{k}_top5"] = result.top5[k]
        return TaskOutput(
            metrics=metrics,
            details={
                "k_used": {str(k): v for k, v in result.k_used.items()},
                "n_train": result.n_train,
                "n_test": result.n_test,
                "knn_seconds": result.seconds,
                **self._common_details(feats),
            },
        )
