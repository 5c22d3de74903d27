"""Wiring a recipe's generative source stage into pretraining (used by the harness).

1. :func:`ensure_store` (before the run directory is chosen, so the store's digest is part of the run's
   identity): resolve ``augment.sources[0].store`` under the data root, generate the oracle store of a
   synthetic stand-in on first use (cached like the stand-ins), and otherwise require a complete store,
   failing with the ``bench generate`` command that would make it.
2. :func:`setup_swap` (with the loaded pretraining split): check that every training image has variants,
   then build the in-memory :class:`~pretrain.generative.swap.VariantBank` or the on-disk
   :class:`~pretrain.generative.swap.SwapDataset`, and the summary recorded in ``pretrain.json`` and in
   every result (generator, oracle flag, store path, manifest digest, p, views, variants per image).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from core.paths import DataRoot
from pretrain import distributed
from pretrain.config import RecipeConfig
from pretrain.generative.base import GeneratorSettings
from pretrain.generative.generate import generate, generate_command
from pretrain.generative.registry import GENERATORS
from pretrain.generative.sources import sources_of
from pretrain.generative.store import StoreError, VariantStore, require_store, resolve_store_dir
from pretrain.generative.swap import SourceSwap, SwapDataset, VariantBank
from tasks.datasets.registry import DATASETS

#: The oracle store generated on demand for synthetic stand-ins (``{method}_oracle`` recipes), with the
#: paper's 10 variants per image and the oracle's default closeness to the source.
ORACLE_STORE = "oracle"
ORACLE_PER_IMAGE, ORACLE_KEEP = 10, 0.5


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def ensure_store(
    recipe: RecipeConfig, root: Path, dataset_source: str, progress: bool
) -> VariantStore | None:
    """The recipe's complete variant store (``None`` without a generative stage); see the module docstring."""
    if not recipe.augment.sources:
        return None
    cfg = recipe.augment.sources[0]
    dataset, split = recipe.data.dataset, recipe.data.split
    path = resolve_store_dir(cfg.store, root, dataset)
    store = VariantStore(path)
    if cfg.store == ORACLE_STORE and dataset_source == "synthetic" and not store.is_complete():
        if distributed.is_main():  # other processes wait at the barrier below
            size = DATASETS.get(dataset).synthetic_image_size
            _log(f"generating the oracle variant store of the synthetic {dataset}/{split} once: {path}")
            settings = GeneratorSettings(
                per_image=ORACLE_PER_IMAGE, keep=ORACLE_KEEP, batch_size=256, size=size
            )
            generate(
                "oracle",
                None,
                root,
                dataset,
                split,
                settings,
                out=path,
                progress=progress,
            )
        if distributed.is_distributed():
            torch.distributed.barrier()
    return require_store(
        path,
        dataset,
        split,
        generate_command(_generator_of(store, cfg.store), dataset, split, path, GeneratorSettings(), root),
    )


def _generator_of(store: VariantStore, name: str) -> str:
    """The generator that makes ``store``: its manifest's, else the store name if it is a generator."""
    if store.exists():
        try:
            return str(store.manifest()["generator"])
        except StoreError:
            pass
    return name if name in GENERATORS else "GENERATOR"


def describe_store(recipe: RecipeConfig, data: DataRoot) -> str:
    """Comment lines for ``bench show recipe``: where the recipe's store is, its state, how to make it."""
    cfg = recipe.augment.sources[0]
    dataset, split = recipe.data.dataset, recipe.data.split
    path = resolve_store_dir(cfg.store, data.path, dataset)
    store = VariantStore(path)
    lines = [f"# generative stage: p={cfg.p} on views {list(cfg.views)}, variants from store {path}"]
    if store.exists() and store.is_complete():
        m = store.manifest()
        lines.append(
            f"# store: complete ({m['generator']}, {m['per_image']} per image, digest {store.digest()})"
        )
    elif cfg.store == ORACLE_STORE and data.synthetic:
        lines.append("# store: generated automatically on first use (synthetic stand-in oracle)")
    else:
        state = "incomplete" if store.exists() else "missing"
        how = generate_command(
            _generator_of(store, cfg.store), dataset, split, path, GeneratorSettings(), data.path
        )
        lines.append(f"# store: {state}; bench run fails until it exists. Make it with:")
        lines.append(f"#   {how}")
    return "\n".join(lines)


@dataclass(frozen=True)
class SwapSetup:
    swap: SourceSwap
    bank: VariantBank | None  # in-memory path
    dataset: Dataset | None  # on-disk path: replaces the stream's dataset
    summary: dict[str, Any]


def setup_swap(
    recipe: RecipeConfig,
    store: VariantStore,
    root: Path,
    full: Dataset,
    n: int,
    cache: Path,
    progress: bool,
) -> SwapSetup:
    """Swap state for the first ``n`` images of the loaded pretraining split ``full``."""
    cfg = recipe.augment.sources[0]
    manifest = store.manifest()
    sources = sources_of(full, root, recipe.data.dataset, recipe.data.split)
    relpaths = sources.relpaths[:n]
    if sources.fingerprint != manifest["source"]["fingerprint"]:
        done = store.done()
        pending = [rel for rel in relpaths if rel not in done]
        if pending:
            raise StoreError(
                f"{len(pending)} pretraining image(s) have no variants in {store.path} (e.g. {pending[0]}): "
                f"the dataset changed since the store was generated; rerun bench generate into it"
            )
    per_image = int(manifest["per_image"])
    swap = SourceSwap(cfg, recipe.train.seed, per_image)
    size = recipe.data.image_size
    bank, dataset = None, None
    if recipe.data.in_memory:
        bank = VariantBank.load(store, relpaths, size, cache, recipe.data.num_workers, progress)
    else:
        base = full if n == len(sources) else torch.utils.data.Subset(full, range(n))
        dataset = SwapDataset(base, relpaths, store, swap, size)
    summary = {
        "generator": manifest["generator"],
        "oracle": bool(manifest.get("oracle", False)),
        "store": str(store.path),
        "digest": store.digest(),
        "p": cfg.p,
        "views": list(cfg.views),
        "per_image": per_image,
        "settings": manifest["settings"],
        "generator_info": manifest["generator_info"],
    }
    return SwapSetup(swap, bank, dataset, summary)
