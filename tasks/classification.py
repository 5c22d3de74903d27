"""Frozen-feature classification tasks: the linear probe (``linear/<dataset>``).

Protocol ``linear-cached`` (version in :data:`LinearProbeTask.version`):

1. the backbone is frozen; each split is passed once through the deterministic eval transform
   (resize shorter side, centre crop; resolutions per profile below) and its pooled features are cached
   on disk as fp16 (keyed by weights digest, dataset, data root, split, transform);
2. a linear classifier is fitted on the cached train features with a hyper-parameter sweep trained in
   one pass, selected on a validation split carved from train (never the test split), refitted on the
   whole train split (see :mod:`tasks.linear`);
3. top-1 / top-5 accuracy (%) on the dataset's test split.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from pretrain.backbones import Backbone
from tasks.base import Metric, TaskContext, TaskOutput
from tasks.datasets.registry import DATASETS
from tasks.features import extract_features, feature_key
from tasks.linear import ProbeConfig, fit_linear_probe


@dataclass(frozen=True)
class EvalResolution:
    """Eval transform (resize shorter side to ``resize``, centre-crop ``size``) for one profile."""

    resize: int
    size: int


# Per-profile eval resolutions and probe budgets. Smoke: native resolution of the (synthetic) data.
# Paper: 224 px crops as in the source papers' transfer evaluations (small images are upsampled).
SMOKE_PROBE = ProbeConfig()
PAPER_PROBE = ProbeConfig()


@dataclass(frozen=True)
class LinearProbeTask:
    """Linear probe on frozen features of ``dataset`` (see module docstring)."""

    dataset: str
    train_split: str
    test_split: str
    resolutions: dict[str, EvalResolution]
    version: int = 1
    family: str = "linear"
    primary: str = "top1"
    metrics: tuple[Metric, ...] = (Metric("top1"), Metric("top5"))

    @property
    def name(self) -> str:
        return f"linear/{self.dataset}"

    @property
    def datasets(self) -> tuple[str, ...]:
        return (self.dataset,)

    @property
    def description(self) -> str:
        return f"linear probe on frozen features, top-1/top-5 on {self.dataset} {self.test_split}"

    def probe_config(self, profile: str) -> ProbeConfig:
        return PAPER_PROBE if profile == "paper" else SMOKE_PROBE

    def protocol(self, profile: str) -> dict[str, Any]:
        res = self.resolutions[profile]
        return {
            "name": "linear-cached",
            "train_split": self.train_split,
            "test_split": self.test_split,
            "eval_transform": f"resize{res.resize}-centercrop{res.size}",
            "probe": asdict(self.probe_config(profile)),
        }

    def run(self, backbone: Backbone, ctx: TaskContext) -> TaskOutput:
        info = DATASETS.get(self.dataset)
        res = self.resolutions[ctx.profile]
        transform = f"resize{res.resize}-centercrop{res.size}"
        t0 = time.perf_counter()
        feats = {}
        for split in (self.train_split, self.test_split):
            ds = info.load(ctx.data_root, split, size=res.size, resize=res.resize, on_corrupt="raise")
            key = feature_key(ctx.weights_digest, f"{self.dataset}@{ctx.data_root}", split, transform)
            feats[split] = extract_features(
                backbone,
                ds,
                cache_dir=ctx.cache_dir / "features",
                key=key,
                device=ctx.device,
                num_workers=ctx.num_workers,
                progress=ctx.progress,
            )
            num_classes = len(ds.classes)
        t_extract = time.perf_counter() - t0
        train, test = feats[self.train_split], feats[self.test_split]
        result = fit_linear_probe(
            (train.features, train.labels),
            (test.features, test.labels),
            num_classes,
            self.probe_config(ctx.profile),
            ctx.device,
        )
        return TaskOutput(
            metrics={"top1": result.top1, "top5": result.top5},
            details={
                "selected": result.selected,
                "val_top1": result.val_top1,
                "n_train": result.n_train,
                "n_val": result.n_val,
                "n_test": result.n_test,
                "num_classes": num_classes,
                "feature_seconds": t_extract,
                "probe_seconds": result.seconds,
            },
        )
