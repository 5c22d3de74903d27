"""The task registry and task-group resolution.

Task names are ``<family>/<dataset>`` (``linear/cifar10``).  Groups: ``all``, each family (``linear``)
and each dataset name (``cifar10`` = every task on CIFAR-10).  ``--tasks`` takes a comma-separated
list of task or group names.
"""

from __future__ import annotations

from bench.errors import UnknownNameError
from bench.registry import Registry
from tasks.base import Task
from tasks.classification import EvalResolution, LinearProbeTask


def build_task_registry() -> Registry[Task]:
    reg: Registry[Task] = Registry("task")
    cifar_res = {"smoke": EvalResolution(32, 32), "paper": EvalResolution(224, 224)}
    for task in (LinearProbeTask("cifar10", "train", "test", cifar_res),):
        reg.register(task.name, task)
    return reg


TASKS = build_task_registry()


def task_groups() -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {"all": TASKS.names()}
    for name, task in TASKS.items():
        groups.setdefault(task.family, []).append(name)
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
