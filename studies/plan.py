"""``bench study NAME --dry-run``: the cells, their estimated cost, and the data and models they need.

Cost model (an estimate, printed with its assumptions): pretraining processes ``epochs x N_train`` images
(``train.max_steps`` caps it at ``max_steps x batch``) at a throughput in images/s; ``N_train`` is counted
on disk when the dataset is present, else the synthetic stand-in's size (embedded default) or unknown.
Tasks add a per-family constant measured on the smoke stand-ins (:data:`SMOKE_TASK_SECONDS`); paper-scale
tasks are not estimated.  ``--throughput`` sets one rate for every cell.  Without it: smoke cells use MoCo
v2's measured rate for the precision the cell's recipe resolves to on this machine
(:data:`SMOKE_THROUGHPUT`; ``auto`` follows :func:`core.hardware.auto_precision`), scaled by the method's
measured relative cost (:data:`SMOKE_METHOD_COST`); paper cells assume 400 img/s per run (ResNet-50
two-view pretraining at 224 px on one modern GPU: an assumption, pass ``--throughput`` for your hardware).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tabulate import tabulate

from core.paths import DataRoot
from studies.run import Cell
from studies.schema import StudyConfig

if TYPE_CHECKING:
    from pretrain.config import RecipeConfig

#: paper-profile images/s per run (an assumption, see the module docstring)
PAPER_THROUGHPUT = 400.0
#: smoke MoCo v2 pretraining images/s (narrow ResNet-18, 32 px views, 2-core CPU) by autocast precision:
#: bf16 on CPUs that compute it natively (~1250 quiet, ~170 under load average 4; docs/smoke.md), fp32
#: on an AVX2-only CPU (283-361 in the smoke studies' 12 pretrainings, docs/studies.md; ~280 under a test
#: suite's load); emulated bf16 is 10x slower and ``auto`` never picks it
SMOKE_THROUGHPUT = {"bf16": 600.0, "fp32": 330.0}
#: smoke pretraining time per image relative to MoCo v2 (measured at fp32: SimCLR backpropagates through
#: both views' encoders, MoCo through one, docs/smoke.md); methods not listed count as MoCo
SMOKE_METHOD_COST = {"simclr": 2.1}
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


def smoke_rate(rc: RecipeConfig) -> tuple[float, str]:
    """Default smoke throughput of recipe ``rc`` on this machine, and the precision it was chosen for."""
    import torch

    from core.hardware import precision_for

    precision = precision_for(rc.train.precision, torch.device("cpu"))
    base = SMOKE_THROUGHPUT.get(precision, SMOKE_THROUGHPUT["fp32"])
    return base / SMOKE_METHOD_COST.get(rc.method.kind, 1.0), precision


def cell_seconds(
    cell: Cell, profile: str, overrides: list[str], n_train: int | None, throughput: float | None
) -> float | None:
    """Estimated seconds of ``cell`` (None when the pretraining set's size is unknown); ``throughput``
    replaces the default rate."""
    from pretrain.recipes import resolve_recipe
    from tasks.registry import resolve_tasks

    if n_train is None:
        return None
    rc = resolve_recipe(cell.recipe, profile, overrides)
    steps = rc.train.epochs * (n_train // rc.train.batch_size)
    if rc.train.max_steps is not None:
        steps = min(steps, rc.train.max_steps)
    rate = throughput or (smoke_rate(rc)[0] if profile == "smoke" else PAPER_THROUGHPUT)
    seconds = steps * rc.train.batch_size / rate
    if profile == "smoke":
        seconds += sum(SMOKE_TASK_SECONDS.get(t.family, 30.0) for t in resolve_tasks(",".join(cell.specs)))
    return seconds


def rate_note(study: StudyConfig, profile: str, throughput: float | None) -> str:
    """What the estimate assumes about speed, for the dry run's summary line."""
    if throughput is not None:
        return f"{throughput:.0f} img/s"
    if profile == "paper":
        return f"{PAPER_THROUGHPUT:.0f} img/s per run"
    from pretrain.recipes import resolve_recipe

    overrides = study.overrides(profile)
    recipes = dict.fromkeys(r for b in study.profile(profile).blocks for r in b.recipes)
    rates = {r: smoke_rate(resolve_recipe(r, profile, overrides)) for r in recipes}
    shown = ", ".join(sorted({f"{rate:.0f} img/s ({prec})" for rate, prec in rates.values()}))
    return f"smoke rates measured on 2-core CPUs, {shown}"


def print_dry_run(
    study: StudyConfig,
    profile: str,
    cells: list[Cell],
    have: dict[tuple[str, int], set[str]],
    data: DataRoot,
    throughput: float | None,
) -> None:
    overrides = study.overrides(profile)
    n_train = train_images(study.data, data, profile)
    rows, todo_s, unknown = [], 0.0, False
    for c in cells:
        done = len(set(c.tasks) & have.get((c.recipe, c.seed), set()))
        secs = None if done == len(c.tasks) else cell_seconds(c, profile, overrides, n_train, throughput)
        unknown |= secs is None and done < len(c.tasks)
        todo_s += secs or 0.0
        cost = "done" if done == len(c.tasks) else ("?" if secs is None else f"{secs / 60:.1f} min")
        rows.append([c.recipe, c.seed, ", ".join(c.tasks), f"{done}/{len(c.tasks)}", cost])
    print(f"study {study.name} ({study.title}), profile {profile}: {len(cells)} cells")
    print(tabulate(rows, headers=["recipe", "seed", "tasks", "results", "est. cost"], disable_numparse=True))
    unit = "GPU-hours" if profile == "paper" else "hours on this CPU"
    assumed = rate_note(study, profile, throughput)
    tasks_note = "" if profile == "smoke" else " (pretraining only; tasks not estimated)"
    print(
        f"\nestimated remaining cost: {todo_s / 3600:.2f} {unit}{tasks_note}"
        f"{' + cells of unknown size' if unknown else ''}; assumes {assumed} and "
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
