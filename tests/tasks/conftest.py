"""Shared fixtures for the dataset tests: one tiny synthetic data root per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.datasets.synth.writer import ensure_synthetic


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root with the "tiny" synthetic CIFAR-10 and ImageNet stand-ins (read-only for tests)."""
    return ensure_synthetic(tmp_path_factory.mktemp("synth"), ["cifar10", "imagenet"], "tiny")
