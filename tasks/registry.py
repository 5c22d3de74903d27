"""The task registry and task-group resolution.

Task names are ``<family>/<dataset>``: ``linear/cifar10``, ``knn/food101``, ``linear-aug/imagenet``.
Parametrised tasks are built from a *template* by name: ``<template>[:<argument>]`` (``cka:moco``,
``invariance:moco_erasing``); the template says whether the argument is required and what it means.  The
dense transfer templates also take ``@<backend>``: ``det/voc07@torchvision``,
``instseg/coco:fpn_1x@detectron2`` (the argument is then everything after the template name).
Groups: each family (``linear``, ``knn``, ``linear-aug``, ``seg``), each dataset name (``cifar10`` = the
cached linear and kNN tasks on CIFAR-10; ``imagenet100``: the class subset's tasks, which are in no other
group), the groups a template names (``det``, ``instseg``),
``transfer`` = the dense transfer tasks (detection, instance segmentation and ``seg/voc12aug``,
``seg/cityscapes``, ``seg/ade20k``) and ``all`` = every registered task except the opt-in ones (the
augmented linear protocol trains through the backbone for 100 epochs and is only run when named) plus the
templates marked ``in_all`` with their default argument.  ``--tasks`` takes a comma-separated list of task,
group and template names.

Eval resolutions (resize shorter side -> centre crop) per dataset and profile:

================  ==============  ===============
dataset           smoke           paper
================  ==============  ===============
cifar10/100       32 -> 32        224 -> 224 (upsampled, as in the transfer papers)
others            36 -> 32        256 -> 224
================  ==============  ===============
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from core.errors import ConfigError, UnknownNameError
from core.registry import Registry
from tasks.base import Task
from tasks.classification import KnnTask, LinearProbeTask
from tasks.detection.tasks import (
    DET_DESCRIPTION,
    DET_USAGE,
    INSTSEG_DESCRIPTION,
    INSTSEG_USAGE,
    build_dense_task,
)
from tasks.frozen import EvalResolution
from tasks.linear_aug import AugmentedLinearTask
from tasks.representation.tasks import (
    CKA_DESCRIPTION,
    CKA_USAGE,
    INVARIANCE_DESCRIPTION,
    INVARIANCE_USAGE,
    OPD_DESCRIPTION,
    OPD_USAGE,
    build_comparison_task,
    build_invariance_task,
)
from tasks.segmentation.protocols import build_segmentation_tasks

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

#: Class subsets of a classification dataset, read from its tree: ``linear/<ds>`` and ``knn/<ds>`` only, in
#: their dataset's group but not in ``all`` or the family groups (the full dataset is there already).
SUBSET_DATASETS: dict[str, dict[str, EvalResolution]] = {"imagenet100": PHOTOS}

#: Families left out of the ``all`` group (run only when named).
OPT_IN_FAMILIES = ("linear-aug",)
#: Families of the ``transfer`` group (fine-tuning on dense tasks).
TRANSFER_FAMILIES = ("seg",)


def build_task_registry() -> Registry[Task]:
    """A fresh registry: linear, kNN and augmented-linear tasks on every classification dataset, then the
    semantic-segmentation tasks."""
    reg: Registry[Task] = Registry("task")
    for dataset, res in CLASSIFICATION_DATASETS.items():
        tasks: tuple[Task, ...] = (
            LinearProbeTask(dataset, res),
            KnnTask(dataset, res),
            AugmentedLinearTask(dataset, res),
        )
        for task in tasks:
            reg.register(task.name, task)
    for dataset, res in SUBSET_DATASETS.items():
        for task in (LinearProbeTask(dataset, res), KnnTask(dataset, res)):
            reg.register(task.name, task)
    for seg_task in build_segmentation_tasks():
        reg.register(seg_task.name, seg_task)
    return reg


TASKS = build_task_registry()


@dataclass(frozen=True)
class TaskTemplate:
    """A family of parametrised tasks: ``build(argument or None) -> Task``.

    ``usage`` is shown by ``bench ls tasks`` (e.g. ``cka:<recipe|checkpoint>``); ``needs_argument`` makes a
    bare ``<name>`` an error; ``in_all`` adds ``build(None)`` to the ``all`` group and ``groups`` to those
    groups.
    """

    usage: str
    description: str
    build: Callable[[str | None], Task]
    needs_argument: bool = False
    in_all: bool = False
    groups: tuple[str, ...] = ()


def build_template_registry() -> Registry[TaskTemplate]:
    """A fresh registry of task templates, listed explicitly."""
    reg: Registry[TaskTemplate] = Registry("task template")
    reg.register(
        "invariance",
        TaskTemplate(INVARIANCE_USAGE, INVARIANCE_DESCRIPTION, build_invariance_task, in_all=True),
    )
    reg.register(
        "det/voc07",
        TaskTemplate(
            DET_USAGE,
            DET_DESCRIPTION,
            partial(build_dense_task, "det/voc07"),
            in_all=True,
            groups=("det", "transfer"),
        ),
    )
    reg.register(
        "instseg/coco",
        TaskTemplate(
            INSTSEG_USAGE,
            INSTSEG_DESCRIPTION,
            partial(build_dense_task, "instseg/coco"),
            in_all=True,
            groups=("instseg", "transfer"),
        ),
    )
    reg.register(
        "cka",
        TaskTemplate(
            CKA_USAGE,
            CKA_DESCRIPTION,
            partial(build_comparison_task, "cka", CLASSIFICATION_DATASETS),
            needs_argument=True,
        ),
    )
    reg.register(
        "opd",
        TaskTemplate(
            OPD_USAGE,
            OPD_DESCRIPTION,
            partial(build_comparison_task, "opd", CLASSIFICATION_DATASETS),
            needs_argument=True,
        ),
    )
    return reg


TEMPLATES = build_template_registry()


def split_template_spec(spec: str) -> tuple[str, str]:
    """``<template>:<argument>`` or ``<template>@<backend>...`` -> (template name, argument)."""
    name = re.split(r"[:@]", spec, maxsplit=1)[0]
    rest = spec[len(name) :]
    return name, rest[1:] if rest.startswith(":") else rest


def build_from_template(spec: str) -> Task:
    """The task named by ``<template>[:<argument>]`` (or ``<template>@<backend>``)."""
    name, arg = split_template_spec(spec)
    template = TEMPLATES.get(name)
    if template.needs_argument and not arg:
        raise ConfigError(f"task {name!r} needs an argument: {template.usage}")
    return template.build(arg or None)


def task_groups() -> dict[str, list[str]]:
    """Group name -> task names (see module docstring)."""
    groups: dict[str, list[str]] = {"all": []}
    groups["all"].extend(name for name, t in TEMPLATES.items() if t.in_all)
    for name, template in TEMPLATES.items():
        for group in template.groups:
            groups.setdefault(group, []).append(name)
    for name, task in TASKS.items():
        if any(ds in SUBSET_DATASETS for ds in task.datasets):
            for ds in task.datasets:
                groups.setdefault(ds, []).append(name)
            continue
        groups.setdefault(task.family, []).append(name)
        if task.family in TRANSFER_FAMILIES:
            groups.setdefault("transfer", []).append(name)
        if task.family in OPT_IN_FAMILIES:
            continue
        groups["all"].append(name)
        for ds in task.datasets:
            groups.setdefault(ds, []).append(name)
    return groups


def resolve_tasks(spec: str) -> list[Task]:
    """Tasks named by a comma-separated list of task and group names (order kept, no duplicates)."""
    groups = task_groups()
    known = [*TASKS.names(), *groups, *TEMPLATES.names()]
    names: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if part in groups:
            names.extend(groups[part])
        elif part in TASKS or split_template_spec(part)[0] in TEMPLATES:
            names.append(part)
        else:
            raise UnknownNameError("task", part, known)
    if not names:
        raise UnknownNameError("task", spec, known)
    return [TASKS.get(n) if n in TASKS else build_from_template(n) for n in dict.fromkeys(names)]
