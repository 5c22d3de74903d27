"""The harness: recipe -> pretrain -> tasks -> result files -> leaderboard.

Run directory: ``<runs>/<recipe>/<profile>-<data source>-s<seed>-<hash>`` where ``hash`` covers the
resolved recipe config and the data root.  Inside: ``recipe.yaml`` (resolved config),
``checkpoints/last.pt`` (full training state), ``backbone.safetensors``, ``pretrain.json`` (written last:
pretraining is complete), ``tensorboard/`` and ``results/<family>-<dataset>.json``.

A finished pretraining is reused, and a task whose result file already exists with the same recipe
config hash (and variant store digest), task name, version and protocol, profile, seed and data root is
skipped (:func:`reusable_result`; ``rerun_tasks=True`` runs it again).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import yaml

from bench import provenance
from bench.config import config_hash, to_dict
from bench.errors import BenchError, DatasetError
from bench.fsutil import LOCK_NAME, remove_stale_tmp, run_lock
from bench.paths import DataRoot, cache_dir
from bench.results import SCHEMA, atomic_write_text, write_result
from pretrain import distributed
from pretrain.backbones import Backbone, build_backbone
from pretrain.checkpoint import load_into, read_backbone_file
from pretrain.config import RecipeConfig
from pretrain.data import PretrainStream, hide_labels
from pretrain.external import load_external
from pretrain.generative.store import VariantStore
from pretrain.generative.training import ensure_store, setup_swap
from pretrain.methods import build_method
from pretrain.trainer import BACKBONE_NAME, CHECKPOINT_NAME, Trainer
from tasks.base import Reference, Task, TaskContext, TaskOutput
from tasks.datasets.base import OnCorrupt, load_uint8_tensor
from tasks.datasets.registry import DATASETS
from tasks.datasets.synth.writer import ensure_synthetic, is_synthetic
from tasks.features import state_dict_digest

PRETRAIN_DONE = "pretrain.json"


def log(msg: str) -> None:
    if distributed.is_main():
        print(msg, file=sys.stderr, flush=True)


def run_dir_for(
    runs: Path,
    recipe: RecipeConfig,
    profile: str,
    data: DataRoot,
    source: str,
    store: VariantStore | None = None,
) -> Path:
    """``<runs>/<recipe>/<profile>-<source>-s<seed>-<hash of config, data root and variant store digest>``."""
    identity = f"{config_hash(recipe, 64)}|{data.path}" + (f"|{store.digest()}" if store is not None else "")
    digest = hashlib.sha256(identity.encode()).hexdigest()[:10]
    return runs / recipe.name / f"{profile}-{source}-s{recipe.train.seed}-{digest}"


def seedless_hash(recipe: RecipeConfig) -> str:
    """Hash of the resolved config without ``train.seed``: the identity under which seeds are grouped."""
    return config_hash(dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, seed=0)))


def overall_source(sources: dict[str, str]) -> str:
    """ "synthetic" or "real" when every dataset agrees, else "mixed"."""
    kinds = set(sources.values())
    return kinds.pop() if len(kinds) == 1 else "mixed"


def prepare_data(data: DataRoot, datasets: list[str]) -> dict[str, str]:
    """Generate missing synthetic stand-ins, or check that real datasets are present.

    Returns each dataset's source ("synthetic" when the folder carries the synthetic writer's marker,
    e.g. after ``bench data synth --root``, else "real").
    """
    if data.synthetic:
        log(
            f"no data root configured (--data-root / BENCH_DATA): using SYNTHETIC stand-ins of "
            f"{', '.join(datasets)} in {data.path} (generated once); results say data_source: synthetic"
        )
        ensure_synthetic(data.path, datasets, "smoke")
    sources = {}
    for name in datasets:
        info = DATASETS.get(name)
        problems = info.verify(data.path, check_images=False)
        if problems:
            raise DatasetError(
                f"dataset {name!r} not usable under {data.path / info.relpath}: {problems[0]}. "
                f"{info.prepare_hint} (or run `bench data verify {name} --root {data.path}`)"
            )
        sources[name] = "synthetic" if is_synthetic(data.path, name) else "real"
    if not data.synthetic and "synthetic" in sources.values():
        synth = [n for n, s in sources.items() if s == "synthetic"]
        log(f"note: {', '.join(synth)} under {data.path} are SYNTHETIC stand-ins (bench data synth)")
    return sources


def finished_pretraining(run_dir: Path, recipe: RecipeConfig) -> dict[str, Any] | None:
    """The summary of a finished pretraining of ``recipe`` in ``run_dir``, else ``None``."""
    done = run_dir / PRETRAIN_DONE
    if done.is_file() and (run_dir / BACKBONE_NAME).is_file():
        summary: dict[str, Any] = json.loads(done.read_text())
        if summary.get("config_hash") == config_hash(recipe):
            return summary
    return None


@contextlib.contextmanager
def cell_lock(run_dir: Path, recipe: RecipeConfig, fresh: bool) -> Iterator[None]:
    """The run directory's lock for one ``bench run`` of ``recipe``: shared when its pretraining is
    finished (and not ``fresh``), so the task jobs of a cell (``--split-tasks``) run side by side, each
    writing only its own result file and task work directory; exclusive otherwise."""
    if not fresh and finished_pretraining(run_dir, recipe) is not None:
        with run_lock(run_dir, shared=True):
            if finished_pretraining(run_dir, recipe) is not None:  # still finished under the lock
                yield
                return
    with run_lock(run_dir):
        yield


def pretrain(
    recipe: RecipeConfig,
    profile: str,
    data: DataRoot,
    run_dir: Path,
    device: torch.device,
    *,
    resume: bool,
    progress: bool,
    store: VariantStore | None = None,
) -> dict[str, Any]:
    """Pretrain (or reuse a finished run) and return the pretraining summary.

    ``store``: the complete variant store of the recipe's generative stage (:func:`pretrain.generative.
    training.ensure_store`), ``None`` without one.
    """
    done = run_dir / PRETRAIN_DONE
    summary: dict[str, Any] | None = finished_pretraining(run_dir, recipe)
    if summary is not None:
        log(f"reusing finished pretraining in {run_dir}")
        return summary
    if (run_dir / CHECKPOINT_NAME).is_file() and not resume:
        raise BenchError(
            f"{run_dir} holds an unfinished pretraining run; pass --resume to continue it "
            f"or --fresh to start over"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "recipe.yaml", yaml.safe_dump(to_dict(recipe), sort_keys=False))
    torch.manual_seed(recipe.train.seed)
    info = DATASETS.get(recipe.data.dataset)
    size = recipe.data.image_size
    full = info.load(data.path, recipe.data.split, size=size, resize=size, on_corrupt=recipe.data.on_corrupt)
    n = len(full) if recipe.data.max_images is None else min(recipe.data.max_images, len(full))
    dataset: torch.utils.data.Dataset = full if n == len(full) else torch.utils.data.Subset(full, range(n))
    all_labels = full.labels[:n]
    labels = hide_labels(all_labels, recipe.label_fraction, recipe.train.seed)
    images = None
    if recipe.data.in_memory:
        images = load_uint8_tensor(full, num_workers=recipe.data.num_workers)[0][:n]
    swap = None
    if store is not None:
        swap = setup_swap(recipe, store, data.path, full, n, cache_dir(), progress)
        dataset = swap.dataset or dataset
        gen, p = swap.summary["generator"], swap.swap.cfg.p
        log(f"generative source stage: {gen} variants from {store.path} (p={p})")
    stream = PretrainStream(
        dataset,
        labels,
        recipe.train.batch_size,
        recipe.train.seed,
        images=images,
        num_workers=recipe.data.num_workers,
        rank=distributed.rank(),
        world_size=distributed.world_size(),
        swap=swap.swap if swap else None,
        bank=swap.bank if swap else None,
    )
    method = build_method(recipe.method, build_backbone(recipe.backbone.name))
    trainer = Trainer(
        recipe, method, stream, run_dir, device, progress=progress, code_version=provenance.code_version()
    )
    log(
        f"pretraining {recipe.name} ({profile}): {len(labels)} images, {trainer.total_steps} steps "
        f"of batch {recipe.train.batch_size} on {device} -> {run_dir}"
    )
    result = trainer.fit(resume=resume)
    summary = {
        **asdict(result),
        "config_hash": config_hash(recipe),
        "num_images": len(labels),
        "labelled_images": int((labels >= 0).sum()),
        "label_seed": recipe.train.seed,
        "skipped_images": list(getattr(full, "skipped", [])),
        "generative": swap.summary if swap else None,
    }
    if distributed.is_main():
        atomic_write_text(done, json.dumps(summary, indent=2) + "\n")
    return summary


def load_run_backbone(run_dir: Path, backbone_name: str, device: torch.device) -> Backbone:
    tensors, _ = read_backbone_file(run_dir / BACKBONE_NAME)
    backbone = build_backbone(backbone_name)
    load_into(backbone.net, tensors, str(run_dir / BACKBONE_NAME))
    return backbone.to(device).eval()


def subject_of(recipe: RecipeConfig, pretrain_summary: dict[str, Any]) -> dict[str, Any]:
    """The ``recipe`` section of a result file for a recipe run (``generative``: the generator, oracle flag,
    store manifest digest and p of a generative recipe, else ``None``)."""
    return {
        "name": recipe.name,
        "config": to_dict(recipe),
        "config_hash": seedless_hash(recipe),
        "generative": pretrain_summary.get("generative"),
    }


def result_doc(
    subject: dict[str, Any],
    task: Task,
    ctx: TaskContext,
    sources: dict[str, str],
    output: TaskOutput,
    pretrain_summary: dict[str, Any],
    task_seconds: float,
) -> dict[str, Any]:
    """A schema-1 result document (see :mod:`bench.results`); ``sources`` covers the datasets involved."""
    return {
        "schema": SCHEMA,
        "recipe": subject,
        "task": {
            "name": task.name,
            "version": task.version,
            "family": task.family,
            "protocol": task.protocol(ctx.profile),
        },
        "metrics": output.metrics,
        "primary_metric": task.primary,
        "higher_is_better": {m.name: m.higher_is_better for m in task.metrics},
        "details": output.details,
        "seed": ctx.seed,
        "profile": ctx.profile,
        "data": {
            "source": overall_source(sources),
            "root": str(ctx.data_root),
            "datasets": sources,
            "on_corrupt": ctx.on_corrupt,
        },
        "provenance": {
            "code_version": provenance.code_version(),
            "libraries": provenance.library_versions(),
            "hardware": provenance.hardware(ctx.device),
        },
        "timings": {"pretrain_seconds": pretrain_summary.get("seconds"), "task_seconds": task_seconds},
        "pretrain": pretrain_summary,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def result_path(out_dir: Path, task: Task) -> Path:
    return out_dir / "results" / f"{task.name.replace('/', '-').replace(':', '-')}.json"


def reusable_result(path: Path, subject: dict[str, Any], task: Task, ctx: TaskContext) -> bool:
    """Whether ``path`` holds a valid result of ``task`` for the same recipe config hash, variant store,
    task version and protocol, profile, seed and data root (then the harness skips the task)."""
    from bench.results import validate

    try:
        doc = json.loads(path.read_text())
        validate(doc)
    except (OSError, ValueError):
        return False
    gen, old_gen = subject.get("generative") or {}, doc["recipe"].get("generative") or {}
    protocol = json.loads(json.dumps(task.protocol(ctx.profile)))
    return (
        doc["recipe"].get("config_hash") == subject["config_hash"]
        and gen.get("digest") == old_gen.get("digest")
        and doc["task"].get("name") == task.name
        and doc["task"].get("version") == task.version
        and doc["task"].get("protocol") == protocol
        and doc.get("profile") == ctx.profile
        and doc.get("seed") == ctx.seed
        and doc["data"].get("root") == str(ctx.data_root)
    )


def run_tasks(
    backbone: Backbone,
    tasks: list[Task],
    ctx: TaskContext,
    subject: dict[str, Any],
    sources: dict[str, str],
    pretrain_summary: dict[str, Any],
    out_dir: Path,
    extra_datasets: tuple[str, ...] = (),
) -> tuple[list[Path], dict[str, dict[str, float]]]:
    """Run every task on ``backbone``; write ``out_dir/results/<family>-<dataset>.json`` for each."""
    files, metrics = [], {}
    for task in tasks:
        log(f"task {task.name} ...")
        t0 = time.perf_counter()
        output = task.run(backbone, ctx)
        seconds = time.perf_counter() - t0
        involved = {d: sources[d] for d in (*extra_datasets, *task.datasets)}
        doc = result_doc(subject, task, ctx, involved, output, pretrain_summary, seconds)
        path = result_path(out_dir, task)
        files.append(write_result(path, doc))
        metrics[task.name] = output.metrics
        shown = ", ".join(f"{k}={v:.2f}" for k, v in output.metrics.items())
        log(f"task {task.name}: {shown} ({seconds:.1f} s)")
    return files, metrics


def reference_resolver(
    profile: str,
    data: DataRoot,
    runs: Path,
    device: torch.device,
    seed: int,
    backbone_name: str,
    progress: bool,
) -> Callable[[str], Reference]:
    """``spec -> Reference`` for comparison tasks (memoised): an existing file is loaded as an external
    checkpoint into ``backbone_name``; anything else is a recipe name, pretrained (or its finished run
    reused, an interrupted one resumed) with the same profile, data root and ``seed``."""
    cache: dict[str, Reference] = {}

    def resolve(spec: str) -> Reference:
        if spec in cache:
            return cache[spec]
        path = Path(spec).expanduser()
        if path.is_file():
            backbone = build_backbone(backbone_name)
            report = load_external(backbone.net, path)
            log(f"reference {spec}: {report.summary()}")
            details: dict[str, Any] = {"checkpoint": report.as_dict()}
        else:
            from pretrain.recipes import resolve_recipe

            recipe = resolve_recipe(spec, profile, [f"train.seed={seed}"])
            sources = prepare_data(data, [recipe.data.dataset])
            store = ensure_store(recipe, data.path, sources[recipe.data.dataset], progress)
            run_dir = run_dir_for(runs, recipe, profile, data, overall_source(sources), store)
            log(f"reference {spec}: pretraining (or reusing) {run_dir}")
            with cell_lock(run_dir, recipe, fresh=False):
                remove_stale_tmp(run_dir)
                pretrain(recipe, profile, data, run_dir, device, resume=True, progress=progress, store=store)
            backbone = load_run_backbone(run_dir, recipe.backbone.name, device)
            details = {"recipe": spec, "run_dir": str(run_dir), "config_hash": seedless_hash(recipe)}
        backbone = backbone.to(device).eval()
        cache[spec] = Reference(spec, backbone, state_dict_digest(backbone.net), details)
        return cache[spec]

    return resolve


@dataclass(frozen=True)
class RunReport:
    run_dir: Path
    result_files: list[Path]
    metrics: dict[str, dict[str, float]]
    pretrained: bool = True  # False: a finished pretraining was reused
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # tasks whose result existed (reusable_result)


def run(
    recipe: RecipeConfig,
    tasks: list[Task],
    profile: str,
    data: DataRoot,
    runs: Path,
    *,
    resume: bool = False,
    fresh: bool = False,
    progress: bool = True,
    device: torch.device | None = None,
    on_corrupt: OnCorrupt = "raise",
    rerun_tasks: bool = False,
) -> RunReport:
    """Pretrain ``recipe`` (or reuse it) then evaluate every task whose result does not exist yet
    (``rerun_tasks``: every task); write one result file per task."""
    device = device or distributed.init_from_env()
    datasets = list(dict.fromkeys([recipe.data.dataset, *(d for t in tasks for d in t.datasets)]))
    sources = prepare_data(data, datasets)
    store = ensure_store(recipe, data.path, sources[recipe.data.dataset], progress)
    run_dir = run_dir_for(runs, recipe, profile, data, overall_source(sources), store)
    with cell_lock(run_dir, recipe, fresh) if distributed.is_main() else contextlib.nullcontext():
        if fresh and distributed.is_main():
            for child in run_dir.iterdir():  # keep the lock file we hold
                if child.name != LOCK_NAME:
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
        remove_stale_tmp(run_dir)
        return _run_locked(recipe, tasks, profile, data, runs, run_dir, store, sources, device,
                           resume=resume, progress=progress, on_corrupt=on_corrupt,
                           rerun_tasks=rerun_tasks)  # fmt: skip


def _run_locked(
    recipe: RecipeConfig,
    tasks: list[Task],
    profile: str,
    data: DataRoot,
    runs: Path,
    run_dir: Path,
    store: VariantStore | None,
    sources: dict[str, str],
    device: torch.device,
    *,
    resume: bool,
    progress: bool,
    on_corrupt: OnCorrupt,
    rerun_tasks: bool,
) -> RunReport:
    reused = finished_pretraining(run_dir, recipe) is not None
    summary = pretrain(recipe, profile, data, run_dir, device, resume=resume, progress=progress, store=store)
    if not distributed.is_main():
        return RunReport(run_dir, [], {})
    backbone = load_run_backbone(run_dir, recipe.backbone.name, device)
    ctx = TaskContext(
        data_root=data.path,
        synthetic=data.synthetic,
        profile=profile,
        device=device,
        cache_dir=cache_dir(),
        seed=recipe.train.seed,
        weights_digest=state_dict_digest(backbone.net),
        progress=progress,
        on_corrupt=on_corrupt,
        work_dir=run_dir / "tasks",
        recipe=recipe,
        run_dir=run_dir,
        reference=reference_resolver(
            profile, data, runs, device, recipe.train.seed, recipe.backbone.name, progress
        ),
    )
    subject = subject_of(recipe, summary)
    todo = [t for t in tasks if rerun_tasks or not reusable_result(result_path(run_dir, t), subject, t, ctx)]
    skipped = [t for t in tasks if t not in todo]
    for t in skipped:
        log(
            f"task {t.name}: its result exists (same config, task version, profile, seed and data root): "
            "skipped (--rerun-tasks runs it again)"
        )
    files, metrics = run_tasks(
        backbone, todo, ctx, subject, sources, summary, run_dir, (recipe.data.dataset,)
    )
    kept = [result_path(run_dir, t) for t in skipped]
    return RunReport(
        run_dir, [*kept, *files], metrics, not reused, [t.name for t in todo], [t.name for t in skipped]
    )
