"""Detection / instance-segmentation annotations as read from the real layouts (VOC XML, COCO JSON).

One record per image, in detectron2's conventions so the two backends see the same boxes:

* boxes are float ``[N, 4]`` ``(x0, y0, x1, y1)`` in continuous pixel coordinates (pixel ``(row i,
  column j)`` covers ``[j, j + 1] x [i, i + 1]``).  VOC's 1-based inclusive integer boxes become
  ``(xmin - 1, ymin - 1, xmax, ymax)`` exactly as detectron2's ``load_voc_instances`` does; COCO's
  ``[x, y, w, h]`` becomes ``(x, y, x + w, y + h)``;
* ``labels`` are contiguous class indices ``0..C-1`` into the split's ``classes``;
* ``difficult`` (VOC) marks objects the VOC metric ignores; ``crowd`` (COCO ``iscrowd``) marks regions
  COCO's metric ignores; both are kept in training by detectron2 for VOC and dropped for COCO crowds;
* ``segmentations`` (COCO): per object, its ``segmentation`` as in the JSON (polygons ``[[x0, y0, x1, y1,
  ...], ...]`` or an RLE dict; ``None`` if absent); ``None`` for VOC.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import DatasetError


@dataclass(frozen=True, eq=False)
class DetRecord:
    """One image and its objects (see the module docstring for conventions)."""

    image_id: str | int
    file_name: str
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray
    crowd: np.ndarray
    segmentations: tuple[Any, ...] | None = None

    @property
    def num_objects(self) -> int:
        return len(self.labels)


@dataclass(frozen=True, eq=False)
class DetSplit:
    """A split: its records, class names (index = label) and, for COCO, the dataset's category id of
    each contiguous class (``category_ids[label]``) and the annotation file pycocotools evaluates against."""

    dataset: str
    split: str
    classes: tuple[str, ...]
    records: tuple[DetRecord, ...]
    category_ids: tuple[int, ...] = ()
    annotation_file: Path | None = None

    def __len__(self) -> int:
        return len(self.records)

    @property
    def num_objects(self) -> int:
        return sum(r.num_objects for r in self.records)

    def trainable(self) -> tuple[DetRecord, ...]:
        """Records with at least one non-crowd object (what detectron2 trains on by default)."""
        return tuple(r for r in self.records if (~r.crowd).any())


def check_boxes(boxes: np.ndarray, width: int, height: int, where: str) -> None:
    """Raise :class:`DatasetError` naming ``where`` unless every box has ``x0 <= x1``, ``y0 <= y1`` and lies
    within the image (half a pixel of slack for rounding)."""
    if not len(boxes):
        return
    bad = (
        (boxes[:, 0] > boxes[:, 2])
        | (boxes[:, 1] > boxes[:, 3])
        | (boxes[:, 0] < -0.5)
        | (boxes[:, 1] < -0.5)
        | (boxes[:, 2] > width + 0.5)
        | (boxes[:, 3] > height + 0.5)
    )
    if bad.any():
        box = [round(float(v), 1) for v in boxes[int(np.argmax(bad))]]
        raise DatasetError(f"{where}: box {box} is empty or outside the {width}x{height} image")


def require_nonempty(split: DetSplit, listing: Path | str, hint: str) -> None:
    """A split without images, or without a single object, cannot be trained or evaluated."""
    if not split.records:
        raise DatasetError(f"{split.dataset} {split.split}: {listing} lists no images; {hint}")
    if split.num_objects == 0:
        raise DatasetError(f"{split.dataset} {split.split}: no objects annotated in {listing}")
