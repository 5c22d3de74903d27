"""Image datasets shared by every task: the item contract, the eval transform, in-memory and on-disk sets.

Contract (:class:`ImageDataset`): ``dataset[i]`` is ``(image, label)`` with ``image`` a ``torch.uint8``
tensor of shape ``[3, size, size]`` (RGB, channels first) and ``label`` a Python ``int`` in
``range(len(dataset.classes))``; ``dataset.labels`` holds every label as an ``int64`` array without decoding
any image.  Images are produced by the *eval transform* (:func:`eval_transform`): resize the shorter side to
``resize`` (bilinear, antialiased) and centre-crop ``size`` x ``size``.  Normalisation and training-time
augmentation are not part of this module: they belong to the consumer.

Corrupt images (:class:`FolderImageDataset`): a failure inside a ``DataLoader`` worker happens in another
process, so a per-item "skip and remember" scheme cannot report what it skipped.  Instead:

* ``on_corrupt="raise"`` (default) decodes lazily; the first unreadable file raises
  :class:`~core.errors.DatasetError` naming the file (re-raised in the main process by the ``DataLoader``).
* ``on_corrupt="skip"`` decodes every file once, up front, in the constructor (:func:`scan_corrupt`,
  optionally with worker processes), drops the unreadable ones and lists them in ``dataset.skipped``.
  Items are then never substituted, so labels/indices stay consistent across processes.  A file that
  becomes unreadable after the scan still raises.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from core.errors import DatasetError

OnCorrupt = Literal["raise", "skip"]
Sample = tuple[str, int]

__all__ = [
    "ArrayImageDataset",
    "FolderImageDataset",
    "ImageDataset",
    "OnCorrupt",
    "Sample",
    "decode_image",
    "eval_transform",
    "load_uint8_tensor",
    "scan_corrupt",
]


def _check_sizes(size: int, resize: int) -> None:
    if size < 1 or resize < size:
        raise DatasetError(f"invalid image sizes: need 1 <= size <= resize, got size={size}, resize={resize}")


def eval_transform(images: torch.Tensor, size: int, resize: int) -> torch.Tensor:
    """Resize the shorter side to ``resize`` (bilinear, antialiased), then centre-crop ``size`` x ``size``.

    ``images`` is ``uint8`` ``[3, H, W]`` or a batch ``[N, 3, H, W]``; the result keeps the dtype and batch
    dimension.  Each step is skipped when it would be the identity (shorter side already ``resize``; image
    already ``size`` x ``size``), so ``size == resize == H == W`` returns the input unchanged.
    """
    height, width = images.shape[-2:]
    if min(height, width) != resize:
        images = TF.resize(images, [resize], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    if tuple(images.shape[-2:]) != (size, size):
        images = TF.center_crop(images, [size, size])
    return images


class ImageDataset(Dataset[tuple[torch.Tensor, int]]):
    """Base class of every dataset a task consumes (see the module docstring for the item contract).

    Subclasses set ``classes`` (class names, index = label), ``labels`` (``int64`` ``[N]``), ``size`` and
    ``resize``, and implement ``__getitem__``.
    """

    classes: tuple[str, ...]
    labels: np.ndarray
    size: int
    resize: int

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        raise NotImplementedError

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def _as_labels(labels: Sequence[int] | np.ndarray, num_classes: int) -> np.ndarray:
    out = np.asarray(labels, dtype=np.int64).reshape(-1)
    if out.size and (out.min() < 0 or out.max() >= num_classes):
        raise DatasetError(f"labels must lie in [0, {num_classes}), got range [{out.min()}, {out.max()}]")
    return out


class ArrayImageDataset(ImageDataset):
    """In-memory images (e.g. CIFAR): ``images`` is ``uint8`` ``[N, H, W, 3]`` (HWC, RGB).

    The array is kept as given (no copy), so a memory map stays a memory map.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: Sequence[int] | np.ndarray,
        classes: Sequence[str],
        size: int,
        resize: int,
    ) -> None:
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise DatasetError(f"expected uint8 images [N, H, W, 3], got {images.dtype} {list(images.shape)}")
        _check_sizes(size, resize)
        self.images = images
        self.classes = tuple(classes)
        self.labels = _as_labels(labels, len(self.classes))
        if len(self.labels) != len(images):
            raise DatasetError(f"{len(images)} images but {len(self.labels)} labels")
        self.size, self.resize = size, resize

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = torch.from_numpy(np.ascontiguousarray(self.images[index].transpose(2, 0, 1)))
        return eval_transform(image, self.size, self.resize), int(self.labels[index])

    def to_tensor(self, batch_size: int = 1024) -> torch.Tensor:
        """All images, transformed, as one ``uint8`` ``[N, 3, size, size]`` tensor (batched torch ops)."""
        chunks = []
        for start in range(0, len(self.images), batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(self.images[start : start + batch_size]))
            chunks.append(eval_transform(chunk.permute(0, 3, 1, 2).contiguous(), self.size, self.resize))
        if not chunks:
            return torch.empty((0, 3, self.size, self.size), dtype=torch.uint8)
        return torch.cat(chunks)


def decode_image(path: str) -> torch.Tensor:
    """Decode one image file with PIL into ``uint8`` ``[3, H, W]`` RGB; unreadable -> ``DatasetError``."""
    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
    except Exception as exc:  # PIL raises OSError, ValueError, SyntaxError, zlib errors, bomb errors ...
        raise DatasetError(f"cannot decode image {path}: {exc}") from None
    return TF.pil_to_tensor(rgb)


class _ProbeDataset(Dataset[str]):
    """Decodes each path; an item is ``""`` if readable, else the path (used by :func:`scan_corrupt`)."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> str:
        try:
            decode_image(self.paths[index])
        except DatasetError:
            return self.paths[index]
        return ""


def _collate_strings(batch: list[str]) -> list[str]:
    return batch


def scan_corrupt(paths: Sequence[str], num_workers: int = 0) -> list[str]:
    """Fully decode every file in ``paths``; return those that cannot be decoded, in input order.

    ``num_workers > 0`` spreads the decoding over that many ``DataLoader`` worker processes.
    """
    loader = DataLoader(
        _ProbeDataset(paths), batch_size=64, num_workers=num_workers, collate_fn=_collate_strings
    )
    return [path for batch in loader for path in batch if path]


class FolderImageDataset(ImageDataset):
    """Images decoded from files (PIL, converted to RGB) given as ``samples = [(path, label), ...]``.

    ``on_corrupt`` selects the corrupt-file policy described in the module docstring; with ``"skip"`` the
    constructor decodes every file (``scan_workers`` processes) and ``skipped`` lists the dropped paths.
    That up-front pass costs one full decode of the split (hours for the real ImageNet train set on few
    cores), so ``"skip"`` is meant for small sets or for a one-off cleaning run.
    """

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        classes: Sequence[str],
        size: int,
        resize: int,
        on_corrupt: OnCorrupt = "raise",
        scan_workers: int = 0,
    ) -> None:
        if on_corrupt not in ("raise", "skip"):
            raise DatasetError(f"on_corrupt must be 'raise' or 'skip', got {on_corrupt!r}")
        _check_sizes(size, resize)
        self.classes = tuple(classes)
        self.size, self.resize, self.on_corrupt = size, resize, on_corrupt
        kept = [(os.fspath(path), int(label)) for path, label in samples]
        self.skipped: tuple[str, ...] = ()
        if on_corrupt == "skip":
            bad = set(scan_corrupt([path for path, _ in kept], num_workers=scan_workers))
            self.skipped = tuple(path for path, _ in kept if path in bad)
            kept = [sample for sample in kept if sample[0] not in bad]
        self.samples: list[Sample] = kept
        self.labels = _as_labels([label for _, label in kept], len(self.classes))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return eval_transform(decode_image(path), self.size, self.resize), label


def load_uint8_tensor(
    dataset: ImageDataset, num_workers: int = 0, batch_size: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode a whole (small) split into memory: ``(uint8 [N, 3, S, S], int64 labels [N])`` in index order.

    Array-backed datasets are converted with batched tensor ops; others go through a ``DataLoader`` with
    ``num_workers`` worker processes.
    """
    labels = torch.from_numpy(np.asarray(dataset.labels, dtype=np.int64).copy())
    if isinstance(dataset, ArrayImageDataset):
        return dataset.to_tensor(), labels
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, shuffle=False)
    images = [batch_images for batch_images, _ in loader]
    if not images:
        return torch.empty((0, 3, dataset.size, dataset.size), dtype=torch.uint8), labels
    return torch.cat(images), labels
