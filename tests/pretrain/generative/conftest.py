"""Session fixtures of the generative-augmentation tests: a tiny synthetic data root, its oracle store, and
the tiny random diffusers pipelines saved once per session as model folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from pretrain.generative.base import GeneratorSettings
from pretrain.generative.generate import generate
from tasks.datasets.synth.writer import ensure_synthetic

#: Oracle settings of the tests (4 variants per image keep them fast; the paper's 10 is the default).
ORACLE_TEST_SETTINGS = GeneratorSettings(per_image=4, size=40, batch_size=64, keep=0.5)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root with the "tiny" synthetic ImageNet (300 train / 100 val, 40 px) and CIFAR-10."""
    return ensure_synthetic(tmp_path_factory.mktemp("gen-data"), ["imagenet", "cifar10"], "tiny")


@pytest.fixture(scope="session")
def oracle_store(tiny_root: Path) -> Path:
    """A complete oracle store of the tiny ImageNet train split at ``<root>/imagenet-variants/oracle``."""
    report = generate("oracle", None, tiny_root, "imagenet", "train", ORACLE_TEST_SETTINGS, progress=False)
    assert report.complete
    return report.store


@pytest.fixture(scope="session")
def tiny_unclip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random StableUnCLIPImg2ImgPipeline folder (read-only: copy it before editing)."""
    pytest.importorskip("diffusers")
    from tests.pretrain.generative.tiny_pipelines import build_tiny_unclip

    return build_tiny_unclip(tmp_path_factory.mktemp("tiny-models") / "sd-unclip")


@pytest.fixture(scope="session")
def tiny_variations_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random StableDiffusionImageVariationPipeline folder (read-only: copy it before editing)."""
    pytest.importorskip("diffusers")
    from tests.pretrain.generative.tiny_pipelines import build_tiny_variations

    return build_tiny_variations(tmp_path_factory.mktemp("tiny-models") / "sd-variations")
