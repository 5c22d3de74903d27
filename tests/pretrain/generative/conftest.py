"""Session fixtures: the tiny random diffusers pipelines, saved once per session as model folders."""

from __future__ import annotations

from pathlib import Path

import pytest


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
