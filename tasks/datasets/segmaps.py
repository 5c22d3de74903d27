"""Shared pieces of the semantic-segmentation layouts: image/label pairs, label-map I/O and checks.

A segmentation split is a list of :class:`SegSample` (an image file and its label PNG).  Label PNGs hold
one class id per pixel (``uint8``, mode ``L`` or palette mode ``P``: the palette index is the id, as in
PASCAL VOC's ``SegmentationClass``); every id must lie in the dataset's valid set (its classes plus the
ignore id), and a label map has the size of its image.  These are the checks mmsegmentation does not
make itself: a wrong-sized map silently misaligns crops, an out-of-range id crashes the loss mid-run.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from core.errors import DatasetError

#: How many problems :func:`check_samples` lists before it stops looking.
MAX_PROBLEMS = 20


@dataclass(frozen=True)
class SegSample:
    """One image file and its label PNG (absolute or root-relative paths as strings)."""

    image: str
    label: str


def read_id_list(path: Path) -> list[str]:
    """Ids listed one per line (blank lines skipped, surrounding whitespace stripped)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise DatasetError(f"cannot read split file {path}: {exc.strerror or exc}") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def write_id_list(path: Path, ids: Sequence[str]) -> None:
    """Write ``ids`` one per line (the format of VOC's ``ImageSets`` files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{i}\n" for i in ids))


def read_label_map(path: str | Path) -> np.ndarray:
    """Decode a label PNG into ``uint8 [H, W]`` (palette images give their indices).

    Raises :class:`DatasetError` naming the file if it cannot be decoded or is not single-channel 8-bit.
    """
    try:
        with Image.open(path) as img:
            mode = img.mode
            array = np.asarray(img)
    except Exception as exc:  # PIL raises OSError, ValueError, SyntaxError, ...
        raise DatasetError(f"cannot decode label map {path}: {exc}") from None
    if mode not in ("L", "P") or array.ndim != 2:
        raise DatasetError(
            f"label map {path} must be a single-channel 8-bit PNG (mode L or P), got mode {mode}"
        )
    return array.astype(np.uint8, copy=False)


def image_size(path: str | Path, decode: bool = False) -> tuple[int, int]:
    """``(height, width)`` of an image from its header (``decode=True``: decode it fully)."""
    try:
        with Image.open(path) as img:
            if decode:
                img.load()
            width, height = img.size
    except Exception as exc:
        raise DatasetError(f"cannot decode image {path}: {exc}") from None
    return height, width


def save_label_png(path: Path, labels: np.ndarray, palette: Sequence[int] | None = None) -> None:
    """Write ``uint8 [H, W]`` ids as a grayscale PNG, or as a palette PNG when ``palette`` (768 ints)."""
    if labels.dtype != np.uint8 or labels.ndim != 2:
        raise ValueError(f"label maps must be uint8 [H, W], got {labels.dtype} {list(labels.shape)}")
    img = Image.fromarray(labels, mode="L")
    if palette is not None:
        img = img.convert("P")  # L -> P keeps the values as indices
        img.putpalette(list(palette))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG")


def save_image(path: Path, image: np.ndarray, quality: int = 95) -> None:
    """Write ``uint8 [H, W, 3]`` RGB as JPEG (``.jpg``/``.jpeg``, at ``quality``) or PNG (``.png``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "PNG" if path.suffix.lower() == ".png" else "JPEG"
    options = {"quality": quality} if fmt == "JPEG" else {}
    Image.fromarray(image).save(path, format=fmt, **options)


def missing_files(samples: Sequence[SegSample], limit: int = MAX_PROBLEMS) -> list[str]:
    """Paths of images/labels named by ``samples`` that are not files (at most ``limit``)."""
    missing: list[str] = []
    for sample in samples:
        for path in (sample.image, sample.label):
            if not os.path.isfile(path):
                missing.append(path)
                if len(missing) >= limit:
                    return missing
    return missing


def check_samples(
    samples: Sequence[SegSample],
    valid_ids: Collection[int],
    decode_images: bool = False,
    progress: bool = False,
    desc: str = "check labels",
) -> list[str]:
    """Decode every label map of ``samples`` and check it against its image; return the problems.

    Checks: the label decodes as a single-channel 8-bit map, has its image's height and width (read from
    the image header, or by decoding the image when ``decode_images``), and holds only ``valid_ids``.
    Stops after :data:`MAX_PROBLEMS` problems.
    """
    valid = np.zeros(256, dtype=bool)
    valid[list(valid_ids)] = True
    shown = describe_valid(valid_ids)
    problems: list[str] = []
    for sample in tqdm(samples, desc=desc, unit="map", disable=not progress):
        try:
            labels = read_label_map(sample.label)
            size = image_size(sample.image, decode=decode_images)
        except DatasetError as exc:
            problems.append(str(exc))
        else:
            if labels.shape != size:
                problems.append(
                    f"label map {sample.label} is {labels.shape[1]}x{labels.shape[0]} (WxH) but its image "
                    f"{sample.image} is {size[1]}x{size[0]}"
                )
            else:
                present = np.flatnonzero(np.bincount(labels.reshape(-1), minlength=256))
                bad = [int(v) for v in present if not valid[v]]
                if bad:
                    problems.append(
                        f"label map {sample.label} holds class ids {bad[:8]} outside the valid ids {shown}"
                    )
        if len(problems) >= MAX_PROBLEMS:
            break
    return problems


def describe_valid(valid_ids: Collection[int]) -> str:
    """``"0..20 and 255"`` style description of a set of ids (for hints)."""
    ids = sorted(valid_ids)
    head = [i for i in ids if i != 255]
    text = f"{head[0]}..{head[-1]}" if head else ""
    return f"{text} and 255" if 255 in ids and head else (text or "255")
