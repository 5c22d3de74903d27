"""The synthetic oracle: exact replay of the stand-in, what a variant keeps and what it redraws."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from core.errors import DatasetError
from pretrain.generative.base import GeneratorSettings, SourceImage
from pretrain.generative.oracle import OracleGenerator
from pretrain.generative.sources import load_sources
from tasks.datasets import imagefolder
from tasks.datasets.synth import shapes
from tasks.datasets.synth.writer import read_marker

pytestmark = pytest.mark.usefixtures("one_thread")


def _oracle(root: Path, keep: float = 0.5) -> OracleGenerator:
    gen = OracleGenerator(GeneratorSettings(size=40, keep=keep))
    gen.bind(load_sources(root, "imagenet", "train"))
    return gen


def test_params_split_renders_exactly() -> None:
    """render = draw(sample_params): select/concat of parameters reproduce the rendered pixels exactly."""
    style = imagefolder.IMAGENET_STYLE
    images, labels = shapes.render(700, 10, 40, 11, style)  # two chunks
    labels_again, chunks = shapes.render_params(700, 10, 40, 11, style)
    assert np.array_equal(labels, labels_again)
    assert np.array_equal(shapes.draw(chunks[1], 40, style), images[shapes.CHUNK :])
    picked = [shapes.select_params(chunks[0], i) for i in (3, 0, 511)]
    assert np.array_equal(shapes.draw(shapes.concat_params(picked), 40, style), images[[3, 0, 511]])


def test_oracle_replays_the_stand_in_exactly(tiny_root: Path) -> None:
    gen = _oracle(tiny_root)
    marker = read_marker(tiny_root, "imagenet")
    assert marker is not None
    count, classes, size, seed, style = imagefolder.imagenet_render_args(
        marker["seed"], marker["scale"], "train"
    )
    images, labels = shapes.render(count, classes, size, seed, style)
    order = imagefolder.loader_order(labels)
    sources = load_sources(tiny_root, "imagenet", "train")
    for i in (0, 42, 299):
        assert np.array_equal(shapes.draw(gen.source_params(i), 40, style)[0], images[order[i]])
        decoded = np.asarray(sources.open(i), dtype=float)  # the JPEG on disk, quality 95
        assert np.abs(decoded - images[order[i]]).mean() < 8


def test_variant_keeps_identity_and_instance_redraws_nuisance(tiny_root: Path) -> None:
    style = imagefolder.IMAGENET_STYLE
    for keep in (1.0, 0.5, 0.0):
        gen = _oracle(tiny_root, keep)
        src = gen.source_params(7)
        variants = [gen.variant_params(src, seed) for seed in range(40)]
        fresh = [shapes.sample_params(src.labels, 40, style, np.random.default_rng(s)) for s in range(40)]
        for var, new in zip(variants, fresh, strict=True):
            assert var.labels[0] == src.labels[0]  # class identity
            assert np.allclose(var.fg, keep * src.fg + (1 - keep) * new.fg, atol=1e-6)
            assert np.allclose(var.stretch, src.stretch**keep * new.stretch ** (1 - keep), rtol=1e-5)
            assert (var.cx, var.cy, var.theta, var.radius_frac) == (
                new.cx,
                new.cy,
                new.theta,
                new.radius_frac,
            )
            contrast = np.linalg.norm(var.fg - (var.bg_a + var.bg_b) / 2, axis=1)
            assert (contrast >= style.min_contrast - 1e-6).all() or np.allclose(var.bg_a, 1 - var.fg)
        assert len({float(v.cx[0]) for v in variants}) == 40  # positions redrawn


def test_generate_is_a_function_of_the_seeds(tiny_root: Path) -> None:
    gen = _oracle(tiny_root)
    sources = load_sources(tiny_root, "imagenet", "train")
    a = SourceImage(3, sources.relpaths[3], int(sources.labels[3]), sources.open(3))
    b = SourceImage(8, sources.relpaths[8], int(sources.labels[8]), sources.open(8))
    together = gen.generate([a, b], [[1, 2], [3]])
    alone = gen.generate([b], [[3]])
    assert np.array_equal(np.asarray(together[1][0]), np.asarray(alone[0][0]))
    assert [len(v) for v in together] == [2, 1] and together[0][0].size == (40, 40)
    assert not np.array_equal(np.asarray(together[0][0]), np.asarray(together[0][1]))
    small = OracleGenerator(dataclasses.replace(gen.settings, size=24))
    small.bind(sources)
    assert small.generate([a], [[1]])[0][0].size == (24, 24)


def test_oracle_refuses_datasets_it_cannot_replay(tiny_root: Path) -> None:
    with pytest.raises(DatasetError, match="replays synthetic stand-ins of imagenet only"):
        OracleGenerator(GeneratorSettings()).bind(load_sources(tiny_root, "cifar10", "train"))
