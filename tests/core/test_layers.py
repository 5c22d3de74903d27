"""Imports point one way: core <- pretrain, tasks <- leaderboard <- ci <- bench, studies (CLI, harness);
pretrain and tasks are one middle layer (pretraining reads the dataset registry, tasks build backbones);
bench and studies are one top layer (``bench study`` runs a study's cells through ``bench run``).

Every ``import``/``from`` statement of the project's packages is read with :mod:`ast` (module level and
inside functions alike), so a lazy import breaking the layering fails here too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: package -> project packages it may import (besides itself)
ALLOWED = {
    "core": set(),
    "pretrain": {"core", "tasks"},
    "tasks": {"core", "pretrain"},
    "leaderboard": {"core", "pretrain", "tasks"},
    "ci": {"core", "pretrain", "tasks", "leaderboard"},
    "studies": {"core", "pretrain", "tasks", "leaderboard", "ci", "bench"},
    "bench": {"core", "pretrain", "tasks", "leaderboard", "ci", "studies"},
}


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_one_way(package: str) -> None:
    wrong = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = (_imports(path) & set(ALLOWED)) - ALLOWED[package] - {package}
        if bad:
            wrong[str(path.relative_to(ROOT))] = sorted(bad)
    assert not wrong, f"{package} may import only {sorted(ALLOWED[package])}: {wrong}"


def test_core_imports_without_the_other_layers() -> None:
    import subprocess
    import sys

    code = (
        "import sys, core.config, core.errors, core.fsutil, core.hardware, core.paths, core.provenance, "
        "core.registry, core.results; "
        "print(sorted(m for m in ('bench','pretrain','tasks','leaderboard','ci','studies') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"
