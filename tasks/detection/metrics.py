"""Detection metrics: PASCAL VOC AP (detectron2's ``PascalVOCDetectionEvaluator`` definitions) and COCO AP
(pycocotools' ``COCOeval``), on the 0-100 scale.

VOC (:func:`voc_metrics`), per class and IoU threshold ``t`` in 0.50, 0.55, ..., 0.95:

* ground truth in VOC's integer pixel convention (1-based inclusive boxes, as in the XML); detections are
  mapped to it the way detectron2 writes them (``xmin + 1``, ``ymin + 1``), and IoU counts pixels
  inclusively: ``w = x1 - x0 + 1``;
* detections of the class over all images, by decreasing score; each is a true positive if its best-IoU
  ground truth (same image, same class) has IoU > ``t``, is not ``difficult`` and is not yet matched; it is
  ignored if that ground truth is difficult; otherwise a false positive;
* AP from the precision/recall curve: VOC2007's 11-point interpolated mean (``use_07_metric``, as detectron2
  does for the 2007 test set) or the area under the monotone precision envelope; a class without
  (non-difficult) ground truth scores 0, as it does in detectron2's evaluator.
* ``AP50`` / ``AP75`` = mean over classes at t = 0.5 / 0.75; ``AP`` = mean over the ten thresholds.

COCO (:func:`coco_metrics`): detections become COCO results (``category_id`` = the dataset's id, ``bbox``
``[x, y, w, h]``, ``segmentation`` as RLE) and are scored by pycocotools against the split's annotation
file: ``AP`` (IoU 0.50:0.95), ``AP50``, ``AP75`` for ``bbox`` and ``segm``.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.errors import BenchError
from tasks.datasets.detection import DetSplit

IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * k, 2) for k in range(10))


@dataclass(frozen=True, eq=False)
class ImageDetections:
    """A model's output on one image: ``boxes`` float ``[N, 4]`` ``(x0, y0, x1, y1)`` in the image's pixel
    coordinates, ``scores`` ``[N]``, ``labels`` int ``[N]`` (contiguous class index) and, for instance
    segmentation, ``masks`` as COCO RLE dicts (one per detection)."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    masks: Sequence[dict[str, Any]] | None = None


def average_precision(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool) -> float:
    """AP of one precision/recall curve (see the module docstring)."""
    if use_07_metric:
        total = 0.0
        for level in np.linspace(0.0, 1.0, 11):
            reached = precision[recall >= level]
            total += float(reached.max()) if reached.size else 0.0
        return total / 11.0
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]  # precision envelope
    steps = np.flatnonzero(r[1:] != r[:-1])
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


def _inclusive_iou(box: np.ndarray, gts: np.ndarray) -> np.ndarray:
    iw = np.maximum(np.minimum(gts[:, 2], box[2]) - np.maximum(gts[:, 0], box[0]) + 1.0, 0.0)
    ih = np.maximum(np.minimum(gts[:, 3], box[3]) - np.maximum(gts[:, 1], box[1]) + 1.0, 0.0)
    inter = iw * ih
    area_d = (box[2] - box[0] + 1.0) * (box[3] - box[1] + 1.0)
    area_g = (gts[:, 2] - gts[:, 0] + 1.0) * (gts[:, 3] - gts[:, 1] + 1.0)
    return np.asarray(inter / (area_d + area_g - inter))


def voc_class_ap(
    split: DetSplit,
    detections: Mapping[str | int, ImageDetections],
    label: int,
    threshold: float,
    use_07_metric: bool,
) -> float:
    """AP (fraction) of class ``label`` at IoU > ``threshold`` (see the module docstring)."""
    gt: dict[str | int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    npos = 0
    for rec in split.records:
        keep = rec.labels == label
        boxes = rec.boxes[keep].astype(np.float64).copy()
        boxes[:, :2] += 1.0  # back to VOC's 1-based inclusive integers
        difficult = rec.difficult[keep]
        gt[rec.image_id] = (np.rint(boxes), difficult, np.zeros(len(boxes), dtype=bool))
        npos += int((~difficult).sum())
    ids: list[str | int] = []
    scores, boxes = [], []
    for rec in split.records:
        det = detections.get(rec.image_id)
        if det is None:
            continue
        keep = det.labels == label
        ids += [rec.image_id] * int(keep.sum())
        scores.append(det.scores[keep])
        boxes.append(det.boxes[keep])
    if not ids:
        return 0.0
    conf = np.concatenate(scores).astype(np.float64)
    det_boxes = np.concatenate(boxes).astype(np.float64).reshape(-1, 4).copy()
    det_boxes[:, :2] += 1.0
    order = np.argsort(-conf)
    tp = np.zeros(len(order))
    fp = np.zeros(len(order))
    for rank, d in enumerate(order):
        gt_boxes, difficult, matched = gt[ids[d]]
        if not len(gt_boxes):
            fp[rank] = 1.0
            continue
        overlaps = _inclusive_iou(det_boxes[d], gt_boxes)
        j = int(np.argmax(overlaps))
        if overlaps[j] > threshold:
            if not difficult[j]:
                if matched[j]:
                    fp[rank] = 1.0
                else:
                    tp[rank] = 1.0
                    matched[j] = True
        else:
            fp[rank] = 1.0
    if npos == 0:
        return 0.0
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    recall = tp / npos
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return average_precision(recall, precision, use_07_metric)


def voc_metrics(
    split: DetSplit, detections: Mapping[str | int, ImageDetections], use_07_metric: bool = True
) -> dict[str, float]:
    """``AP``, ``AP50``, ``AP75`` (percent) over the split's classes (see the module docstring)."""
    per_threshold = {
        t: float(
            np.mean([voc_class_ap(split, detections, k, t, use_07_metric) for k in range(len(split.classes))])
        )
        * 100
        for t in IOU_THRESHOLDS
    }
    return {
        "AP": float(np.mean(list(per_threshold.values()))),
        "AP50": per_threshold[0.5],
        "AP75": per_threshold[0.75],
    }


def coco_results(split: DetSplit, detections: Mapping[str | int, ImageDetections]) -> list[dict[str, Any]]:
    """Detections as a COCO results list (``bbox`` ``[x, y, w, h]``, dataset category ids, RLE masks)."""
    out = []
    for image_id, det in detections.items():
        for k in range(len(det.scores)):
            x0, y0, x1, y1 = (float(v) for v in det.boxes[k])
            item: dict[str, Any] = {
                "image_id": image_id,
                "category_id": split.category_ids[int(det.labels[k])],
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "score": float(det.scores[k]),
            }
            if det.masks is not None:
                item["segmentation"] = det.masks[k]
            out.append(item)
    return out


def coco_metrics(
    split: DetSplit, detections: Mapping[str | int, ImageDetections], iou_types: Sequence[str]
) -> dict[str, float]:
    """``{iou_type}_AP``, ``_AP50``, ``_AP75`` (percent) for each of ``iou_types`` (``bbox``, ``segm``),
    computed by pycocotools against ``split.annotation_file`` on the images of ``split.records`` (images
    without detections count their ground truth as missed); no detections at all score 0."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise BenchError("COCO metrics need pycocotools: pip install 'augbench[det]'") from None
    if split.annotation_file is None:
        raise BenchError(f"{split.dataset} {split.split} has no COCO annotation file to evaluate against")
    results = coco_results(split, detections)
    metrics: dict[str, float] = {}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(split.annotation_file))
        dt = gt.loadRes(results) if results else None
        for iou_type in iou_types:
            if dt is None:
                stats = np.zeros(3)
            else:
                ev = COCOeval(gt, dt, iou_type)
                ev.params.imgIds = sorted(int(r.image_id) for r in split.records)
                ev.evaluate()
                ev.accumulate()
                ev.summarize()
                stats = np.maximum(ev.stats[:3], 0.0)  # -1 (no ground truth) counts as 0
            for name, value in zip(("AP", "AP50", "AP75"), stats, strict=True):
                metrics[f"{iou_type}_{name}"] = float(value) * 100
    return metrics
