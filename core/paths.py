"""Where things live: the data root, the cache and the runs directory.

* Data root: ``--data-root`` or ``$BENCH_DATA``; with neither, the embedded default applies: synthetic
  stand-ins generated once into ``<cache>/synthetic`` (and every result says ``data_source: synthetic``).
* Cache: ``$BENCH_CACHE`` or ``~/.cache/augbench`` (synthetic data, feature caches).
* Runs: ``--runs-dir`` or ``$BENCH_RUNS`` or ``./runs``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DataRoot:
    """A resolved data root and whether it holds the generated synthetic stand-ins."""

    path: Path
    synthetic: bool


def cache_dir() -> Path:
    env = os.environ.get("BENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "augbench"


def synthetic_root() -> Path:
    return cache_dir() / "synthetic"


def resolve_data_root(cli_value: str | None) -> DataRoot:
    value = cli_value or os.environ.get("BENCH_DATA")
    if value:
        return DataRoot(Path(value).expanduser().resolve(), synthetic=False)
    return DataRoot(synthetic_root(), synthetic=True)


def resolve_runs_dir(cli_value: str | None) -> Path:
    value = cli_value or os.environ.get("BENCH_RUNS") or "runs"
    return Path(value).expanduser().resolve()
