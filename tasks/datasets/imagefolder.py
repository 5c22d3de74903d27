"""ImageFolder trees (``<split>/<class>/<image>``): scanning, the ImageNet layout, a writer, a stand-in.

Scanning follows ``torchvision.datasets.ImageFolder`` exactly: classes are the sorted names of the
sub-directories (label = index), and each class contributes the files below its directory (recursively,
following symlinks, directories and file names sorted) whose extension is one of :data:`IMG_EXTENSIONS`
(case-insensitive).  ImageNet is expected as prepared for ``ImageFolder``::

    <root>/imagenet/train/<wnid>/<wnid>_<k>.JPEG
    <root>/imagenet/val/<wnid>/*.JPEG
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from core.errors import DatasetError
from tasks.datasets.base import FolderImageDataset, OnCorrupt, Sample, scan_corrupt
from tasks.datasets.synth import shapes

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
IMAGENET_DIR = "imagenet"
IMAGENET_SPLITS = ("train", "val")
IMAGENET_PREPARE_HINT = (
    "download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from https://image-net.org/download.php; "
    "extract the train tar and each per-class tar inside it into <root>/imagenet/train/<wnid>/, extract the "
    "val tar into <root>/imagenet/val/ and move each image into its <wnid>/ folder (e.g. with the standard "
    "valprep.sh script); `bench data synth` writes a synthetic stand-in in the same layout instead"
)
#: Synthetic stand-in sizes per scale: (train images, val images), 10 classes.
IMAGENET_SYNTH_COUNTS = {"smoke": (5000, 500), "tiny": (300, 100)}
IMAGENET_SYNTH_CLASSES = 10
IMAGENET_SYNTH_SIZE = 40
#: Revision of the stand-in's layout, on top of the renderer's version (2: real wnids, see
#: :func:`synthetic_wnids`); part of the marker's ``generator_version``, so older stand-ins are regenerated.
IMAGENET_SYNTH_REVISION = 2
#: The stand-in renders the same identities as the CIFAR-10 stand-in (offset 0) in a busier style of its own.
IMAGENET_STYLE = shapes.SynthStyle(
    scale_range=(0.22, 0.45),
    position_jitter=0.18,
    rotation=30.0,
    aspect_jitter=0.2,
    gradient_prob=0.7,
    texture_amplitude=0.06,
    texture_cells=5,
    distractors=2,
    distractor_scale=(0.03, 0.08),
    class_offset=0,
)


def is_image_file(name: str) -> bool:
    """Whether ``name`` has one of :data:`IMG_EXTENSIONS` (case-insensitive)."""
    return name.lower().endswith(IMG_EXTENSIONS)


def scan_image_folder(
    directory: Path | str, hint: str = "", only: Sequence[str] | None = None
) -> tuple[list[Sample], list[str]]:
    """List ``(path, label)`` samples and sorted class names of an ImageFolder tree, as torchvision does.

    ``only``: scan just these class folders (labels = their sorted order; the caller checks they exist),
    e.g. the ImageNet-100 subset, without walking the other classes.  Raises :class:`DatasetError` (with
    ``hint`` appended) if ``directory`` is missing, has no class folders or has class folders without images.
    """
    folder = os.path.expanduser(os.fspath(directory))
    suffix = f"; {hint}" if hint else ""
    if not os.path.isdir(folder):
        raise DatasetError(f"image folder not found: no directory {folder}{suffix}")
    if only is None:
        classes = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())
    else:
        classes = sorted(only)
    if not classes:
        raise DatasetError(f"no class folders in {folder}{suffix}")
    samples: list[Sample] = []
    empty = []
    for label, name in enumerate(classes):
        before = len(samples)
        for dirpath, _, fnames in sorted(os.walk(os.path.join(folder, name), followlinks=True)):
            samples.extend((os.path.join(dirpath, f), label) for f in sorted(fnames) if is_image_file(f))
        if len(samples) == before:
            empty.append(name)
    if empty:
        shown = ", ".join(empty[:5]) + (", ..." if len(empty) > 5 else "")
        raise DatasetError(f"{folder}: {len(empty)} class folder(s) without images ({shown}){suffix}")
    return samples, classes


def load_image_folder(
    directory: Path | str,
    size: int,
    resize: int,
    on_corrupt: OnCorrupt = "raise",
    hint: str = "",
    scan_workers: int = 0,
) -> FolderImageDataset:
    """An ImageFolder tree as a :class:`FolderImageDataset` (see there for ``on_corrupt``)."""
    samples, classes = scan_image_folder(directory, hint)
    return FolderImageDataset(samples, classes, size, resize, on_corrupt, scan_workers=scan_workers)


def load_imagenet(
    root: Path | str,
    split: str,
    size: int = 224,
    resize: int = 256,
    on_corrupt: OnCorrupt = "raise",
    scan_workers: int = 0,
) -> FolderImageDataset:
    """ImageNet ``split`` (``"train"`` or ``"val"``, the test split) from ``<root>/imagenet/<split>``."""
    if split not in IMAGENET_SPLITS:
        raise DatasetError(f"ImageNet has splits 'train' and 'val', not {split!r}")
    folder = Path(root) / IMAGENET_DIR / split
    return load_image_folder(folder, size, resize, on_corrupt, IMAGENET_PREPARE_HINT, scan_workers)


def verify_imagenet(root: Path | str, check_images: bool = False) -> list[str]:
    """Check ``<root>/imagenet``: both splits scan, share their classes; optionally decode every image."""
    problems = []
    scans: dict[str, tuple[list[Sample], list[str]]] = {}
    for split in IMAGENET_SPLITS:
        try:
            scans[split] = scan_image_folder(Path(root) / IMAGENET_DIR / split, IMAGENET_PREPARE_HINT)
        except DatasetError as exc:
            problems.append(str(exc))
    if len(scans) == 2 and scans["train"][1] != scans["val"][1]:
        only = sorted(set(scans["train"][1]) ^ set(scans["val"][1]))
        problems.append(f"ImageNet train and val class folders differ ({len(only)} not in both: {only[:5]})")
    if check_images:
        for split, (samples, _) in scans.items():
            bad = scan_corrupt([path for path, _ in samples])
            if bad:
                problems.append(
                    f"ImageNet {split}: {len(bad)} unreadable image(s), e.g. {', '.join(bad[:3])}"
                )
    return problems


#: Two real ImageNet-1k wnids outside ImageNet-100 (tench, goldfish): the stand-in's classes that
#: ``imagenet100`` must leave out.
IMAGENET_SYNTH_UNLISTED = ("n01440764", "n01443537")


def synthetic_wnids(num_classes: int = IMAGENET_SYNTH_CLASSES) -> list[str]:
    """Folder names of the ImageNet stand-in's classes, sorted (label k = k-th name).

    Real wnids, so that the ImageNet-100 subset rule is exercised on synthetic data: the first
    ``num_classes - 2`` wnids of the ImageNet-100 list (:mod:`tasks.datasets.imagenet100`) plus
    :data:`IMAGENET_SYNTH_UNLISTED`, which ``imagenet100`` must leave out.  The marker file (not the names)
    says the tree is synthetic.
    """
    from tasks.datasets.imagenet100 import imagenet100_wnids

    listed = imagenet100_wnids()[: num_classes - len(IMAGENET_SYNTH_UNLISTED)]
    return sorted([*listed, *IMAGENET_SYNTH_UNLISTED])


def write_image_folder(
    split_dir: Path | str,
    images: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    class_names: Sequence[str],
    ext: str = ".JPEG",
    quality: int = 95,
    progress: bool = False,
) -> Path:
    """Write ``uint8 [N, H, W, 3]`` images as ``<split_dir>/<class>/<class>_<k><ext>``; returns the folder.

    ``k`` counts each class' images in input order (zero-padded, so sorted order = input order).  Every class
    gets a folder.  The format follows ``ext`` (JPEG at ``quality``, PNG, ...).
    """
    out = Path(split_dir)
    labels = np.asarray(labels, dtype=np.int64)
    if (
        images.dtype != np.uint8
        or images.ndim != 4
        or images.shape[-1] != 3
        or labels.shape != (len(images),)
    ):
        raise ValueError(
            f"need uint8 images [N, H, W, 3] and N labels, got {list(images.shape)}, {labels.shape}"
        )
    fmt = Image.registered_extensions().get(ext.lower())
    if fmt is None:
        raise ValueError(f"unknown image extension {ext!r}")
    options = {"quality": quality} if fmt == "JPEG" else {}
    for name in class_names:
        (out / name).mkdir(parents=True, exist_ok=True)
    counters = [0] * len(class_names)
    for image, label in tqdm(
        zip(images, labels, strict=True), total=len(images), desc=f"write {out.name}", disable=not progress
    ):
        name = class_names[label]
        Image.fromarray(image).save(out / name / f"{name}_{counters[label]:06d}{ext}", format=fmt, **options)
        counters[label] += 1
    return out


def imagenet_render_args(seed: int, scale: str, split: str) -> tuple[int, int, int, int, shapes.SynthStyle]:
    """``(count, classes, size, render seed, style)``: the :func:`shapes.render` call behind the stand-in's
    ``split`` (what :func:`write_synthetic_imagenet` renders; the generative oracle replays it)."""
    if scale not in IMAGENET_SYNTH_COUNTS:
        raise DatasetError(f"unknown synthetic scale {scale!r}; choose from {sorted(IMAGENET_SYNTH_COUNTS)}")
    count = IMAGENET_SYNTH_COUNTS[scale][IMAGENET_SPLITS.index(split)]
    render_seed = shapes.derive_seed(seed, f"imagenet/{split}")
    return count, IMAGENET_SYNTH_CLASSES, IMAGENET_SYNTH_SIZE, render_seed, IMAGENET_STYLE


def loader_order(labels: np.ndarray) -> np.ndarray:
    """Render index of each sample in ImageFolder order for images written by :func:`write_image_folder`
    with class names that sort like their labels: class by class, each in render order."""
    return np.argsort(np.asarray(labels), kind="stable")


def write_synthetic_imagenet(root: Path | str, seed: int, scale: str) -> None:
    """Render the ImageNet stand-in (:data:`IMAGENET_STYLE`, 40 px JPEGs at quality 95, class folders
    :func:`synthetic_wnids`) into ``<root>/imagenet/{train,val}``; ``scale``: a key of
    :data:`IMAGENET_SYNTH_COUNTS`."""
    wnids = synthetic_wnids()
    for split in IMAGENET_SPLITS:
        count, classes, size, render_seed, style = imagenet_render_args(seed, scale, split)
        progress = count >= 2000
        images, labels = shapes.render(count, classes, size, render_seed, style, progress=progress)
        write_image_folder(Path(root) / IMAGENET_DIR / split, images, labels, wnids, progress=progress)
