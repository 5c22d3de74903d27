"""COCO 2017 instances (the instance-segmentation protocol's data): reader, verifier, writer, stand-in.

On-disk layout (``train2017.zip``, ``val2017.zip`` and ``annotations_trainval2017.zip`` extracted into
``<root>/coco``)::

    <root>/coco/train2017/<12-digit id>.jpg        <root>/coco/val2017/<12-digit id>.jpg
    <root>/coco/annotations/instances_train2017.json   instances_val2017.json

Each JSON has ``images`` ``[{id, file_name, width, height}]``, ``annotations`` ``[{id, image_id,
category_id, bbox [x, y, w, h], segmentation (polygons [[x0, y0, x1, y1, ...], ...] or RLE), area,
iscrowd}]`` and ``categories`` ``[{id, name, supercategory}]``.  Records follow detectron2's
``load_coco_json``: images sorted by id, classes = categories sorted by id (``category_ids[label]`` maps
back to the dataset's id), boxes ``(x, y, x + w, y + h)``, crowd regions flagged.

The stand-in (:func:`write_synthetic_coco`) renders multi-object scenes (:mod:`tasks.datasets.synth.scenes`)
with polygon masks; its categories are real COCO categories (:data:`COCO_SYNTH_CATEGORIES`, non-contiguous
ids, so the id mapping is exercised), each drawn as one shape.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from core.errors import DatasetError
from tasks.datasets.detection import DetRecord, DetSplit, check_boxes, require_nonempty
from tasks.datasets.filelist import corrupt_problem, missing_files, missing_message, read_json, write_jpegs
from tasks.datasets.synth import scenes, shapes

COCO_DIR = "coco"
COCO_SPLITS = ("train2017", "val2017")
COCO_NUM_CLASSES = 80
COCO_PREPARE_HINT = (
    "download train2017.zip, val2017.zip and annotations_trainval2017.zip from "
    "https://cocodataset.org/#download and extract them into <root>/coco, giving train2017/, val2017/ "
    "and annotations/instances_*2017.json; "
    "`bench data synth --datasets coco` writes a synthetic stand-in in the same layout instead"
)
_TITLE = "COCO"
#: The stand-in's categories: (COCO id, name, supercategory, shape drawn).
COCO_SYNTH_CATEGORIES = (
    (1, "person", "person", "cross"),
    (3, "car", "vehicle", "square"),
    (16, "bird", "animal", "triangle"),
    (18, "dog", "animal", "heart"),
)
#: 2-3 objects of radius 9-16 px in 64-80 px images.
COCO_SYNTH_STYLE = scenes.SceneStyle(
    shapes=tuple(c[3] for c in COCO_SYNTH_CATEGORIES),
    widths=(64, 72, 80),
    heights=(64, 72),
    objects=(2, 3),
    radius=(9.0, 16.0),
    distractors=1,
)
#: Stand-in sizes per scale: images of (train2017, val2017).
COCO_SYNTH_COUNTS = {"smoke": (600, 150), "tiny": (24, 12)}


def annotation_file(root: Path | str, split: str) -> Path:
    return Path(root) / COCO_DIR / "annotations" / f"instances_{split}.json"


def _segmentation(ann: dict[str, Any], where: str) -> Any:
    segm = ann.get("segmentation")
    if segm is None or isinstance(segm, dict):  # absent (detection only) or RLE
        return segm
    if not isinstance(segm, list) or not all(
        isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 for p in segm
    ):
        raise DatasetError(
            f"{where}: segmentation must be polygons [[x0, y0, x1, y1, x2, y2, ...], ...] or RLE"
        )
    return segm


def load_coco(root: Path | str, split: str) -> DetSplit:
    """``train2017`` or ``val2017`` as records (see the module docstring)."""
    if split not in COCO_SPLITS:
        raise DatasetError(f"{_TITLE} has splits {', '.join(COCO_SPLITS)}; got {split!r}")
    root = Path(root)
    if not (root / COCO_DIR).is_dir():
        raise DatasetError(f"{_TITLE} not found: no directory {root / COCO_DIR}; {COCO_PREPARE_HINT}")
    path = annotation_file(root, split)
    doc = read_json(path, _TITLE, COCO_PREPARE_HINT)
    if not isinstance(doc, dict) or not all(
        isinstance(doc.get(k), list) for k in ("images", "annotations", "categories")
    ):
        raise DatasetError(
            f"{_TITLE}: {path} is not a COCO instances file (needs images, annotations, categories)"
        )
    try:
        categories = sorted((int(c["id"]), str(c["name"])) for c in doc["categories"])
        images = sorted(doc["images"], key=lambda im: int(im["id"]))
        image_ids = [int(im["id"]) for im in images]
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"{_TITLE}: {path}: malformed image or category entry ({exc})") from None
    if not categories:
        raise DatasetError(f"{_TITLE}: {path} defines no categories")
    label_of = {cid: k for k, (cid, _) in enumerate(categories)}
    known = set(image_ids)
    per_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for ann in doc["annotations"]:
        image_id = ann.get("image_id")
        if image_id not in known:
            raise DatasetError(
                f"{_TITLE}: {path}: annotation {ann.get('id')} names image {image_id}, "
                f"which is not in its images list"
            )
        if ann.get("category_id") not in label_of:
            raise DatasetError(
                f"{_TITLE}: {path}: annotation {ann.get('id')} has unknown category {ann.get('category_id')}"
            )
        per_image[image_id].append(ann)
    folder = root / COCO_DIR / split
    files = [str(folder / str(im["file_name"])) for im in images]
    absent = missing_files(files)
    if absent:
        raise DatasetError(missing_message(f"{_TITLE} {split}", path, absent, len(files)))
    records = []
    for im, file_name in zip(images, files, strict=True):
        anns = per_image.get(int(im["id"]), [])
        where = f"{_TITLE} {path.name}, image {im['id']}"
        try:
            xywh = np.array([a["bbox"] for a in anns], dtype=np.float32).reshape(-1, 4)
            width, height = int(im["width"]), int(im["height"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(f"{where}: malformed bbox or size ({exc})") from None
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        check_boxes(boxes, width, height, where)
        crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool)
        records.append(
            DetRecord(
                image_id=int(im["id"]),
                file_name=file_name,
                width=width,
                height=height,
                boxes=boxes,
                labels=np.array([label_of[a["category_id"]] for a in anns], dtype=np.int64),
                difficult=np.zeros(len(anns), dtype=bool),
                crowd=crowd,
                segmentations=tuple(_segmentation(a, where) for a in anns),
            )
        )
    out = DetSplit(
        "coco",
        split,
        tuple(name for _, name in categories),
        tuple(records),
        tuple(cid for cid, _ in categories),
        path,
    )
    require_nonempty(out, path, COCO_PREPARE_HINT)
    return out


def count_coco(root: Path | str, split: str) -> int:
    """Images listed in ``instances_<split>.json``."""
    doc = read_json(annotation_file(root, split), _TITLE, COCO_PREPARE_HINT)
    return len(doc.get("images", [])) if isinstance(doc, dict) else 0


def verify_coco(root: Path | str, check_images: bool = False) -> list[str]:
    """Problems with ``<root>/coco``: missing or malformed JSON, annotations naming absent images or unknown
    categories, listed images missing on disk, bad boxes or polygons, empty splits, train/val categories
    that differ; with ``check_images`` also undecodable images."""
    if not (Path(root) / COCO_DIR).is_dir():
        return [f"{_TITLE}: no directory {Path(root) / COCO_DIR}; {COCO_PREPARE_HINT}"]
    problems: list[str] = []
    loaded: dict[str, DetSplit] = {}
    for split in COCO_SPLITS:
        try:
            loaded[split] = load_coco(root, split)
        except DatasetError as exc:
            problems.append(str(exc))
            continue
        if check_images:
            problems += corrupt_problem(_TITLE, split, [r.file_name for r in loaded[split].records])
    if len(loaded) == 2 and loaded["train2017"].category_ids != loaded["val2017"].category_ids:
        problems.append(
            f"{_TITLE}: instances_train2017.json and instances_val2017.json define different categories"
        )
    return problems


# --------------------------------------------------------------------------------------------- writer


def polygon_area(flat: list[float]) -> float:
    """Area of a polygon ``[x0, y0, x1, y1, ...]`` (shoelace formula)."""
    xy = np.asarray(flat, dtype=np.float64).reshape(-1, 2)
    x, y = xy[:, 0], xy[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def write_synthetic_coco(root: Path | str, seed: int, scale: str) -> None:
    """Render the stand-in into ``<root>/coco`` (see the module docstring); ``scale`` is a key of
    :data:`COCO_SYNTH_COUNTS`.  Image ids run on across splits; file names are the 12-digit ids."""
    if scale not in COCO_SYNTH_COUNTS:
        raise DatasetError(f"unknown synthetic scale {scale!r}; choose from {sorted(COCO_SYNTH_COUNTS)}")
    base = Path(root) / COCO_DIR
    (base / "annotations").mkdir(parents=True, exist_ok=True)
    categories = [
        {"id": cid, "name": name, "supercategory": sup} for cid, name, sup, _ in COCO_SYNTH_CATEGORIES
    ]
    next_image, next_ann = 1, 1
    for split, count in zip(COCO_SPLITS, COCO_SYNTH_COUNTS[scale], strict=True):
        style_seed = shapes.derive_seed(seed, f"coco/{split}")
        images, annotations = [], []
        for k in tqdm(range(count), desc=f"render COCO {split}", disable=count < 500):
            scene = scenes.render_scene(COCO_SYNTH_STYLE, style_seed, k)
            height, width = scene.image.shape[:2]
            name = f"{next_image:012d}.jpg"
            write_jpegs([base / split / name], scene.image[None])
            images.append({"id": next_image, "file_name": name, "width": width, "height": height})
            for obj in scene.objects:
                flat = [round(float(v), 2) for v in obj.polygon.reshape(-1)]
                x0, y0, x1, y1 = (round(v, 2) for v in obj.box)
                annotations.append(
                    {
                        "id": next_ann,
                        "image_id": next_image,
                        "category_id": COCO_SYNTH_CATEGORIES[obj.label][0],
                        "segmentation": [flat],
                        "area": round(polygon_area(flat), 2),
                        "bbox": [x0, y0, round(x1 - x0, 2), round(y1 - y0, 2)],
                        "iscrowd": 0,
                    }
                )
                next_ann += 1
            next_image += 1
        doc = {
            "info": {"description": "augbench synthetic COCO stand-in", "version": str(scenes.SCENE_VERSION)},
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": categories,
        }
        annotation_file(root, split).write_text(json.dumps(doc))
