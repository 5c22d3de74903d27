"""The synthetic-data oracle: an instance-conditioned generator that is right by construction.

A real instance-conditioned generator (IC-GAN, SD image variations) is asked for "more images like this
one": at best it keeps the object's class and some of the instance's own appearance and redraws what does
not define the object.  On the synthetic stand-ins we know exactly what an image is made of (its
:class:`~tasks.datasets.synth.shapes.SceneParams`, replayed from the writer's seed), so the oracle can do
that exactly, which lets the CPU smoke profile measure what generative augmentation can do for SSL at
best.  It is labelled ``oracle`` in every store manifest, result and table.

Variant ``k`` of a source image:

* keeps the **class identity** (shape and fill pattern);
* keeps the instance's **own attributes** to the degree ``keep`` in [0, 1]: its two foreground colours are
  ``keep * source + (1 - keep) * fresh`` (RGB) and its aspect stretch ``source**keep * fresh**(1-keep)``;
  ``keep = 1`` keeps them exactly, ``keep = 0`` is a class-conditional sample;
* **redraws the nuisance attributes**: position, scale, rotation, background (colours, gradient,
  texture), clutter marks and pixel noise, from the stand-in's own style distributions;
* draws everything from a generator seeded with the variant's seed only (see ``base.variant_seed``).

If the kept foreground colour ends up too close to the new background, the background is redrawn (flat)
until it contrasts as the renderer requires.  Only stand-ins written by ``bench data synth`` (with their
marker) can be replayed: the supported datasets are listed in :data:`REPLAYS`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from core.errors import DatasetError
from pretrain.generative.base import GeneratorSettings, SourceImage
from pretrain.generative.sources import SourceSet
from tasks.datasets import imagefolder
from tasks.datasets.synth import shapes
from tasks.datasets.synth.writer import read_marker

#: dataset -> (seed, scale, split) -> the render call behind that split: (count, classes, size, seed, style),
#: and the permutation from render order to loader order.
REPLAYS: dict[str, tuple[Callable[[int, str, str], tuple[int, int, int, int, shapes.SynthStyle]], Any]] = {
    "imagenet": (imagefolder.imagenet_render_args, imagefolder.loader_order),
}


@dataclasses.dataclass
class _Replay:
    style: shapes.SynthStyle
    chunks: list[shapes.SceneParams]
    render_index: np.ndarray  # loader index -> render index


class OracleGenerator:
    """See the module docstring.  ``bind`` must be called with the source split before ``generate``."""

    name = "oracle"

    def __init__(self, settings: GeneratorSettings) -> None:
        self.settings = settings
        self._replay: _Replay | None = None
        self._source: dict[str, Any] = {}

    def bind(self, sources: SourceSet) -> None:
        if sources.dataset not in REPLAYS:
            raise DatasetError(
                f"the oracle generator replays synthetic stand-ins of {', '.join(REPLAYS)} only, "
                f"not {sources.dataset!r}"
            )
        marker = read_marker(sources.root, sources.dataset)
        if marker is None:
            raise DatasetError(
                f"the oracle generator works on synthetic stand-ins only: {sources.dataset} under "
                f"{sources.root} has no synthetic marker (real data: sd-unclip, sd-variations or icgan)"
            )
        render_args, order_of = REPLAYS[sources.dataset]
        count, classes, size, seed, style = render_args(
            int(marker["seed"]), str(marker["scale"]), sources.split
        )
        labels, chunks = shapes.render_params(count, classes, size, seed, style)
        order = order_of(labels)
        if len(order) != len(sources) or not np.array_equal(labels[order], sources.labels):
            raise DatasetError(
                f"{sources.dataset}/{sources.split} under {sources.root} does not match its synthetic marker "
                f"(expected {count} images); regenerate it with `bench data synth`"
            )
        self._replay = _Replay(style, chunks, order)
        self._source = {"dataset": sources.dataset, "marker_seed": marker["seed"], "scale": marker["scale"]}

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "oracle (synthetic data only)",
            "renderer": "tasks.datasets.synth.shapes",
            "renderer_version": shapes.GENERATOR_VERSION,
            "keep": self.settings.keep,
            **self._source,
        }

    def source_params(self, index: int) -> shapes.SceneParams:
        """The replayed parameters of source ``index`` (loader order)."""
        if self._replay is None:
            raise RuntimeError("OracleGenerator.bind() was not called")
        r = int(self._replay.render_index[index])
        return shapes.select_params(self._replay.chunks[r // shapes.CHUNK], r % shapes.CHUNK)

    def variant_params(self, source: shapes.SceneParams, seed: int) -> shapes.SceneParams:
        """One variant's parameters (module docstring), drawn from ``seed`` alone."""
        assert self._replay is not None
        style, keep, size = self._replay.style, self.settings.keep, self.settings.size
        rng = np.random.default_rng(seed)
        fresh = shapes.sample_params(source.labels, size, style, rng)
        mixed = dataclasses.replace(
            fresh,
            fg=(keep * source.fg + (1 - keep) * fresh.fg).astype(np.float32),
            fg2=(keep * source.fg2 + (1 - keep) * fresh.fg2).astype(np.float32),
            stretch=(source.stretch**keep * fresh.stretch ** (1 - keep)).astype(np.float32),
        )
        return shapes.contrasting_background(mixed, style, rng)

    def generate(
        self, sources: Sequence[SourceImage], seeds: Sequence[Sequence[int]]
    ) -> list[list[Image.Image]]:
        if self._replay is None:
            raise RuntimeError("OracleGenerator.bind() was not called")
        parts = [
            self.variant_params(self.source_params(src.index), seed)
            for src, variant_seeds in zip(sources, seeds, strict=True)
            for seed in variant_seeds
        ]
        if not parts:
            return [[] for _ in sources]
        pixels = shapes.draw(shapes.concat_params(parts), self.settings.size, self._replay.style)
        out, pos = [], 0
        for variant_seeds in seeds:
            out.append([Image.fromarray(pixels[pos + k]) for k in range(len(variant_seeds))])
            pos += len(variant_seeds)
        return out


def build_oracle(model_dir: Path | None, settings: GeneratorSettings) -> OracleGenerator:
    """The oracle takes no model (``--model`` is refused rather than silently ignored)."""
    if model_dir is not None:
        raise DatasetError("the oracle generator takes no --model (it re-renders synthetic stand-ins)")
    return OracleGenerator(settings)
