"""``bench study NAME --dry-run``: the cells, their estimated cost, and the data and models they need.

Cost model (an estimate, printed with its assumptions): pretraining processes ``epochs x N_train`` images
(``train.max_steps`` caps it at ``max_steps x batch``), at ``throughput`` images/s; ``N_train`` is counted
on disk when the dataset is present, else the synthetic stand-in's size (embedded default) or unknown.
Tasks add a per-family constant measured on the smoke stand-ins (:data:`SMOKE_TASK_SECONDS`); paper-scale
tasks are not estimated.  Default throughputs: smoke 600 img/s (MoCo v2, narrow ResNet-18 at 32 px on this
2-core CPU: ~1250 on a quiet machine, docs/smoke.md; ~170 measured with load average 4, docs/studies.md),
paper 400 img/s per run (an assumption for
ResNet-50 two-view pretraining at 224 px on one modern GPU; pass ``--throughput`` for your hardware).
"""

from __future__ import annotations

from tabulate import tabulate

from core.paths import DataRoot
from studies.run import Cell
from studies.schema import StudyConfig

DEFAULT_THROUGHPUT = {"smoke": 600.0, "paper": 400.0}
#: train-split sizes of the real pretraining sets (ImageNet-1k; ImageNet-100 as CMC lists it), used for the
#: paper profile's estimate when the real data is not under the data root
NOMINAL_TRAIN = {"imagenet": 1_281_167, "imagenet100": 126_689}
#: seconds per task on the smoke stand-ins (2-core CPU, measured ranges' upper ends; docs/*.md)
SMOKE_TASK_SECONDS = {
    "linear": 15.0,
    "knn": 5.0,
    "linear-aug": 120.0,
    "invariance": 10.0,
    "cka": 10.0,
    "opd": 10.0,
    "det": 55.0,
    "instseg": 55.0,
    "seg": 60.0,
}


def train_images(dataset: str, data: DataRoot, profile: str) -> int | None:
    """Images of ``dataset``'s train split: counted on disk (real data), else the real set's nominal size
    (paper profile) or the stand-in's (smoke on the embedded default), else None."""
    from tasks.datasets import imagefolder
    from tasks.datasets.registry import DATASETS
    from tasks.datasets.synth.writer import is_synthetic

    info = DATASETS.get(dataset)
    real = not data.synthetic and not is_synthetic(data.path, dataset)
    if real and not info.verify(data.path):
        return info.count(data.path, info.train_split)
    if profile == "paper":
        return NOMINAL_TRAIN.get(dataset)
    if data.synthetic and (info.synthetic_owner or dataset) == "imagenet":
        full = imagefolder.IMAGENET_SYNTH_COUNTS["smoke"][0]
        return full * info.synthetic_classes // imagefolder.IMAGENET_SYNTH_CLASSES
    return None


def dataset_status(name: str, data: DataRoot) -> tuple[bool, str]:
    """(usable, description) of dataset ``name`` under the data root (its verifier; stand-ins are made on
    first use under the embedded default)."""
    from tasks.datasets.registry import DATASETS
    from tasks.datasets.synth.writer import is_synthetic

    info = DATASETS.get(name)
    if data.synthetic:
        made = is_synthetic(data.path, name)
        return True, "synthetic stand-in" + ("" if made else " (generated on first use)")
    problems = info.verify(data.path)
    if problems:
        return False, f"MISSING: {problems[0]}"
    return True, "synthetic stand-in (bench data synth)" if is_synthetic(data.path, name) else "found"


def store_status(recipe: str, profile: str, overrides: list[str], data: DataRoot) -> tuple[bool, str] | None:
    """(usable, description) of the recipe's variant store (generative recipes), else None."""
    from pretrain.generative.store import VariantStore, resolve_store_dir
    from pretrain.generative.training import ORACLE_STORE, describe_store
    from pretrain.recipes import resolve_recipe

    rc = resolve_recipe(recipe, profile, overrides)
    if not rc.augment.sources:
        return None
    cfg = rc.augment.sources[0]
    store = VariantStore(resolve_store_dir(cfg.store, data.path, rc.data.dataset))
    ok = (store.exists() and store.is_complete()) or (cfg.store == ORACLE_STORE and data.synthetic)
    text = " ".join(line.lstrip("# ").strip() for line in describe_store(rc, data).splitlines())
    return ok, text


def cell_seconds(
    cell: Cell, profile: str, overrides: list[str], n_train: int | None, throughput: float
) -> float | None:
    from pretrain.recipes import resolve_recipe
    from tasks.registry import resolve_tasks

    if n_train is None:
        return None
    rc = resolve_recipe(cell.recipe, profile, overrides)
    steps = rc.train.epochs * (n_train // rc.train.batch_size)
    if rc.train.max_steps is not None:
        steps = min(steps, rc.train.max_steps)
    seconds = steps * rc.train.batch_size / throughput
    if profile == "smoke":
        seconds += sum(SMOKE_TASK_SECONDS.get(t.family, 30.0) for t in resolve_tasks(",".join(cell.specs)))
    return seconds


def print_dry_run(
    study: StudyConfig,
    profile: str,
    cells: list[Cell],
    have: dict[tuple[str, int], set[str]],
    data: DataRoot,
    throughput: float | None,
) -> None:
    overrides = study.overrides(profile)
    rate = throughput or DEFAULT_THROUGHPUT[profile]
    n_train = train_images(study.data, data, profile)
    rows, todo_s, unknown = [], 0.0, False
    for c in cells:
        done = len(set(c.tasks) & have.get((c.recipe, c.seed), set()))
        secs = None if done == len(c.tasks) else cell_seconds(c, profile, overrides, n_train, rate)
        unknown |= secs is None and done < len(c.tasks)
        todo_s += secs or 0.0
        cost = "done" if done == len(c.tasks) else ("?" if secs is None else f"{secs / 60:.1f} min")
        rows.append([c.recipe, c.seed, ", ".join(c.tasks), f"{done}/{len(c.tasks)}", cost])
    print(f"study {study.name} ({study.title}), profile {profile}: {len(cells)} cells")
    print(tabulate(rows, headers=["recipe", "seed", "tasks", "results", "est. cost"], disable_numparse=True))
    unit = "GPU-hours" if profile == "paper" else "hours on this CPU"
    tasks_note = "" if profile == "smoke" else " (pretraining only; tasks not estimated)"
    print(
        f"\nestimated remaining cost: {todo_s / 3600:.2f} {unit}{tasks_note}"
        f"{' + cells of unknown size' if unknown else ''}; assumes {rate:.0f} img/s and "
        f"{n_train if n_train is not None else 'unknown'} pretraining images ({study.data}); --throughput "
        "sets the rate"
    )
    print(f"\ndata ({data.path}{', embedded default: synthetic' if data.synthetic else ''}):")
    from tasks.registry import resolve_tasks

    datasets = dict.fromkeys(
        [study.data, *(d for c in cells for t in resolve_tasks(",".join(c.specs)) for d in t.datasets)]
    )
    for name in datasets:
        ok, text = dataset_status(name, data)
        print(f"  {'ok  ' if ok else 'MISS'} {name}: {text}")
    stores = {}
    for recipe in dict.fromkeys(c.recipe for c in cells):
        status = store_status(recipe, profile, overrides, data)
        if status is not None:
            stores[recipe] = status
    if stores:
        print("generative variant stores (models):")
        for recipe, (ok, text) in stores.items():
            print(f"  {'ok  ' if ok else 'MISS'} {recipe}: {text}")
