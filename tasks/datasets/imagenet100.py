"""ImageNet-100: the 100-class ImageNet subset of CMC (arXiv 1906.05849), read from the ImageNet tree.

The class list ships as package data (``imagenet100.txt``, its source noted in the file): 100 ImageNet-1k
wnids.  There is no copy of the data: ``imagenet100`` reads ``<root>/imagenet/{train,val}/<wnid>/`` for the
listed wnids only (all their images, as CMC and solo-learn do); labels are the wnids' sorted order
(``0..99``), as ``ImageFolder`` would give on a tree holding just those folders.

Rule for missing classes:

* real data (the ImageNet tree has no synthetic marker): every listed wnid must be present in both splits;
  otherwise loading and verification fail naming the missing wnids;
* the synthetic stand-in (``bench data synth``; the tree carries the writer's marker) has only
  ``IMAGENET_SYNTH_CLASSES`` classes: its folders are real wnids, the first ones of the list plus two
  unlisted ones (:func:`tasks.datasets.imagefolder.synthetic_wnids`), and ``imagenet100`` selects the listed
  wnids that are present (8 classes), leaving the unlisted ones out.
"""

from __future__ import annotations

import functools
import os
from importlib import resources
from pathlib import Path

from core.errors import DatasetError
from tasks.datasets.base import FolderImageDataset, OnCorrupt, scan_corrupt
from tasks.datasets.imagefolder import IMAGENET_DIR, IMAGENET_SPLITS, scan_image_folder

IMAGENET100_FILE = "imagenet100.txt"
IMAGENET100_NUM_CLASSES = 100
IMAGENET100_PREPARE_HINT = (
    "ImageNet-100 is read from the ImageNet tree (<root>/imagenet/{train,val}/<wnid>/): prepare ImageNet "
    "(see `bench data verify imagenet`), or at least the 100 wnids listed in tasks/datasets/imagenet100.txt"
)


@functools.cache
def imagenet100_wnids() -> tuple[str, ...]:
    """The 100 wnids of ImageNet-100 in the list's order (comments and blank lines skipped)."""
    text = resources.files("tasks.datasets").joinpath(IMAGENET100_FILE).read_text()
    wnids = tuple(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))
    if len(wnids) != IMAGENET100_NUM_CLASSES or len(set(wnids)) != len(wnids):
        raise DatasetError(f"{IMAGENET100_FILE}: expected 100 unique wnids, found {len(set(wnids))}")
    return wnids


def _synthetic_tree(root: Path) -> bool:
    from tasks.datasets.synth.writer import is_synthetic  # the writer imports the registry, which imports us

    return is_synthetic(root, "imagenet")


def _missing_message(split_dir: Path, missing: list[str]) -> str:
    shown = ", ".join(missing[:5]) + (f" (and {len(missing) - 5} more)" if len(missing) > 5 else "")
    return f"ImageNet-100: {len(missing)} listed wnid(s) missing from {split_dir}: {shown}"


def select_wnids(root: Path | str, split: str) -> list[str]:
    """The ImageNet-100 class folders of ``split`` under ``root`` (see the module docstring for the rule);
    raises :class:`DatasetError` naming the missing wnids."""
    if split not in IMAGENET_SPLITS:
        raise DatasetError(f"ImageNet-100 has splits 'train' and 'val', not {split!r}")
    split_dir = Path(root) / IMAGENET_DIR / split
    if not split_dir.is_dir():
        raise DatasetError(f"ImageNet-100: no directory {split_dir}; {IMAGENET100_PREPARE_HINT}")
    wanted = imagenet100_wnids()
    present = [w for w in wanted if os.path.isdir(split_dir / w)]
    missing = [w for w in wanted if w not in present]
    if _synthetic_tree(Path(root)):
        if not present:
            raise DatasetError(
                f"ImageNet-100: the synthetic ImageNet stand-in in {split_dir} has none of the listed wnids "
                "(an old stand-in: regenerate it with `bench data synth`)"
            )
        return sorted(present)
    if missing:
        raise DatasetError(f"{_missing_message(split_dir, missing)}; {IMAGENET100_PREPARE_HINT}")
    return sorted(present)


def load_imagenet100(
    root: Path, split: str, size: int, resize: int, on_corrupt: OnCorrupt = "raise"
) -> FolderImageDataset:
    """ImageNet-100 ``split`` (``"train"``, or ``"val"``: the test split) from the ImageNet tree."""
    wnids = select_wnids(root, split)
    samples, classes = scan_image_folder(
        Path(root) / IMAGENET_DIR / split, IMAGENET100_PREPARE_HINT, only=wnids
    )
    return FolderImageDataset(samples, classes, size, resize, on_corrupt)


def verify_imagenet100(root: Path, check_images: bool = False) -> list[str]:
    """Problems with ImageNet-100 under ``root``: missing listed wnids (named), empty class folders,
    train/val class sets that differ; with ``check_images`` every selected image decodes."""
    problems: list[str] = []
    scans = {}
    for split in IMAGENET_SPLITS:
        try:
            wnids = select_wnids(root, split)
            scans[split] = scan_image_folder(Path(root) / IMAGENET_DIR / split, only=wnids)
        except DatasetError as exc:
            problems.append(str(exc))
    if len(scans) == 2 and scans["train"][1] != scans["val"][1]:
        only = sorted(set(scans["train"][1]) ^ set(scans["val"][1]))
        problems.append(f"ImageNet-100 train and val classes differ ({len(only)} not in both: {only[:5]})")
    if check_images:
        for split, (samples, _) in scans.items():
            bad = scan_corrupt([path for path, _ in samples])
            if bad:
                problems.append(f"ImageNet-100 {split}: {len(bad)} unreadable image(s), e.g. {bad[0]}")
    return problems


def count_imagenet100(root: Path, split: str) -> int:
    """Images of ImageNet-100 ``split`` (a directory scan, no decoding)."""
    wnids = select_wnids(root, split)
    return len(scan_image_folder(Path(root) / IMAGENET_DIR / split, only=wnids)[0])
