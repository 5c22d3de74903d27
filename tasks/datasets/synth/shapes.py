"""Procedural "shapes" images: learnable stand-ins whose classes need colour/position/scale invariance.

A class is a *shape identity*: one of :data:`SHAPE_NAMES` (20 signed-distance shapes) combined with one of
:data:`FILL_NAMES` (solid, outline, stripes, checker, dots), 100 identities in all; identity ``i`` is shape
``i % 20`` with fill ``i // 20``, so identities 0-19 are the solid shapes.  Label ``k`` of a dataset renders
identity ``(style.class_offset + k) % 100``.

Every image draws, independently of its class: a background (flat colour or linear gradient, plus
low-frequency value-noise texture), up to ``style.distractors`` small clutter marks (dots and strokes), then
the shape at a random position, scale, rotation and mild anisotropic stretch in a random foreground colour
(patterned fills use a second random colour), with anti-aliased edges (coverage from the signed distance in
pixels), and finally a little pixel noise.  Colours are sampled the same way for every class, so colour
statistics carry no class information; the class is only in the geometry.

Rendering is vectorised over a batch of images (numpy, float32, no per-pixel Python loops); the only Python
loops run over identities, distractor slots and chunks of :data:`CHUNK` images.  Output is a deterministic
function of ``(n, num_classes, size, seed, style)`` on a given machine and library build (SIMD maths may
differ in the last bit across CPUs, so regenerate rather than compare images across machines).

Run ``python -m tasks.datasets.synth.shapes --out grid.png`` to look at samples (one row per class).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

#: Bumped whenever the pixels produced for a given (seed, style) change; recorded in synthetic markers.
GENERATOR_VERSION = 2
#: Images rendered per vectorised batch (bounds the float32 working set).
CHUNK = 512

Array = np.ndarray
SDF = Callable[[Array, Array], Array]


@dataclass(frozen=True)
class SynthStyle:
    """Difficulty knobs of the renderer (all fractions are of the image side unless noted).

    Attributes:
        scale_range: range of the shape's radius (about half its extent).
        position_jitter: shape centre offset from the image centre, uniform in +-this.
        rotation: rotation in degrees, uniform in +-this (180 = any orientation).
        aspect_jitter: log-stretch of one axis (and the inverse of the other), uniform in +-this.
        saturation_range / value_range: HSV ranges of every colour (hue is uniform).
        min_contrast: minimum RGB distance (0..sqrt(3)) between foreground and mean background colour.
        gradient_prob: probability that the background is a linear gradient instead of flat.
        gradient_strength: max per-channel difference between the gradient's two ends.
        texture_amplitude: std of the low-frequency background noise (0 disables).
        texture_cells: cells per side of that noise's control grid.
        pixel_noise: std of (uniform) per-pixel noise over the whole image.
        distractors: max number of clutter marks (uniform 0..distractors per image).
        distractor_scale: radius range of a clutter mark.
        edge_softness: width in pixels of the anti-aliasing ramp.
        class_offset: identity of label 0 (lets datasets use different identities).
    """

    scale_range: tuple[float, float] = (0.2, 0.42)
    position_jitter: float = 0.18
    rotation: float = 180.0
    aspect_jitter: float = 0.15
    saturation_range: tuple[float, float] = (0.25, 1.0)
    value_range: tuple[float, float] = (0.2, 1.0)
    min_contrast: float = 0.35
    gradient_prob: float = 0.5
    gradient_strength: float = 0.4
    texture_amplitude: float = 0.04
    texture_cells: int = 4
    pixel_noise: float = 0.015
    distractors: int = 2
    distractor_scale: tuple[float, float] = (0.04, 0.09)
    edge_softness: float = 1.0
    class_offset: int = 0

    def __post_init__(self) -> None:
        for name in ("scale_range", "saturation_range", "value_range", "distractor_scale"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"SynthStyle.{name} must satisfy 0 <= lo <= hi, got {(lo, hi)}")
        if self.texture_cells < 1 or self.distractors < 0 or self.edge_softness <= 0:
            raise ValueError("SynthStyle needs texture_cells >= 1, distractors >= 0, edge_softness > 0")


# --------------------------------------------------------------------------- signed distance functions
# Shapes live in unit coordinates (radius ~1); negative inside.  Exact where cheap, otherwise a bound
# that is exact near the edges, which is all anti-aliasing needs.


def _len(x: Array, y: Array) -> Array:
    return np.sqrt(x * x + y * y)


def _disc(x: Array, y: Array, r: float) -> Array:
    return _len(x, y) - r


def _box(x: Array, y: Array, hx: float, hy: float) -> Array:
    qx, qy = np.abs(x) - hx, np.abs(y) - hy
    return _len(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0)


def _segment(x: Array, y: Array, a: tuple[float, float], b: tuple[float, float]) -> Array:
    """Unsigned distance to the segment ``a-b``."""
    ex, ey = b[0] - a[0], b[1] - a[1]
    wx, wy = x - a[0], y - a[1]
    h = np.clip((wx * ex + wy * ey) / (ex * ex + ey * ey), 0, 1)
    return _len(wx - ex * h, wy - ey * h)


def _star(x: Array, y: Array, points: int, outer: float, inner: float) -> Array:
    """Star with ``points`` tips (a regular polygon when ``inner = outer * cos(pi / points)``)."""
    half = np.pi / points
    angle = np.abs(np.mod(np.arctan2(y, x) + half, 2 * half) - half)
    r = _len(x, y)
    qx, qy = r * np.cos(angle), r * np.sin(angle)
    tip, vert = (outer, 0.0), (inner * np.cos(half), inner * np.sin(half))
    dist = _segment(qx, qy, tip, vert)
    inside = (vert[0] - tip[0]) * qy - (vert[1] - tip[1]) * (qx - tip[0]) > 0
    return np.where(inside, -dist, dist)


def _heart(x: Array, y: Array) -> Array:
    x, y = np.abs(x) / 1.45, (0.95 - y) / 1.45  # tip at y=0.95, lobes towards -y; centred, ~unit radius
    upper = _len(x - 0.25, y - 0.75) - np.sqrt(2) / 4
    m = 0.5 * np.maximum(x + y, 0)
    lower = np.sqrt(np.minimum(x * x + (y - 1) ** 2, (x - m) ** 2 + (y - m) ** 2)) * np.sign(x - y)
    return np.where(x + y > 1, upper, lower) * 1.45


def _arrow(x: Array, y: Array) -> Array:
    head = np.maximum(0.15 - x, 0.6 * (x - 1.0) + 0.8 * np.abs(y))
    return np.minimum(_box(x + 0.35, y, 0.55, 0.17), head)


def _ellipse(x: Array, y: Array, a: float, b: float) -> Array:
    k0 = _len(x / a, y / b)
    k1 = _len(x / (a * a), y / (b * b)) + 1e-6
    return k0 * (k0 - 1) / k1


def _pacman(x: Array, y: Array) -> Array:
    x = x - 0.14  # centre the remaining area
    mouth = -np.sin(0.6) * x + np.cos(0.6) * np.abs(y)
    return np.maximum(_disc(x, y, 0.95), -mouth)


def _three_dots(x: Array, y: Array) -> Array:
    angles = (np.pi / 2, np.pi * 7 / 6, np.pi * 11 / 6)
    return np.minimum.reduce([_disc(x - 0.62 * np.cos(a), y - 0.62 * np.sin(a), 0.34) for a in angles])


SHAPES: dict[str, SDF] = {
    "disc": lambda x, y: _disc(x, y, 0.9),
    "square": lambda x, y: _box(x, y, 0.78, 0.78),
    "triangle": lambda x, y: _star(x, y, 3, 1.2, 0.6),
    "star": lambda x, y: _star(x, y, 5, 1.1, 0.45),
    "cross": lambda x, y: np.minimum(_box(x, y, 1.0, 0.3), _box(x, y, 0.3, 1.0)),
    "ring": lambda x, y: np.abs(_len(x, y) - 0.72) - 0.26,
    "hexagon": lambda x, y: _star(x, y, 6, 0.95, 0.95 * np.cos(np.pi / 6)),
    "crescent": lambda x, y: np.maximum(_disc(x - 0.39, y, 0.95), -_disc(x - 0.89, y, 0.8)),
    "heart": _heart,
    "arrow": _arrow,
    "semicircle": lambda x, y: np.maximum(_disc(x, y + 0.42, 1.0), -(y + 0.42)),
    "l-shape": lambda x, y: np.minimum(
        _box(x + 0.21, y + 0.23, 0.22, 0.85), _box(x - 0.19, y - 0.4, 0.72, 0.22)
    ),
    "t-shape": lambda x, y: np.minimum(_box(x, y + 0.36, 0.85, 0.22), _box(x, y - 0.47, 0.22, 0.65)),
    "frame": lambda x, y: np.maximum(_box(x, y, 0.85, 0.85), -_box(x, y, 0.5, 0.5)),
    "ellipse": lambda x, y: _ellipse(x, y, 1.05, 0.5),
    "dumbbell": lambda x, y: np.minimum.reduce(
        [_disc(x - 0.62, y, 0.36), _disc(x + 0.62, y, 0.36), _box(x, y, 0.62, 0.12)]
    ),
    "three-dots": _three_dots,
    "pacman": _pacman,
    "bowtie": lambda x, y: np.maximum(np.abs(x) - 1.0, 0.8 * np.abs(y) - 0.6 * np.abs(x) - 0.08),
    "chevron": lambda x, y: _segment(x, np.abs(y), (0.5, 0.0), (-0.45, 0.8)) - 0.22,
}
SHAPE_NAMES = tuple(SHAPES)
FILL_NAMES = ("solid", "outline", "stripes", "checker", "dots")
NUM_IDENTITIES = len(SHAPE_NAMES) * len(FILL_NAMES)


def identity_names(num_classes: int, offset: int = 0) -> list[str]:
    """Names of the identities rendered for labels ``0..num_classes-1`` (e.g. ``"star"``, ``"dots-ring"``)."""
    names = []
    for k in range(num_classes):
        ident = (offset + k) % NUM_IDENTITIES
        shape, fill = SHAPE_NAMES[ident % len(SHAPE_NAMES)], FILL_NAMES[ident // len(SHAPE_NAMES)]
        names.append(shape if fill == "solid" else f"{fill}-{shape}")
    return names


def derive_seed(seed: int, key: str) -> int:
    """A stable 63-bit seed for ``key`` (e.g. ``"cifar10/train"``) derived from ``seed``."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{key}".encode()).digest()[:8], "little") >> 1


# --------------------------------------------------------------------------------------------- rendering


def _hsv_colours(rng: np.random.Generator, n: int, style: SynthStyle) -> Array:
    """``n`` RGB colours in [0, 1], hue uniform, saturation/value uniform in the style's ranges."""
    h = rng.random(n, dtype=np.float32) * 6
    s = rng.uniform(*style.saturation_range, n).astype(np.float32)
    v = rng.uniform(*style.value_range, n).astype(np.float32)
    k = np.mod(np.array([5, 3, 1], np.float32)[None, :] + h[:, None], 6)
    return v[:, None] - v[:, None] * s[:, None] * np.clip(np.minimum(k, 4 - k), 0, 1)


def _contrasting(rng: np.random.Generator, ref: Array, style: SynthStyle) -> Array:
    """Colours like :func:`_hsv_colours`, resampled until at least ``min_contrast`` away from ``ref``."""
    out = _hsv_colours(rng, len(ref), style)
    for _ in range(20):
        bad = np.flatnonzero(np.linalg.norm(out - ref, axis=1) < style.min_contrast)
        if not bad.size:
            break
        out[bad] = _hsv_colours(rng, bad.size, style)
    bad = np.linalg.norm(out - ref, axis=1) < style.min_contrast
    out[bad] = 1 - ref[bad]  # rare fallback: the complementary colour
    return out


def _coverage(dist_px: Array, softness: float) -> Array:
    return np.clip(0.5 - dist_px / softness, 0, 1)


def _fill_pattern(fill: str, u: Array, v: Array, px_per_unit: Array) -> Array:
    """Per-pixel weight of the second colour inside the shape for patterned fills."""
    if fill == "stripes":
        return np.clip(0.5 + 2.0 * np.sin(u * (2 * np.pi / 0.55)), 0, 1)
    if fill == "checker":
        return np.clip(0.5 + 3.0 * np.sin(u * (2 * np.pi / 0.8)) * np.sin(v * (2 * np.pi / 0.8)), 0, 1)
    # dots: a square lattice of discs, spacing 0.5 units, radius 0.14
    du, dv = u - 0.5 * np.round(u / 0.5), v - 0.5 * np.round(v / 0.5)
    return _coverage((_len(du, dv) - 0.14) * px_per_unit, 1.0)


def _value_noise(grid: Array, size: int) -> Array:
    """Smooth noise ``[n, size, size, 3]`` (std ~1): bilinear interpolation of the control ``grid``
    ``[n, 3, cells + 1, cells + 1]`` (standard normal draws)."""
    cells = grid.shape[-1] - 1
    pos = (np.arange(size, dtype=np.float32) + 0.5) / size * cells
    weights = np.clip(1 - np.abs(pos[:, None] - np.arange(cells + 1, dtype=np.float32)[None, :]), 0, 1)
    return np.einsum("sa,ncab,tb->nstc", weights, grid, weights, optimize=True) * 1.5


@dataclass(frozen=True)
class SceneParams:
    """Every random draw behind a chunk of rendered images (index 0 = image), in draw order.

    :func:`sample_params` draws them from the generator exactly as rendering does and :func:`draw` turns
    them into pixels, so ``draw(sample_params(labels, ...))`` is the rendering of ``labels`` and a consumer
    (the generative-augmentation oracle) can recover, edit and redraw an image's attributes.  Shapes
    (``n`` images, ``S`` = size, ``D`` = style.distractors, ``c`` = style.texture_cells):

    * background: ``bg_a``, ``bg_b`` [n, 3] (end colours of the gradient; equal when flat), ``phi`` [n]
      (gradient direction), ``texture`` [n, 3, c+1, c+1] or None (value-noise control grid);
    * clutter: ``clutter_count`` [n] and, per slot ``j < D``, arrays over the images with more than ``j``
      marks: ``clutter[j] = (cx, cy, radius_frac, angle, is_dot, colour)``;
    * the object: ``labels`` [n], ``fg``, ``fg2`` [n, 3] (colours), ``cx``, ``cy`` [n] (centre, px),
      ``radius_frac`` [n] (radius / S), ``theta`` [n] (radians), ``stretch`` [n] (aspect factor);
    * ``noise`` [n, S, S, 3] float32 uniform in [0, 1) or None (per-pixel noise).
    """

    labels: Array
    bg_a: Array
    bg_b: Array
    phi: Array
    texture: Array | None
    clutter_count: Array
    clutter: tuple[tuple[Array, Array, Array, Array, Array, Array], ...]
    fg: Array
    fg2: Array
    cx: Array
    cy: Array
    radius_frac: Array
    theta: Array
    stretch: Array
    noise: Array | None

    def __len__(self) -> int:
        return len(self.labels)


def sample_params(labels: Array, size: int, style: SynthStyle, rng: np.random.Generator) -> SceneParams:
    """Draw the parameters of ``len(labels)`` images from ``rng`` (see :class:`SceneParams`)."""
    n = len(labels)
    f32 = np.float32
    bg_a = _hsv_colours(rng, n, style)
    bg_b = np.clip(bg_a + rng.uniform(-1, 1, (n, 3)).astype(f32) * style.gradient_strength, 0, 1)
    bg_b = np.where((rng.random(n) < style.gradient_prob)[:, None], bg_b, bg_a)
    phi = rng.uniform(0, 2 * np.pi, n).astype(f32)
    texture = None
    if style.texture_amplitude > 0:
        cells = style.texture_cells
        texture = rng.standard_normal((n, 3, cells + 1, cells + 1), dtype=np.float32)
    count = rng.integers(0, style.distractors + 1, n)
    clutter = []
    for slot in range(style.distractors):
        m = int((count > slot).sum())
        cx, cy = rng.random((2, m), dtype=f32)
        rad = rng.uniform(*style.distractor_scale, m).astype(f32)
        ang = rng.uniform(0, np.pi, m).astype(f32)
        is_dot = rng.random(m) < 0.5
        clutter.append((cx, cy, rad, ang, is_dot, _hsv_colours(rng, m, style)))
    fg = _contrasting(rng, (bg_a + bg_b) / 2, style)
    fg2 = _contrasting(rng, fg, style)
    cx, cy = (size / 2 + rng.uniform(-1, 1, (2, n)) * style.position_jitter * size).astype(f32)
    radius_frac = rng.uniform(*style.scale_range, n)
    theta = np.deg2rad(rng.uniform(-style.rotation, style.rotation, n)).astype(f32)
    stretch = np.exp(rng.uniform(-style.aspect_jitter, style.aspect_jitter, n)).astype(f32)
    noise = rng.random((n, size, size, 3), dtype=f32) if style.pixel_noise > 0 else None
    return SceneParams(
        np.asarray(labels), bg_a, bg_b, phi, texture, count, tuple(clutter),
        fg, fg2, cx, cy, radius_frac, theta, stretch, noise,
    )  # fmt: skip


def draw(params: SceneParams, size: int, style: SynthStyle) -> Array:
    """The uint8 images ``[n, size, size, 3]`` of ``params`` (deterministic; no random draws)."""
    n = len(params)
    f32 = np.float32
    pix = np.arange(size, dtype=f32) + 0.5
    # Background: flat or gradient, plus smooth texture.
    bg_a, bg_b, phi = params.bg_a, params.bg_b, params.phi
    ramp = (
        0.5
        + (
            np.cos(phi)[:, None, None] * (pix[None, None, :] - size / 2)
            + np.sin(phi)[:, None, None] * (pix[None, :, None] - size / 2)
        )
        / size
    )
    img = bg_a[:, None, None, :] + (bg_b - bg_a)[:, None, None, :] * ramp[..., None]
    if params.texture is not None:
        img += style.texture_amplitude * _value_noise(params.texture, size)
    # Clutter marks under the shape: small dots or short strokes.
    for slot, (fx, fy, frad, ang, is_dot, colour) in enumerate(params.clutter):
        idx = np.flatnonzero(params.clutter_count > slot)
        cx, cy = (fx * size)[:, None, None], (fy * size)[:, None, None]
        rad = (frad * size)[:, None, None]
        ang = ang[:, None, None]
        dx, dy = pix[None, None, :] - cx, pix[None, :, None] - cy
        dot = _len(dx, dy) - rad
        along, across = dx * np.cos(ang) + dy * np.sin(ang), dy * np.cos(ang) - dx * np.sin(ang)
        stroke = _segment(along / rad, across / rad, (-1.2, 0.0), (1.2, 0.0)) * rad - 0.3 * rad
        dist = np.where(is_dot[:, None, None], dot, stroke)
        alpha = _coverage(dist, style.edge_softness)[..., None]
        img[idx] += (colour[:, None, None, :] - img[idx]) * alpha
    # The shape.
    fg, fg2, cx, cy = params.fg, params.fg2, params.cx, params.cy
    radius = (params.radius_frac * size).astype(f32)
    theta, stretch = params.theta, params.stretch
    dx = pix[None, None, :] - cx[:, None, None]
    dy = pix[None, :, None] - cy[:, None, None]
    cos, sin = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    u = (cos * dx + sin * dy) / (radius * stretch)[:, None, None]
    v = (cos * dy - sin * dx) * (stretch / radius)[:, None, None]
    px_per_unit = (radius / np.maximum(stretch, 1 / stretch))[:, None, None]
    identities = (params.labels + style.class_offset) % NUM_IDENTITIES
    alpha = np.empty((n, size, size), f32)
    pattern: Array | None = None  # weight of the second colour, only if some image has a patterned fill
    for ident in np.unique(identities):
        idx = np.flatnonzero(identities == ident)
        shape, fill = SHAPE_NAMES[ident % len(SHAPE_NAMES)], FILL_NAMES[ident // len(SHAPE_NAMES)]
        su, sv, scale = u[idx], v[idx], px_per_unit[idx]
        dist = SHAPES[shape](su, sv)
        if fill == "outline":
            dist = np.abs(dist + 0.15) - 0.15
        alpha[idx] = _coverage(dist * scale, style.edge_softness)
        if fill not in ("solid", "outline"):
            pattern = np.zeros((n, size, size), f32) if pattern is None else pattern
            pattern[idx] = _fill_pattern(fill, su, sv, scale)
    colour = fg[:, None, None, :]
    if pattern is not None:
        colour = colour + (fg2 - fg)[:, None, None, :] * pattern[..., None]
    img += (colour - img) * alpha[..., None]
    if params.noise is not None:  # uniform noise with std pixel_noise
        img += (params.noise - 0.5) * f32(style.pixel_noise * np.sqrt(12))
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def _render_chunk(labels: Array, size: int, style: SynthStyle, rng: np.random.Generator) -> Array:
    return draw(sample_params(labels, size, style, rng), size, style)


def concat_params(parts: list[SceneParams]) -> SceneParams:
    """One :class:`SceneParams` holding the images of ``parts`` in order (all drawn with one style)."""
    values: dict[str, object] = {}
    for field in dataclasses.fields(SceneParams):
        items = [getattr(p, field.name) for p in parts]
        if field.name == "clutter":  # per slot, entries of the images with more marks, in image order
            values[field.name] = tuple(
                tuple(np.concatenate([c[slot][i] for c in items]) for i in range(6))
                for slot in range(len(items[0]))
            )
        else:
            values[field.name] = None if items[0] is None else np.concatenate(items)
    return SceneParams(**values)  # type: ignore[arg-type]


def select_params(params: SceneParams, index: int) -> SceneParams:
    """The parameters of image ``index`` of ``params`` alone (a one-image :class:`SceneParams`)."""
    values: dict[str, object] = {}
    for field in dataclasses.fields(SceneParams):
        value = getattr(params, field.name)
        if field.name == "clutter":
            slots = []
            for slot, arrays in enumerate(value):
                # entry j of a slot belongs to the j-th image (in order) with more than `slot` marks
                position = int((params.clutter_count[:index] > slot).sum())
                take = slice(position, position + int(params.clutter_count[index] > slot))
                slots.append(tuple(a[take] for a in arrays))
            values[field.name] = tuple(slots)
        else:
            values[field.name] = None if value is None else value[index : index + 1]
    return SceneParams(**values)  # type: ignore[arg-type]


def contrasting_background(
    params: SceneParams, style: SynthStyle, rng: np.random.Generator, tries: int = 20
) -> SceneParams:
    """``params`` with each image's background colours redrawn (flat) from ``rng`` where the foreground
    colour is closer than ``style.min_contrast`` to the background's mean (after ``fg`` was edited)."""
    bg_a, bg_b = params.bg_a.copy(), params.bg_b.copy()
    for _ in range(tries):
        bad = np.flatnonzero(np.linalg.norm(params.fg - (bg_a + bg_b) / 2, axis=1) < style.min_contrast)
        if not bad.size:
            break
        bg_a[bad] = bg_b[bad] = _hsv_colours(rng, bad.size, style)
    bad = np.linalg.norm(params.fg - (bg_a + bg_b) / 2, axis=1) < style.min_contrast
    bg_a[bad] = bg_b[bad] = 1 - params.fg[bad]
    return dataclasses.replace(params, bg_a=bg_a, bg_b=bg_b)


def render_params(
    n: int, num_classes: int, size: int, seed: int, style: SynthStyle | None = None
) -> tuple[Array, list[SceneParams]]:
    """``(labels [n], params per chunk of CHUNK images)`` behind :func:`render` with the same arguments,
    drawn exactly as :func:`render` draws them (``draw`` of each chunk gives its images) without pixels."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n, dtype=np.int64) % num_classes)
    style = style or SynthStyle()
    return labels, [sample_params(labels[s : s + CHUNK], size, style, rng) for s in range(0, n, CHUNK)]


def render(
    n: int, num_classes: int, size: int, seed: int, style: SynthStyle | None = None, progress: bool = False
) -> tuple[Array, Array]:
    """Render ``n`` images: ``(uint8 [n, size, size, 3], int64 labels [n])``.

    Labels are balanced (counts differ by at most one) and shuffled.  Deterministic in all arguments
    except ``progress`` (a tqdm bar over chunks).
    """
    if not 1 <= num_classes <= NUM_IDENTITIES:
        raise ValueError(f"num_classes must be in [1, {NUM_IDENTITIES}], got {num_classes}")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n, dtype=np.int64) % num_classes)
    return _render_all(labels, size, style or SynthStyle(), rng, progress), labels


def render_labels(
    labels: Array, size: int, seed: int, style: SynthStyle | None = None, progress: bool = False
) -> Array:
    """Render one image per entry of ``labels`` (any class counts, e.g. long-tailed): ``uint8 [n, size,
    size, 3]``.  Labels must lie in ``[0, NUM_IDENTITIES)``; deterministic like :func:`render`."""
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_IDENTITIES):
        raise ValueError(f"labels must lie in [0, {NUM_IDENTITIES})")
    return _render_all(labels, size, style or SynthStyle(), np.random.default_rng(seed), progress)


def _render_all(
    labels: Array, size: int, style: SynthStyle, rng: np.random.Generator, progress: bool
) -> Array:
    n = len(labels)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    starts = range(0, n, CHUNK)
    for start in tqdm(starts, desc=f"render {n} images", unit="chunk", disable=not progress):
        images[start : start + CHUNK] = _render_chunk(labels[start : start + CHUNK], size, style, rng)
    return images


def save_grid(
    path: Path | str,
    num_classes: int = 10,
    per_class: int = 8,
    size: int = 32,
    seed: int = 0,
    style: SynthStyle | None = None,
    zoom: int = 3,
) -> Path:
    """Write a PNG with one row of ``per_class`` samples per class (nearest-neighbour ``zoom``)."""
    from PIL import Image

    images, labels = render(num_classes * per_class * 3, num_classes, size, seed, style)
    gap = 2
    cell = size + gap
    canvas = np.full((num_classes * cell + gap, per_class * cell + gap, 3), 255, np.uint8)
    for k in range(num_classes):
        for j, i in enumerate(np.flatnonzero(labels == k)[:per_class]):
            canvas[gap + k * cell : gap + k * cell + size, gap + j * cell : gap + j * cell + size] = images[i]
    canvas = canvas.repeat(zoom, axis=0).repeat(zoom, axis=1)
    Image.fromarray(canvas).save(path)
    return Path(path)


def main(argv: list[str] | None = None) -> None:
    """``python -m tasks.datasets.synth.shapes --out grid.png [--classes 10 --size 32 --offset 0 ...]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--per-class", type=int, default=8)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--offset", type=int, default=0, help="class_offset (first identity)")
    parser.add_argument("--zoom", type=int, default=3)
    args = parser.parse_args(argv)
    style = dataclasses.replace(SynthStyle(), class_offset=args.offset)
    save_grid(args.out, args.classes, args.per_class, args.size, args.seed, style, args.zoom)
    print(f"wrote {args.out}: rows = {', '.join(identity_names(args.classes, args.offset))}")


if __name__ == "__main__":
    main()
