"""The task registry and task-group resolution.

Task names are ``<family>/<dataset>``: ``linear/cifar10``, ``knn/food101``, ``linear-aug/imagenet``.
Groups: each family (``linear``, ``knn``, ``linear-aug``), each dataset name (``cifar10`` = the cached
linear and kNN tasks on CIFAR-10) and ``all`` = every task except the opt-in ones (the augmented linear
protocol trains through the backbone for 100 epochs and is only run when named).  ``--tasks`` takes a
comma-separated list of task and group names.

Eval resolutions (resize shorter side -> centre crop) per dataset and profile:

================  ==============  ===============
dataset           smoke           paper
================  ==============  ===============
cifar10/100       32 -> 32        224 -> 224 (upsampled, as in the transfer papers)
others            36 -> 32        256 -> 224
================  ==============  ===============
"""

from __future__ import annotations

from bench.errors import UnknownNameError
from bench.registry import Registry
from tasks.base import Task
from tasks.classification import KnnTask, LinearProbeTask
from tasks.frozen import EvalResolution
from tasks.linear_aug import AugmentedLinearTask

SMALL_IMAGES = {"smoke": EvalResolution(32, 32), "paper": EvalResolution(224, 224)}
PHOTOS = {"smoke": EvalResolution(36, 32), "paper": EvalResolution(256, 224)}

#: The six classification datasets and their eval resolutions, in listing order.
CLASSIFICATION_DATASETS: dict[str, dict[str, EvalResolution]] = {
    "imagenet": PHOTOS,
    "food101": PHOTOS,
    "cifar10": SMALL_IMAGES,
    "cifar100": SMALL_IMAGES,
    "places365": PHOTOS,
    "inat2018": PHOTOS,
}

#: Families left out of the ``all`` group (run only when named).
OPT_IN_FAMILIES = ("linear-aug",)


def build_task_registry() -> Registry[Task]:
    """A fresh registry: linear, kNN and augmented-linear tasks on every classification dataset."""
    reg: Registry[Task] = Registry("task")
    for dataset, res in CLASSIFICATION_DATASETS.items():
        tasks: tuple[Task, ...] = (
            LinearProbeTask(dataset, res),
            KnnTask(dataset, res),
            AugmentedLinearTask(dataset, res),
        )
        for task in tasks:
            reg.register(task.name, task)
    return reg


TASKS = build_task_registry()


def task_groups() -> dict[str, list[str]]:
    """Group name -> task names (see module docstring)."""
    groups: dict[str, list[str]] = {"all": []}
    for name, task in TASKS.items():
        groups.setdefault(task.family, []).append(name)
        if task.family in OPT_IN_FAMILIES:
            continue
        groups["all"].append(name)
        for ds in task.datasets:
            groups.setdefault(ds, []).append(name)
    return groups


def resolve_tasks(spec: str) -> list[Task]:
    """Tasks named by a comma-separated list of task and group names (order kept, no duplicates)."""
    groups = task_groups()
    names: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if part in groups:
            names.extend(groups[part])
        elif part in TASKS:
            names.append(part)
        else:
            raise UnknownNameError("task", part, [*TASKS.names(), *groups])
    if not names:
        raise UnknownNameError("task", spec, [*TASKS.names(), *groups])
    return [TASKS.get(n) for n in dict.fromkeys(names)]
