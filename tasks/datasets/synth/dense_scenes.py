"""Procedural dense scenes with per-pixel labels: the stand-ins of the semantic-segmentation datasets.

A scene is drawn in two layers (vectorised over a chunk of images, numpy float32):

1. **Stuff**: the image is cut top to bottom into ``min_bands..max_bands`` horizontal bands with wavy
   boundaries (a sinusoid of random amplitude, frequency and phase per boundary).  The bands take an
   ordered random subset of the style's stuff classes (sky above buildings above road: the list order is
   the vertical order).  Each band is a *texture* of two random colours; the texture kind (smooth noise,
   horizontal / vertical / diagonal stripes, checker, dots, fine noise, bricks) is what identifies the
   stuff class, never the colour.
2. **Things**: ``min_things..max_things`` objects, each the signed-distance shape of its class
   (:data:`tasks.datasets.synth.shapes.SHAPES`) at a random position, radius, rotation and aspect, in a
   random colour with a soft shading ramp (patterned fills add a second random colour), drawn over the
   stuff with anti-aliased edges.

Labels (``uint8``): a band's stuff label, overwritten by a thing's label where its coverage is at least
0.5; with ``boundary_ignore > 0`` the pixels within that many pixels of a thing's outline get
``ignore_label`` (like the 5-pixel void border of PASCAL VOC's annotations).  A stuff class may carry the
ignore label itself (Cityscapes' unlabelled regions, ADE20K's "other" = 0).

Colours carry no class information (every class draws them the same way), so segmenting a scene needs
texture and shape, the cues the shapes stand-ins pretrain for.  Output is a deterministic function of
``(n, height, width, seed, style)`` on a given machine and library build.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from tasks.datasets.synth import shapes

#: Bumped whenever the pixels or labels produced for a given (seed, style) change.
SCENES_VERSION = 1
#: Images rendered per vectorised batch.
CHUNK = 128
TEXTURES = ("smooth", "hstripes", "vstripes", "dstripes", "checker", "dots", "noise", "bricks")
FILLS = ("solid", "stripes", "checker", "dots", "rings")

Array = np.ndarray


@dataclass(frozen=True)
class StuffClass:
    """A region class: its label id and the texture kind (one of :data:`TEXTURES`) it is drawn with."""

    label: int
    texture: str

    def __post_init__(self) -> None:
        if self.texture not in TEXTURES:
            raise ValueError(f"unknown texture {self.texture!r}; choose from {TEXTURES}")


@dataclass(frozen=True)
class ThingClass:
    """An object class: its label id, the shape (a key of ``shapes.SHAPES``) it is drawn as and its fill
    (one of :data:`FILLS`: a second colour in stripes, a checkerboard, dots or rings, in object
    coordinates, so the pattern turns and scales with the object)."""

    label: int
    shape: str
    fill: str = "solid"

    def __post_init__(self) -> None:
        if self.shape not in shapes.SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}")
        if self.fill not in FILLS:
            raise ValueError(f"unknown fill {self.fill!r}; choose from {FILLS}")


@dataclass(frozen=True)
class SceneStyle:
    """What a dataset's scenes contain (sizes are fractions of the shorter image side unless noted).

    Attributes:
        stuff: region classes in top-to-bottom order (several entries may share a label).
        things: object classes.
        bands: (min, max) number of stuff bands per image.
        min_things / max_things: objects per image are uniform in ``min_things..max_things``.
        thing_radius: range of an object's radius.
        rotation: object rotation in degrees, uniform in +-this.
        aspect_jitter: log-stretch of one object axis (and the inverse of the other), uniform in +-this.
        texture_period: range of a texture's period in pixels.
        texture_contrast: range of the blend weight between a texture's two colours.
        boundary_ignore: width in pixels of the ignore band around objects (0: none).
        ignore_label: the label of ignored pixels.
        pixel_noise: std of the uniform per-pixel noise.
    """

    stuff: tuple[StuffClass, ...]
    things: tuple[ThingClass, ...]
    bands: tuple[int, int] = (2, 3)
    max_things: int = 3
    min_things: int = 0
    thing_radius: tuple[float, float] = (0.1, 0.22)
    rotation: float = 30.0
    aspect_jitter: float = 0.2
    texture_period: tuple[float, float] = (4.0, 8.0)
    texture_contrast: tuple[float, float] = (0.5, 1.0)
    boundary_ignore: float = 0.0
    ignore_label: int = 255
    pixel_noise: float = 0.02

    def __post_init__(self) -> None:
        lo, hi = self.bands
        if not self.stuff or not 1 <= lo <= hi or hi > len(self.stuff):
            raise ValueError(f"SceneStyle.bands {self.bands} must satisfy 1 <= lo <= hi <= len(stuff)")
        if not 0 <= self.min_things <= self.max_things or (self.max_things and not self.things):
            raise ValueError("SceneStyle needs 0 <= min_things <= max_things and thing classes if max > 0")

    @property
    def labels(self) -> tuple[int, ...]:
        """Every label id a scene can contain (ignore included when used), sorted."""
        ids = {c.label for c in self.stuff} | {c.label for c in self.things}
        if self.boundary_ignore > 0:
            ids.add(self.ignore_label)
        return tuple(sorted(ids))


def hsv_colours(rng: np.random.Generator, shape: tuple[int, ...]) -> Array:
    """Random RGB colours in [0, 1], ``shape + (3,)``: hue uniform, saturation 0.2-1, value 0.15-1."""
    h = rng.random(shape, dtype=np.float32) * 6
    s = rng.uniform(0.2, 1.0, shape).astype(np.float32)
    v = rng.uniform(0.15, 1.0, shape).astype(np.float32)
    k = np.mod(np.array([5, 3, 1], np.float32) + h[..., None], 6)
    return v[..., None] - (v * s)[..., None] * np.clip(np.minimum(k, 4 - k), 0, 1)


def _value_noise(rng: np.random.Generator, n: int, height: int, width: int, cells: int) -> Array:
    """Smooth noise in [0, 1] ``[n, height, width]``: bilinear interpolation of a random control grid."""
    grid = rng.random((n, cells + 1, cells + 1), dtype=np.float32)

    def weights(size: int) -> Array:
        pos = (np.arange(size, dtype=np.float32) + 0.5) / size * cells
        return np.clip(1 - np.abs(pos[:, None] - np.arange(cells + 1, dtype=np.float32)[None, :]), 0, 1)

    return np.einsum("ya,nab,xb->nyx", weights(height), grid, weights(width), optimize=True)


def _texture(kind: str, rng: np.random.Generator, n: int, ys: Array, xs: Array, period: Array) -> Array:
    """Weight in [0, 1] of a texture's second colour, ``[n, H, W]``; ``period`` is ``[n, 1, 1]``."""
    phase = rng.uniform(0, 2 * np.pi, (n, 1, 1)).astype(np.float32)
    tilt = rng.uniform(-0.15, 0.15, (n, 1, 1)).astype(np.float32)  # small random rotation
    u = xs * np.cos(tilt) + ys * np.sin(tilt)
    v = ys * np.cos(tilt) - xs * np.sin(tilt)
    two_pi = np.float32(2 * np.pi)
    if kind == "smooth":
        return _value_noise(rng, n, ys.shape[1], xs.shape[2], 2)
    if kind == "noise":
        cells = max(2, round(xs.shape[2] / 2.5))
        return _value_noise(rng, n, ys.shape[1], xs.shape[2], cells)
    if kind == "hstripes":
        return np.clip(0.5 + 2 * np.sin(two_pi * v / period + phase), 0, 1)
    if kind == "vstripes":
        return np.clip(0.5 + 2 * np.sin(two_pi * u / period + phase), 0, 1)
    if kind == "dstripes":
        return np.clip(0.5 + 2 * np.sin(two_pi * (u + v) / (1.41 * period) + phase), 0, 1)
    if kind == "checker":
        return np.clip(0.5 + 3 * np.sin(two_pi * u / period + phase) * np.sin(two_pi * v / period), 0, 1)
    if kind == "dots":
        du = u - period * np.round(u / period + phase)
        dv = v - period * np.round(v / period)
        return np.clip(0.5 - (np.sqrt(du * du + dv * dv) - 0.28 * period), 0, 1)
    # bricks: rows of rectangles, every other row shifted by half a brick
    row = np.floor(v / period + phase)
    shift = np.mod(row, 2) * period
    mortar_v = np.abs(v / period + phase - row - 0.5) > 0.38
    mortar_u = np.abs(np.mod(u + shift, 2 * period) - period) > 0.85 * period
    return (mortar_v | mortar_u).astype(np.float32)


def _fill(kind: str, u: Array, v: Array) -> Array:
    """Weight in [0, 1] of an object's second colour at object coordinates ``(u, v)`` (radius ~1)."""
    two_pi = np.float32(2 * np.pi)
    if kind == "stripes":
        return np.clip(0.5 + 2 * np.sin(two_pi * u / 0.5), 0, 1)
    if kind == "checker":
        return np.clip(0.5 + 3 * np.sin(two_pi * u / 0.6) * np.sin(two_pi * v / 0.6), 0, 1)
    if kind == "dots":
        du, dv = u - 0.5 * np.round(u / 0.5), v - 0.5 * np.round(v / 0.5)
        return np.clip(0.5 - (np.sqrt(du * du + dv * dv) - 0.14) * 8, 0, 1)
    if kind == "rings":
        return np.clip(0.5 + 2 * np.sin(two_pi * np.sqrt(u * u + v * v) / 0.45), 0, 1)
    return np.zeros_like(u)


def _render_chunk(
    n: int, height: int, width: int, style: SceneStyle, rng: np.random.Generator
) -> tuple[Array, Array]:
    f32 = np.float32
    ys = np.arange(height, dtype=f32)[None, :, None] + 0.5
    xs = np.arange(width, dtype=f32)[None, None, :] + 0.5
    side = min(height, width)
    # -- stuff bands: which band each pixel is in, and which stuff class each band shows
    lo, hi = style.bands
    counts = rng.integers(lo, hi + 1, n)
    chosen = np.zeros((n, hi), dtype=np.int64)  # stuff-list index of band b (first counts[i] used)
    for i in range(n):
        chosen[i, : counts[i]] = np.sort(rng.permutation(len(style.stuff))[: counts[i]])
    cuts = np.sort(rng.random((n, hi - 1), dtype=f32), axis=1) * 0.8 + 0.1  # boundary heights in [0.1, 0.9]
    amp = rng.uniform(0.0, 0.08, (n, hi - 1, 1)).astype(f32)
    freq = rng.uniform(0.5, 2.5, (n, hi - 1, 1)).astype(f32)
    phase = rng.uniform(0, 2 * np.pi, (n, hi - 1, 1)).astype(f32)
    xw = np.arange(width, dtype=f32)[None, None, :] / width
    # image i uses its first counts[i] - 1 boundaries; the others move below the image (height 2.0)
    active = np.arange(hi - 1)[None, :] < (counts - 1)[:, None]
    cuts = np.sort(np.where(active, cuts, 2.0), axis=1)
    boundary = (cuts[..., None] + amp * np.sin(2 * np.pi * freq * xw + phase)) * height  # [n, hi-1, W]
    band = (ys[:, None, :, :] > boundary[:, :, None, :]).sum(axis=1)  # [n, H, W] band index
    stuff_idx = np.take_along_axis(chosen, band.reshape(n, -1), axis=1).reshape(n, height, width)
    # -- textures
    col_a = hsv_colours(rng, (n, hi))
    col_b = hsv_colours(rng, (n, hi))
    contrast = rng.uniform(*style.texture_contrast, (n, hi)).astype(f32)
    weight = np.zeros((n, height, width), f32)
    kinds = [c.texture for c in style.stuff]
    for kind in dict.fromkeys(kinds):
        period = rng.uniform(*style.texture_period, (n, 1, 1)).astype(f32)
        pattern = _texture(kind, rng, n, ys, xs, period)
        use = np.isin(stuff_idx, [k for k, name in enumerate(kinds) if name == kind])
        weight = np.where(use, pattern, weight)
    rows = np.arange(n)[:, None, None]
    img = col_a[rows, band] + (col_b - col_a)[rows, band] * (weight * contrast[rows, band])[..., None]
    stuff_labels = np.array([c.label for c in style.stuff], dtype=np.int64)
    labels = stuff_labels[stuff_idx]
    # -- things
    ignore = np.zeros((n, height, width), dtype=bool)
    present = rng.integers(style.min_things, style.max_things + 1, n)
    for slot in range(style.max_things):
        idx = np.flatnonzero(present > slot)
        m = idx.size
        klass = rng.integers(0, max(len(style.things), 1), m)
        cx = rng.uniform(0.1, 0.9, m).astype(f32) * width
        cy = rng.uniform(0.1, 0.9, m).astype(f32) * height
        radius = (rng.uniform(*style.thing_radius, m) * side).astype(f32)
        theta = np.deg2rad(rng.uniform(-style.rotation, style.rotation, m)).astype(f32)
        stretch = np.exp(rng.uniform(-style.aspect_jitter, style.aspect_jitter, m)).astype(f32)
        colour = hsv_colours(rng, (m,))
        colour2 = hsv_colours(rng, (m,))
        shade = rng.uniform(-0.25, 0.25, (m, 3)).astype(f32)
        if not m:
            continue
        dx, dy = xs - cx[:, None, None], ys - cy[:, None, None]
        cos, sin = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
        u = (cos * dx + sin * dy) / (radius * stretch)[:, None, None]
        v = (cos * dy - sin * dx) * (stretch / radius)[:, None, None]
        px = (radius / np.maximum(stretch, 1 / stretch))[:, None, None]
        dist = np.empty((m, height, width), f32)
        second = np.zeros((m, height, width), f32)
        for k, thing in enumerate(style.things):
            sel = np.flatnonzero(klass == k)
            if sel.size:
                dist[sel] = shapes.SHAPES[thing.shape](u[sel], v[sel]) * px[sel]
                if thing.fill != "solid":
                    second[sel] = _fill(thing.fill, u[sel], v[sel])
        alpha = np.clip(0.5 - dist, 0, 1)
        paint = colour[:, None, None, :] + shade[:, None, None, :] * np.clip(u, -1, 1)[..., None]
        paint += (colour2[:, None, None, :] - paint) * second[..., None]
        img[idx] += (paint - img[idx]) * alpha[..., None]
        thing_labels = np.array([t.label for t in style.things], dtype=np.int64)[klass]
        inside = alpha >= 0.5
        labels[idx] = np.where(inside, thing_labels[:, None, None], labels[idx])
        if style.boundary_ignore > 0:
            edge = np.abs(dist) < style.boundary_ignore
            ignore[idx] = (ignore[idx] & ~inside) | edge  # a later object covers earlier borders
    if style.boundary_ignore > 0:
        labels = np.where(ignore, style.ignore_label, labels)
    if style.pixel_noise > 0:
        img += (rng.random(img.shape, dtype=f32) - 0.5) * f32(style.pixel_noise * np.sqrt(12))
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8), labels.astype(np.uint8)


def render_scenes(
    n: int, height: int, width: int, seed: int, style: SceneStyle, progress: bool = False
) -> tuple[Array, Array]:
    """Render ``n`` scenes: ``(uint8 images [n, height, width, 3], uint8 label maps [n, height, width])``.

    Deterministic in all arguments except ``progress`` (a tqdm bar over chunks).
    """
    if n < 0 or height < 8 or width < 8:
        raise ValueError(f"need n >= 0 and images of at least 8x8 pixels, got {n} x {height}x{width}")
    rng = np.random.default_rng(seed)
    images = np.empty((n, height, width, 3), np.uint8)
    labels = np.empty((n, height, width), np.uint8)
    for start in tqdm(range(0, n, CHUNK), desc=f"render {n} scenes", unit="chunk", disable=not progress):
        stop = min(n, start + CHUNK)
        images[start:stop], labels[start:stop] = _render_chunk(stop - start, height, width, style, rng)
    return images, labels
