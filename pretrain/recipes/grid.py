"""The recipe grid of the two source studies (arXiv 2310.18850, arXiv 2403.05966).

Names: ``{method}[_{regime}][_{gen}][_{aug}]`` (e.g. ``moco``, ``moco_mixup``, ``moco_semi_erasing``,
``simclr_sd``, ``moco_sd_mixup``) with

* method in ``simclr, moco, byol, simsiam, barlow`` (its standard views: ``methods/<method>.yaml``);
* gen in ``sd, icgan, oracle``: the generative source stage of arXiv 2403.05966 (a view's source image
  replaced by one of its pre-generated variants with p = 0.5 on both views, the paper's stated setting;
  ``--set augment.sources.0.p=...`` / ``views=[1]`` for its other settings), reading the variant store
  ``sd-unclip``, ``icgan`` or ``oracle`` (the synthetic-data oracle) made by ``bench generate``;
* aug in ``mixup, cutmix, cutout, erasing``: one batch-level stage with the stage's default settings
  (see ``docs/augmentations.md``), overridable with ``--set augment.stages.0.<field>=...``;
* regime in ``sup`` (label fraction 1.0) and ``semi`` (0.5): the label-aware contrastive variant of MoCo
  v2 of arXiv 2310.18850; label regimes exist for ``moco`` only.

Every entry is listed explicitly by :func:`grid_entries` (no registration by import side effect).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

METHODS = {
    "moco": "MoCo v2",
    "simclr": "SimCLR",
    "byol": "BYOL",
    "simsiam": "SimSiam",
    "barlow": "Barlow Twins",
}
AUGS = {
    "mixup": "label-free MixUp on view 0",
    "cutmix": "label-free CutMix on view 0",
    "cutout": "CutOut on both views (p=0.5)",
    "erasing": "Random Erasing on both views (p=0.5)",
}
REGIMES = {"sup": 1.0, "semi": 0.5}
REGIME_METHODS = ("moco",)
#: generative augmentation -> (the variant store it reads, description)
GENS = {
    "sd": ("sd-unclip", "Stable unCLIP variants"),
    "icgan": ("icgan", "IC-GAN variants"),
    "oracle": ("oracle", "synthetic-data ORACLE variants"),
}
GEN_P = 0.5


@dataclass(frozen=True)
class RecipeEntry:
    """A registered recipe: its method, augmentation and label regime, and its own YAML layer."""

    name: str
    method: str
    description: str
    aug: str | None = None
    regime: str | None = None
    layer: dict[str, Any] = field(default_factory=dict)
    gen: str | None = None


def make_entry(
    method: str, regime: str | None = None, aug: str | None = None, gen: str | None = None
) -> RecipeEntry:
    parts = [method, *([regime] if regime else []), *([gen] if gen else []), *([aug] if aug else [])]
    layer: dict[str, Any] = {}
    desc = f"{METHODS[method]} with its standard views"
    if regime:
        layer["label_fraction"] = REGIMES[regime]
        kind = "supervised" if regime == "sup" else f"semi-supervised ({REGIMES[regime]:.0%} labels)"
        desc = f"{METHODS[method]}, {kind} contrastive (SupCon positives from the queue)"
    augment: dict[str, Any] = {}
    if gen:
        store, what = GENS[gen]
        augment["sources"] = [{"kind": "generative", "store": store, "p": GEN_P, "views": [0, 1]}]
        desc += f" + {what} (p={GEN_P}, both views)"
    if aug:
        augment["stages"] = [{"kind": aug}]
        desc += f" + {AUGS[aug]}"
    if augment:
        layer["augment"] = augment
    return RecipeEntry("_".join(parts), method, desc, aug=aug, regime=regime, layer=layer, gen=gen)


def grid_entries() -> list[RecipeEntry]:
    entries = []
    for method in METHODS:
        regimes: list[str | None] = [None, *(REGIMES if method in REGIME_METHODS else [])]
        for regime in regimes:
            for gen in [None, *GENS]:
                for aug in [None, *AUGS]:
                    entries.append(make_entry(method, regime, aug, gen))
    return entries


def explain_invalid(name: str) -> str | None:
    """A precise reason when ``name`` follows the grammar but names no valid combination."""
    parts = name.split("_")
    if parts[0] not in METHODS or len(parts) > 4:
        return None
    rest = parts[1:]
    if any(p not in REGIMES and p not in AUGS and p not in GENS for p in rest):
        return None
    rank = [0 if p in REGIMES else 1 if p in GENS else 2 for p in rest]
    if rank != sorted(rank) or len(set(rank)) != len(rank):
        return (
            f"recipe {name!r}: the order is {{method}}_{{regime}}_{{gen}}_{{aug}} with at most one of each "
            f"(e.g. moco_semi_erasing, moco_sd_mixup)"
        )
    if any(p in REGIMES for p in rest) and parts[0] not in REGIME_METHODS:
        valid = ", ".join([parts[0], *(f"{parts[0]}_{a}" for a in AUGS)])
        regimes, methods = ", ".join(REGIMES), ", ".join(REGIME_METHODS)
        return f"recipe {name!r}: label regimes ({regimes}) exist for {methods} only; valid: {valid}"
    return None
