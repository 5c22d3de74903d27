"""``bench generate``: write a variant store for a dataset split, resumably and in shards.

For every source image of the split (in the loader's order, see :mod:`pretrain.generative.sources`) the
generator writes ``settings.per_image`` variants; variant ``k`` of the source at ``rel`` is seeded with
:func:`~pretrain.generative.base.variant_seed` ``(settings.seed, rel, k)``, so its pixels do not depend on
batching, on the shard that made it or on resumption.  Sources that already have a record are skipped, so
rerunning the same command after a kill finishes the store, losing at most the batch in flight.  Shard
``i/n`` takes the sources whose index is ``i`` modulo ``n`` (``--shard``, or a Slurm array's
``SLURM_ARRAY_TASK_ID``/``SLURM_ARRAY_TASK_COUNT`` when ``--shard`` is not given); ``limit`` keeps only
the first N sources of the split (a quick look; the store stays incomplete).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tqdm import tqdm

from core import provenance
from core.errors import ConfigError
from pretrain.generative.base import (
    GeneratorSettings,
    ModelFolderError,
    SourceImage,
    SplitAwareGenerator,
    VariantGenerator,
    variant_seed,
)
from pretrain.generative.registry import GENERATORS
from pretrain.generative.sources import SourceSet, load_sources
from pretrain.generative.store import SCHEMA, VariantStore, default_store_dir
from tasks.datasets.synth.writer import is_synthetic

#: Settings that do not change a variant's pixels (left out of the store's identity).
NON_IDENTITY_SETTINGS = ("batch_size", "device")


@dataclass(frozen=True)
class GenerateReport:
    store: Path
    generated: int  # source images processed by this invocation
    skipped: int  # source images of this shard already done before it started
    complete: bool  # the whole split has variants
    seconds: float
    variants_per_second: float
    digest: str


def parse_shard(text: str | None, env: dict[str, str] | None = None) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)``; ``None`` -> the Slurm array task (``SLURM_ARRAY_TASK_ID`` of
    ``SLURM_ARRAY_TASK_COUNT``, ids counted from ``SLURM_ARRAY_TASK_MIN``) or ``(0, 1)``."""
    env = dict(os.environ) if env is None else env
    if text is None:
        if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
            first = int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
            return int(env["SLURM_ARRAY_TASK_ID"]) - first, int(env["SLURM_ARRAY_TASK_COUNT"])
        return 0, 1
    index, sep, count = text.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        raise ConfigError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if not sep or n < 1 or not 0 <= i < n:
        raise ConfigError(f"--shard {text!r}: need 0 <= i < n")
    return i, n


def store_manifest(
    name: str, generator: VariantGenerator, settings: GeneratorSettings, sources: SourceSet, data_source: str
) -> dict[str, Any]:
    """The manifest of a store of ``sources`` made by ``generator`` (identity fields first)."""
    recorded = {k: v for k, v in asdict(settings).items() if k not in NON_IDENTITY_SETTINGS}
    return {
        "schema": SCHEMA,
        "generator": name,
        "dataset": sources.dataset,
        "split": sources.split,
        "per_image": settings.per_image,
        "settings": recorded,
        "generator_info": generator.describe(),
        "source": {"fingerprint": sources.fingerprint, "num_images": len(sources)},
        "oracle": GENERATORS.get(name).oracle,
        "data_source": data_source,
        "data_root": str(sources.root),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "code_version": provenance.code_version(),
        "libraries": provenance.library_versions(),
    }


def generate(
    name: str,
    model: Path | None,
    root: Path,
    dataset: str,
    split: str,
    settings: GeneratorSettings,
    *,
    out: Path | None = None,
    shard: tuple[int, int] = (0, 1),
    limit: int | None = None,
    progress: bool = True,
) -> GenerateReport:
    """Generate (or finish) the variant store of ``dataset``/``split`` (see the module docstring)."""
    spec = GENERATORS.get(name)
    if spec.needs_model and model is None:
        raise ModelFolderError(
            f"generator {name!r} needs --model DIR: a local folder with {spec.model_files}"
        )
    sources = load_sources(root, dataset, split)
    store = VariantStore(out if out is not None else default_store_dir(root, dataset, name))
    generator = spec.build(model, settings)
    if isinstance(generator, SplitAwareGenerator):
        generator.bind(sources)
    data_source = "synthetic" if is_synthetic(root, dataset) else "real"
    store.open_for(store_manifest(name, generator, settings, sources, data_source))
    shard_i, shard_n = shard
    wanted = range(len(sources) if limit is None else min(limit, len(sources)))
    mine = [i for i in wanted if i % shard_n == shard_i]
    done = store.done()
    todo = [i for i in mine if sources.relpaths[i] not in done]
    tag = f"shard-{shard_i:05d}-of-{shard_n:05d}"
    device = str(settings.torch_device())
    bar = tqdm(
        total=len(mine),
        initial=len(mine) - len(todo),
        desc=f"generate {name} {dataset}/{split}",
        unit="img",
        disable=not progress,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    start = time.perf_counter()
    for b in range(0, len(todo), settings.batch_size):
        batch = todo[b : b + settings.batch_size]
        t0 = time.perf_counter()
        images = [SourceImage(i, sources.relpaths[i], int(sources.labels[i]), sources.open(i)) for i in batch]
        seeds = [
            [variant_seed(settings.seed, src.relpath, k) for k in range(settings.per_image)] for src in images
        ]
        variants = generator.generate(images, seeds)
        if len(variants) != len(images) or any(len(v) != settings.per_image for v in variants):
            raise RuntimeError(f"generator {name!r} returned the wrong number of variants")
        for src, outs in zip(images, variants, strict=True):
            store.clear_partial(src.relpath)
            for k, image in enumerate(outs):
                store.write_variant(src.relpath, k, image)
        seconds = (time.perf_counter() - t0) / len(batch)
        store.append_records(
            tag,
            (
                {
                    "index": s.index,
                    "source": s.relpath,
                    "seeds": sd,
                    "device": device,
                    "seconds": round(seconds, 4),
                }
                for s, sd in zip(images, seeds, strict=True)
            ),
        )
        bar.update(len(batch))
    bar.close()
    elapsed = time.perf_counter() - start
    complete = store.mark_complete_if_done(sources)
    return GenerateReport(
        store=store.path,
        generated=len(todo),
        skipped=len(mine) - len(todo),
        complete=complete,
        seconds=elapsed,
        variants_per_second=len(todo) * settings.per_image / max(elapsed, 1e-9),
        digest=store.digest(),
    )


def generate_command(
    name: str,
    dataset: str,
    split: str,
    store: str | Path,
    settings: GeneratorSettings,
    data_root: Path | None,
) -> str:
    """The ``bench generate`` command line that makes (or finishes) a store: shown in errors (``name`` may
    be a placeholder such as ``GENERATOR`` when the store's generator is unknown)."""
    parts = ["bench generate", f"--generator {name}"]
    if name not in GENERATORS or GENERATORS.get(name).needs_model:
        parts.append("--model DIR")
    parts += [f"--dataset {dataset}", f"--split {split}", f"--per-image {settings.per_image}"]
    if data_root is not None:
        parts.append(f"--data-root {data_root}")
    parts.append(f"--out {store}")
    return " ".join(parts)
