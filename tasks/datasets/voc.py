"""PASCAL VOC 2007 + 2012 (the detection protocol's data): reader, verifier, writer and synthetic stand-in.

On-disk layout (the official tars extracted into ``<root>``)::

    <root>/VOCdevkit/VOC2007/{Annotations/<id>.xml, JPEGImages/<id>.jpg, ImageSets/Main/{trainval,test}.txt}
    <root>/VOCdevkit/VOC2012/{Annotations, JPEGImages, ImageSets/Main/trainval.txt, ...}

Splits (the MoCo / detectron2 VOC protocol): ``trainval`` = VOC2007 trainval + VOC2012 trainval,
``test`` = VOC2007 test.  An XML file's ``size`` gives the image size, each ``object`` its ``name`` (one of
the 20 :data:`VOC_CLASSES`), ``difficult`` flag and 1-based inclusive ``bndbox``; records follow
:mod:`tasks.datasets.detection` (detectron2's ``load_voc_instances`` conventions).

Classes: the VOC classes that occur in the annotations of both splits, in VOC order -- all 20 on the real
data; the stand-in uses :data:`VOC_SYNTH_SHAPES` (fewer classes, so a smoke run can learn them), and a
class absent from the data would otherwise count as AP 0 in detectron2's VOC evaluator.

The stand-in (:func:`write_synthetic_voc`) renders multi-object scenes (:mod:`tasks.datasets.synth.scenes`)
as JPEGs with XML annotations and ``ImageSets/Main/{train,val,trainval,test}.txt`` in the same layout.  The
same writer adds VOC2012's segmentation part (``SegmentationClass``, ``SegmentationClassAug``,
``ImageSets/Segmentation``; :func:`tasks.datasets.voc_seg.write_synthetic_voc12aug`, dense scenes under ids
``2012_9xxxxx``), so one tree serves ``det/voc07`` and ``seg/voc12aug``; the registry's ``voc12aug`` entry is
owned by ``voc`` (``DatasetInfo.synthetic_owner``).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from core.errors import DatasetError
from tasks.datasets import voc_seg
from tasks.datasets.detection import DetRecord, DetSplit, check_boxes, require_nonempty
from tasks.datasets.filelist import corrupt_problem, missing_files, missing_message, write_jpegs
from tasks.datasets.synth import scenes, shapes

VOC_DIR = "VOCdevkit"
VOC_SPLITS = ("trainval", "test")
#: (year, image set) making up each split.
VOC_SETS: dict[str, tuple[tuple[str, str], ...]] = {
    "trainval": (("2007", "trainval"), ("2012", "trainval")),
    "test": (("2007", "test"),),
}
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip
VOC_PREPARE_HINT = (
    "download VOCtrainval_06-Nov-2007.tar, VOCtest_06-Nov-2007.tar and VOCtrainval_11-May-2012.tar "
    "(http://host.robots.ox.ac.uk/pascal/VOC/) and extract all three into <root>, giving "
    "<root>/VOCdevkit/VOC2007 and <root>/VOCdevkit/VOC2012; `bench data synth --datasets voc` writes a "
    "synthetic stand-in in the same layout instead"
)
_TITLE = "PASCAL VOC"
#: The stand-in's classes: VOC class name -> shape drawn (in VOC order).
VOC_SYNTH_SHAPES = {"aeroplane": "star", "bus": "square", "car": "disc", "person": "cross"}
#: 1-3 objects of radius 9-16 px (the sizes the smoke backbone saw in pretraining) in 64-80 px images.
VOC_SYNTH_STYLE = scenes.SceneStyle(
    shapes=tuple(VOC_SYNTH_SHAPES.values()),
    widths=(64, 72, 80),
    heights=(56, 64, 72),
    objects=(1, 3),
    radius=(9.0, 16.0),
    distractors=1,
)
#: Stand-in sizes per scale: images of (VOC2007 trainval, VOC2012 trainval, VOC2007 test).
VOC_SYNTH_COUNTS = {"smoke": (300, 300, 150), "tiny": (16, 16, 12)}

Objects = list[tuple[str, int, tuple[int, int, int, int]]]  # (name, difficult, (xmin, ymin, xmax, ymax))


def year_dir(root: Path | str, year: str) -> Path:
    return Path(root) / VOC_DIR / f"VOC{year}"


def image_set_file(root: Path | str, year: str, image_set: str) -> Path:
    return year_dir(root, year) / "ImageSets" / "Main" / f"{image_set}.txt"


def read_image_set(root: Path | str, year: str, image_set: str) -> list[str]:
    """The image ids listed in ``ImageSets/Main/<image_set>.txt`` (one per line)."""
    path = image_set_file(root, year, image_set)
    try:
        ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        raise DatasetError(f"{_TITLE} incomplete: no file {path}; {VOC_PREPARE_HINT}") from None
    except OSError as exc:
        raise DatasetError(f"{_TITLE}: cannot read {path}: {exc}") from None
    if not ids:
        raise DatasetError(f"{_TITLE}: {path} lists no images (an empty image set)")
    return ids


def _int(node: ET.Element, tag: str, path: Path) -> int:
    child = node.find(tag)
    if child is None or child.text is None:
        raise DatasetError(f"{_TITLE}: {path} has no <{tag}>")
    try:
        return int(float(child.text))
    except ValueError:
        raise DatasetError(f"{_TITLE}: {path}: <{tag}> is not a number: {child.text!r}") from None


def parse_annotation(path: Path) -> tuple[int, int, Objects]:
    """``(width, height, objects)`` of one VOC XML file; malformed files raise :class:`DatasetError`."""
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise DatasetError(f"{_TITLE}: annotation file missing: {path}") from None
    except (ET.ParseError, OSError) as exc:
        raise DatasetError(f"{_TITLE}: cannot parse {path}: {exc}") from None
    size = root.find("size")
    if size is None:
        raise DatasetError(f"{_TITLE}: {path} has no <size>")
    width, height = _int(size, "width", path), _int(size, "height", path)
    objects: Objects = []
    for obj in root.findall("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in VOC_CLASSES:
            raise DatasetError(f"{_TITLE}: {path}: object {name!r} is not one of the 20 VOC classes")
        box = obj.find("bndbox")
        if box is None:
            raise DatasetError(f"{_TITLE}: {path}: object {name!r} has no <bndbox>")
        coords = (
            _int(box, "xmin", path),
            _int(box, "ymin", path),
            _int(box, "xmax", path),
            _int(box, "ymax", path),
        )
        difficult = obj.find("difficult")
        objects.append((name, int(difficult.text or 0) if difficult is not None else 0, coords))
    return width, height, objects


def _read_set(root: Path, year: str, image_set: str) -> list[tuple[str, str, int, int, Objects]]:
    """``(id, jpeg path, width, height, objects)`` for every id of one image set; missing files raise."""
    ids = read_image_set(root, year, image_set)
    base = year_dir(root, year)
    listing = image_set_file(root, year, image_set)
    for kind, paths in (
        ("images", [str(base / "JPEGImages" / f"{i}.jpg") for i in ids]),
        ("annotations", [str(base / "Annotations" / f"{i}.xml") for i in ids]),
    ):
        absent = missing_files(paths)
        if absent:
            raise DatasetError(missing_message(f"{_TITLE} {kind}", listing, absent, len(ids)))
    rows = []
    for i in ids:
        width, height, objects = parse_annotation(base / "Annotations" / f"{i}.xml")
        rows.append((i, str(base / "JPEGImages" / f"{i}.jpg"), width, height, objects))
    return rows


def _read_all(root: Path) -> dict[str, list[tuple[str, str, int, int, Objects]]]:
    return {split: [row for ys in VOC_SETS[split] for row in _read_set(root, *ys)] for split in VOC_SPLITS}


def _present_classes(rows: dict[str, list[tuple[str, str, int, int, Objects]]]) -> tuple[str, ...]:
    seen = {name for split_rows in rows.values() for *_, objects in split_rows for name, _, _ in objects}
    return tuple(c for c in VOC_CLASSES if c in seen)


def load_voc(root: Path | str, split: str) -> DetSplit:
    """Split ``"trainval"`` (VOC2007 + VOC2012 trainval) or ``"test"`` (VOC2007 test) as records."""
    if split not in VOC_SPLITS:
        raise DatasetError(f"{_TITLE} has splits {', '.join(VOC_SPLITS)}; got {split!r}")
    root = Path(root)
    if not (root / VOC_DIR).is_dir():
        raise DatasetError(f"{_TITLE} not found: no directory {root / VOC_DIR}; {VOC_PREPARE_HINT}")
    rows = _read_all(root)
    classes = _present_classes(rows)
    index = {c: k for k, c in enumerate(classes)}
    records = []
    for image_id, file_name, width, height, objects in rows[split]:
        boxes = np.array([b for _, _, b in objects], dtype=np.float32).reshape(-1, 4)
        boxes[:, :2] -= 1.0  # 1-based inclusive -> continuous coordinates (detectron2's convention)
        check_boxes(boxes, width, height, f"{_TITLE} annotation of image {image_id}")
        records.append(
            DetRecord(
                image_id=image_id,
                file_name=file_name,
                width=width,
                height=height,
                boxes=boxes,
                labels=np.array([index[n] for n, _, _ in objects], dtype=np.int64),
                difficult=np.array([d for _, d, _ in objects], dtype=bool),
                crowd=np.zeros(len(objects), dtype=bool),
            )
        )
    out = DetSplit("voc", split, classes, tuple(records), tuple(range(1, len(classes) + 1)))
    require_nonempty(
        out, " + ".join(str(image_set_file(root, *ys)) for ys in VOC_SETS[split]), VOC_PREPARE_HINT
    )
    return out


def count_voc(root: Path | str, split: str) -> int:
    """Images in ``split`` (from the image-set files only)."""
    return sum(len(read_image_set(root, *ys)) for ys in VOC_SETS[split])


def verify_voc(root: Path | str, check_images: bool = False) -> list[str]:
    """Problems with ``<root>/VOCdevkit``: missing image sets, listed images or annotations absent,
    malformed XML, unknown class names, bad boxes, empty splits; with ``check_images`` also undecodable
    images and images whose size differs from their annotation."""
    if not (Path(root) / VOC_DIR).is_dir():
        return [f"{_TITLE}: no directory {Path(root) / VOC_DIR}; {VOC_PREPARE_HINT}"]
    problems: list[str] = []
    for split in VOC_SPLITS:
        try:
            data = load_voc(root, split)
        except DatasetError as exc:
            if str(exc) not in problems:  # classes come from both splits: one problem can fail both
                problems.append(str(exc))
            continue
        if check_images:
            paths = [r.file_name for r in data.records]
            problems += corrupt_problem(_TITLE, split, paths)
            problems += _size_problems(data)
    return problems


def _size_problems(data: DetSplit) -> list[str]:
    from PIL import Image

    wrong = []
    for r in data.records:
        try:
            with Image.open(r.file_name) as im:
                if im.size != (r.width, r.height):
                    wrong.append(
                        f"{r.file_name} is {im.size[0]}x{im.size[1]}, annotated {r.width}x{r.height}"
                    )
        except OSError:
            continue  # reported as unreadable
    return (
        [f"{_TITLE} {data.split}: {len(wrong)} image size(s) differ from the XML, e.g. {wrong[0]}"]
        if wrong
        else []
    )


# --------------------------------------------------------------------------------------------- writer


def annotation_xml(
    year: str, image_id: str, width: int, height: int, objects: Objects, segmented: bool
) -> str:
    """A VOC annotation file (the fields detectron2 and the VOC devkit read)."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = f"VOC{year}"
    ET.SubElement(root, "filename").text = f"{image_id}.jpg"
    ET.SubElement(ET.SubElement(root, "source"), "database").text = "augbench synthetic stand-in"
    size = ET.SubElement(root, "size")
    for tag, value in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    ET.SubElement(root, "segmented").text = str(int(segmented))
    for name, difficult, (xmin, ymin, xmax, ymax) in objects:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = name
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = str(difficult)
        box = ET.SubElement(obj, "bndbox")
        for tag, value in (("xmin", xmin), ("ymin", ymin), ("xmax", xmax), ("ymax", ymax)):
            ET.SubElement(box, tag).text = str(value)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def voc_box(box: tuple[float, float, float, float], width: int, height: int) -> tuple[int, int, int, int]:
    """Continuous ``(x0, y0, x1, y1)`` -> VOC's 1-based inclusive pixel indices of the pixels it touches."""
    x0, y0, x1, y1 = box
    return (
        max(int(np.floor(x0)) + 1, 1),
        max(int(np.floor(y0)) + 1, 1),
        min(int(np.ceil(x1)), width),
        min(int(np.ceil(y1)), height),
    )


def write_synthetic_voc(root: Path | str, seed: int, scale: str) -> None:
    """Render the stand-in into ``<root>/VOCdevkit`` (see the module docstring); ``scale`` is a key of
    :data:`VOC_SYNTH_COUNTS`.  Ids: ``%06d`` for VOC2007 (trainval first, then test), ``2012_%06d``."""
    if scale not in VOC_SYNTH_COUNTS:
        raise DatasetError(f"unknown synthetic scale {scale!r}; choose from {sorted(VOC_SYNTH_COUNTS)}")
    n07, n12, n_test = VOC_SYNTH_COUNTS[scale]
    names = list(VOC_SYNTH_SHAPES)
    plan = {
        "2007": ([f"{i:06d}" for i in range(1, n07 + n_test + 1)], {"trainval": n07, "test": n_test}),
        "2012": ([f"2012_{i:06d}" for i in range(1, n12 + 1)], {"trainval": n12}),
    }
    for year, (ids, sets) in plan.items():
        base = year_dir(root, year)
        (base / "Annotations").mkdir(parents=True, exist_ok=True)
        (base / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
        style_seed = shapes.derive_seed(seed, f"voc/{year}")
        rendered = [
            scenes.render_scene(VOC_SYNTH_STYLE, style_seed, k)
            for k in tqdm(range(len(ids)), desc=f"render VOC{year}", disable=len(ids) < 500)
        ]
        by_id = dict(zip(ids, rendered, strict=True))
        listed: dict[str, list[str]] = {}
        start = 0
        for image_set, count in sets.items():
            listed[image_set] = ids[start : start + count]
            start += count
        trainval = listed["trainval"]
        listed["train"], listed["val"] = trainval[: len(trainval) // 2], trainval[len(trainval) // 2 :]
        for image_set, members in listed.items():
            (base / "ImageSets" / "Main" / f"{image_set}.txt").write_text("".join(f"{i}\n" for i in members))
        write_images(base, ids, [s.image for s in rendered])
        for image_id, scene in by_id.items():
            height, width = scene.image.shape[:2]
            objects: Objects = [(names[o.label], 0, voc_box(o.box, width, height)) for o in scene.objects]
            xml = annotation_xml(year, image_id, width, height, objects, False)
            (base / "Annotations" / f"{image_id}.xml").write_text(xml)
    # VOC2012's segmentation part (seg/voc12aug): its own dense scenes, tuned to be learnable at smoke
    # scale, under ids of their own (2012_9xxxxx) in the same tree, written by the same writer
    voc_seg.write_synthetic_voc12aug(root, seed, scale)


def write_images(base: Path, ids: Sequence[str], images: Sequence[np.ndarray]) -> None:
    """JPEGs (quality 95) of varying sizes into ``<base>/JPEGImages/<id>.jpg``."""
    for image_id, image in zip(ids, images, strict=True):
        write_jpegs([base / "JPEGImages" / f"{image_id}.jpg"], image[None])
