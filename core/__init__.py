"""The base layer every other package imports: typed configs (``config``), the registry (``registry``),
user-facing errors (``errors``), result files and atomic writes (``results``, ``fsutil``), data/runs/cache
locations (``paths``) and provenance (``provenance``).  It imports nothing from the rest of the project;
the layers above it point one way: core <- pretrain, tasks <- leaderboard <- ci <- bench (CLI, harness),
checked by ``tests/core/test_layers.py``."""

__version__ = "0.1.0"  # keep equal to pyproject.toml's version
