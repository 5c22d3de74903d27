"""Multi-object scenes: the stand-ins of the detection and segmentation datasets (VOC, COCO).

Each scene is an RGB image with several non-overlapping objects on a textured background.  An object is a
shape of :data:`tasks.datasets.synth.shapes.SHAPES` (the same signed-distance shapes the classification
stand-ins draw) at a random position, radius, rotation and mild stretch, in a random colour that contrasts
with the background under it; the object's class is its shape, never its colour.

The ground truth of an object is a **polygon**, and the pixels are rendered *from that polygon*, so image,
polygon, box and mask agree exactly:

* the polygon of a shape is traced once in unit coordinates (:func:`unit_polygon`: along 120 rays from the
  shape's centre, the outermost point where the signed distance is <= 0, then simplified with
  Ramer-Douglas-Peucker at 0.01 units); shapes that are star-shaped around their centre (disc, square,
  triangle, star, cross, hexagon, heart, ellipse, ...) are traced exactly up to that tolerance;
* an object's polygon is the unit polygon scaled, stretched, rotated and translated (pixel coordinates:
  pixel ``(row i, column j)`` covers ``[j, j + 1] x [i, i + 1]``);
* its *coverage* (fraction of each pixel inside the polygon) comes from 4 x 4 point samples per pixel
  (:func:`polygon_coverage`); the colour is blended with that coverage (anti-aliased edges), the binary
  mask is ``coverage >= 0.5`` and the box is the polygon's bounds;
* the per-pixel class map (semantic segmentation, VOC's convention) is 0 for background, ``1 + label``
  where an object covers the whole pixel and 255 ("ignore") on partly covered pixels, the object outlines.

Everything is a deterministic function of ``(style, seed, index)``: scene ``index`` draws from its own
generator, so any subset of a stand-in can be regenerated independently.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from tasks.datasets.synth.shapes import SHAPES

#: Bumped whenever the scenes produced for a given (style, seed, index) change.
SCENE_VERSION = 1
#: Point samples per pixel side used for coverage.
SUPERSAMPLE = 4
IGNORE = 255

Array = np.ndarray


@dataclass(frozen=True)
class SceneStyle:
    """What a stand-in's scenes look like (lengths in pixels).

    Attributes:
        shapes: the shape (a key of ``SHAPES``) drawn for each class; class ``k`` is ``shapes[k]``.
        widths / heights: image sizes, each drawn uniformly from these.
        objects: min and max number of objects per image (fewer if they do not fit).
        radius: range of an object's radius (half its extent before stretching).
        rotation: rotation in degrees, uniform in +-this.
        aspect_jitter: log-stretch of one axis (and the inverse of the other), uniform in +-this.
        gap: minimum distance between two objects' boxes, and between a box and the image border.
        min_contrast: minimum RGB distance (0..sqrt(3)) between an object's colour and the mean
            background colour under its box.
        gradient_prob / gradient_strength: linear-gradient backgrounds and their end-to-end difference.
        texture_amplitude: std of the low-frequency background noise.
        pixel_noise: std of the per-pixel (uniform) noise.
        distractors: max number of small clutter dots (uniform 0..distractors), radius ``dot_radius``.
    """

    shapes: tuple[str, ...]
    widths: tuple[int, ...] = (72, 80, 88, 96)
    heights: tuple[int, ...] = (64, 72, 80)
    objects: tuple[int, int] = (1, 4)
    radius: tuple[float, float] = (7.0, 14.0)
    rotation: float = 30.0
    aspect_jitter: float = 0.15
    gap: float = 2.0
    min_contrast: float = 0.35
    gradient_prob: float = 0.6
    gradient_strength: float = 0.4
    texture_amplitude: float = 0.05
    pixel_noise: float = 0.015
    distractors: int = 3
    dot_radius: tuple[float, float] = (1.0, 2.5)

    def __post_init__(self) -> None:
        unknown = [s for s in self.shapes if s not in SHAPES]
        if not self.shapes or unknown:
            raise ValueError(f"SceneStyle.shapes must name shapes of SHAPES; unknown: {unknown}")
        if not 1 <= self.objects[0] <= self.objects[1]:
            raise ValueError(f"SceneStyle.objects must satisfy 1 <= min <= max, got {self.objects}")
        if not 0 < self.radius[0] <= self.radius[1]:
            raise ValueError(f"SceneStyle.radius must satisfy 0 < lo <= hi, got {self.radius}")

    @property
    def num_classes(self) -> int:
        return len(self.shapes)


@dataclass(frozen=True, eq=False)
class SceneObject:
    """One object: ``label`` (class index into the style's shapes), ``polygon`` float64 ``[K, 2]`` of
    ``(x, y)`` pixel coordinates, ``mask`` bool ``[H, W]`` (pixels at least half covered)."""

    label: int
    polygon: Array
    mask: Array

    @property
    def box(self) -> tuple[float, float, float, float]:
        """Tight bounds ``(x0, y0, x1, y1)`` of the polygon, in pixel coordinates."""
        x0, y0 = self.polygon.min(axis=0)
        x1, y1 = self.polygon.max(axis=0)
        return float(x0), float(y0), float(x1), float(y1)


@dataclass(frozen=True, eq=False)
class Scene:
    """A rendered scene: ``image`` uint8 ``[H, W, 3]``, its ``objects`` and ``class_map`` uint8 ``[H, W]``
    (0 background, ``1 + label`` inside an object, 255 on partly covered pixels)."""

    image: Array
    objects: tuple[SceneObject, ...]
    class_map: Array


# ------------------------------------------------------------------------------------------ polygons


def _simplify(points: Array, tolerance: float) -> Array:
    """Ramer-Douglas-Peucker on a closed polygon ``[K, 2]`` (keeps the two points farthest apart)."""
    start = 0
    far = int(np.argmax(np.linalg.norm(points - points[start], axis=1)))
    halves = (points[start : far + 1], np.concatenate([points[far:], points[: start + 1]]))
    kept: list[Array] = []
    for chain in halves:
        keep = np.zeros(len(chain), dtype=bool)
        keep[0] = keep[-1] = True
        stack = [(0, len(chain) - 1)]
        while stack:
            i, j = stack.pop()
            if j <= i + 1:
                continue
            a, b = chain[i], chain[j]
            ab = b - a
            seg = chain[i + 1 : j] - a
            dist = np.abs(ab[0] * seg[:, 1] - ab[1] * seg[:, 0]) / max(float(np.hypot(*ab)), 1e-12)
            k = int(np.argmax(dist))
            if dist[k] > tolerance:
                keep[i + 1 + k] = True
                stack += [(i, i + 1 + k), (i + 1 + k, j)]
        kept.append(chain[keep][:-1])
    return np.concatenate(kept)


@functools.cache
def unit_polygon(shape: str, rays: int = 120, tolerance: float = 0.01) -> Array:
    """The outline of ``SHAPES[shape]`` in unit coordinates, float64 ``[K, 2]`` (counter-clockwise in
    ``(u, v)``), traced as described in the module docstring."""
    sdf = SHAPES[shape]
    angles = np.arange(rays) * (2 * np.pi / rays)
    radii = np.linspace(0.0, 1.8, 721)
    u = np.cos(angles)[:, None] * radii[None, :]
    v = np.sin(angles)[:, None] * radii[None, :]
    inside = sdf(u, v) <= 0
    if not inside[:, 0].all():
        raise ValueError(f"shape {shape!r} does not contain its centre")
    last = radii.size - 1 - np.argmax(inside[:, ::-1], axis=1)  # outermost inside sample per ray
    lo = radii[last]
    hi = np.minimum(lo + radii[1], radii[-1])
    for _ in range(30):  # bisection between the last inside and the next outside sample
        mid = (lo + hi) / 2
        ok = sdf(np.cos(angles) * mid, np.sin(angles) * mid) <= 0
        lo, hi = np.where(ok, mid, lo), np.where(ok, hi, mid)
    outline = np.stack([np.cos(angles) * lo, np.sin(angles) * lo], axis=1)
    return _simplify(outline, tolerance)


def place_polygon(unit: Array, cx: float, cy: float, radius: float, theta: float, stretch: float) -> Array:
    """``unit`` scaled by ``radius``, stretched (``u`` by ``stretch``, ``v`` by ``1 / stretch``), rotated by
    ``theta`` and centred at ``(cx, cy)``: the inverse of the mapping :mod:`shapes` renders with."""
    u, v = unit[:, 0] * stretch, unit[:, 1] / stretch
    c, s = np.cos(theta), np.sin(theta)
    return np.stack([cx + radius * (u * c - v * s), cy + radius * (u * s + v * c)], axis=1)


def polygon_coverage(polygon: Array, height: int, width: int, samples: int = SUPERSAMPLE) -> Array:
    """Fraction of each pixel inside ``polygon`` (even-odd rule), float32 ``[height, width]``, from
    ``samples x samples`` point samples per pixel (only the polygon's bounding box is evaluated)."""
    cover = np.zeros((height, width), np.float32)
    x0 = max(int(np.floor(polygon[:, 0].min())), 0)
    y0 = max(int(np.floor(polygon[:, 1].min())), 0)
    x1 = min(int(np.ceil(polygon[:, 0].max())), width)
    y1 = min(int(np.ceil(polygon[:, 1].max())), height)
    if x1 <= x0 or y1 <= y0:
        return cover
    offsets = (np.arange(samples) + 0.5) / samples
    xs = (np.arange(x0, x1)[:, None] + offsets[None, :]).reshape(-1)
    ys = (np.arange(y0, y1)[:, None] + offsets[None, :]).reshape(-1)
    px, py = xs[None, :], ys[:, None]
    inside = np.zeros((ys.size, xs.size), dtype=bool)
    ax, ay = polygon[:, 0], polygon[:, 1]
    bx, by = np.roll(ax, -1), np.roll(ay, -1)
    for i in range(len(polygon)):  # crossing number: edges that straddle the sample's row, left of it
        if ay[i] == by[i]:
            continue
        straddle = (ay[i] > py) != (by[i] > py)
        x_cross = ax[i] + (py - ay[i]) * (bx[i] - ax[i]) / (by[i] - ay[i])
        inside ^= straddle & (px < x_cross)
    frac = inside.reshape(y1 - y0, samples, x1 - x0, samples).mean(axis=(1, 3))
    cover[y0:y1, x0:x1] = frac
    return cover


# ------------------------------------------------------------------------------------------ rendering


def _hsv_to_rgb(h: Array, s: Array, v: Array) -> Array:
    k = (np.array([5.0, 3.0, 1.0]) + h[..., None] * 6) % 6
    return v[..., None] - v[..., None] * s[..., None] * np.clip(np.minimum(k, 4 - k), 0, 1)


def _colours(rng: np.random.Generator, n: int) -> Array:
    """``n`` random RGB colours in [0, 1]: uniform hue, saturation 0.25-1, value 0.2-1."""
    return _hsv_to_rgb(rng.random(n), rng.uniform(0.25, 1.0, n), rng.uniform(0.2, 1.0, n))


def _background(rng: np.random.Generator, height: int, width: int, style: SceneStyle) -> Array:
    """Flat or gradient colour plus smooth value noise, float32 ``[H, W, 3]``."""
    a = _colours(rng, 1)[0]
    b = a
    if rng.random() < style.gradient_prob:
        b = np.clip(a + rng.uniform(-1, 1, 3) * style.gradient_strength, 0, 1)
    phi = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    ramp = 0.5 + (np.cos(phi) * (xs - width / 2) + np.sin(phi) * (ys - height / 2)) / max(height, width)
    img = a + (b - a) * ramp[..., None]
    cells = 4
    grid = rng.standard_normal((cells + 1, cells + 1, 3))
    gy = np.clip(ys[:, 0] / height * cells, 0, cells)
    gx = np.clip(xs[0] / width * cells, 0, cells)
    wy = np.clip(1 - np.abs(gy[:, None] - np.arange(cells + 1)[None, :]), 0, 1)
    wx = np.clip(1 - np.abs(gx[:, None] - np.arange(cells + 1)[None, :]), 0, 1)
    noise = np.einsum("ya,abc,xb->yxc", wy, grid, wx) * 1.5
    return (img + style.texture_amplitude * noise).astype(np.float32)


def _blend(img: Array, colour: Array, cover: Array) -> None:
    img += (colour[None, None, :] - img) * cover[..., None]


def _place(
    rng: np.random.Generator, style: SceneStyle, height: int, width: int, boxes: list[Array]
) -> tuple[int, Array] | None:
    """A random object (label, polygon) whose box keeps ``style.gap`` from the border and other boxes."""
    label = int(rng.integers(style.num_classes))
    unit = unit_polygon(style.shapes[label])
    radius = rng.uniform(*style.radius)
    theta = np.deg2rad(rng.uniform(-style.rotation, style.rotation))
    stretch = float(np.exp(rng.uniform(-style.aspect_jitter, style.aspect_jitter)))
    shape = place_polygon(unit, 0.0, 0.0, radius, theta, stretch)
    lo, hi = shape.min(axis=0), shape.max(axis=0)
    g = style.gap
    for _ in range(30):
        cx = rng.uniform(g - lo[0], width - g - hi[0]) if width - g - hi[0] > g - lo[0] else None
        cy = rng.uniform(g - lo[1], height - g - hi[1]) if height - g - hi[1] > g - lo[1] else None
        if cx is None or cy is None:
            return None
        box = np.array([cx + lo[0], cy + lo[1], cx + hi[0], cy + hi[1]])
        if all(
            box[0] >= o[2] + g or box[2] + g <= o[0] or box[1] >= o[3] + g or box[3] + g <= o[1]
            for o in boxes
        ):
            boxes.append(box)
            return label, shape + np.array([cx, cy])
    return None


def render_scene(style: SceneStyle, seed: int, index: int) -> Scene:
    """Scene ``index`` of the stand-in seeded with ``seed`` (see the module docstring)."""
    rng = np.random.default_rng([seed, index])
    height = int(rng.choice(style.heights))
    width = int(rng.choice(style.widths))
    img = _background(rng, height, width, style)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    for _ in range(int(rng.integers(0, style.distractors + 1))):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(*style.dot_radius)
        _blend(img, _colours(rng, 1)[0], np.clip(r + 0.5 - np.hypot(xs - cx, ys - cy), 0, 1))
    wanted = int(rng.integers(style.objects[0], style.objects[1] + 1))
    boxes: list[Array] = []
    objects: list[SceneObject] = []
    class_map = np.zeros((height, width), np.uint8)
    for _ in range(wanted):
        placed = _place(rng, style, height, width, boxes)
        if placed is None:
            continue
        label, polygon = placed
        cover = polygon_coverage(polygon, height, width)
        x0, y0, x1, y1 = (int(v) for v in boxes[-1])
        under = img[max(y0, 0) : y1 + 1, max(x0, 0) : x1 + 1].reshape(-1, 3).mean(axis=0)
        colour = _colours(rng, 1)[0]
        for _ in range(20):
            if np.linalg.norm(colour - under) >= style.min_contrast:
                break
            colour = _colours(rng, 1)[0]
        else:
            colour = 1.0 - under
        _blend(img, colour, cover)
        class_map[cover >= 1.0] = label + 1
        class_map[(cover > 0) & (cover < 1.0)] = IGNORE
        objects.append(SceneObject(label, polygon, cover >= 0.5))
    if style.pixel_noise > 0:
        img += (rng.random(img.shape, dtype=np.float32) - 0.5) * np.float32(style.pixel_noise * np.sqrt(12))
    image = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
    return Scene(image, tuple(objects), class_map)


def render_scenes(style: SceneStyle, seed: int, start: int, count: int) -> Iterator[Scene]:
    """Scenes ``start .. start + count - 1``."""
    for index in range(start, start + count):
        yield render_scene(style, seed, index)
