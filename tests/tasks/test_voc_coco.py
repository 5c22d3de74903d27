"""VOC / COCO layouts and their multi-object stand-ins: scene geometry, readers against detectron2's own
readers and pycocotools, verifiers and bad input (one clear error)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from core.errors import DatasetError
from tasks.datasets.coco import COCO_SYNTH_CATEGORIES, annotation_file, load_coco, verify_coco
from tasks.datasets.registry import DATASETS
from tasks.datasets.synth import scenes
from tasks.datasets.synth.shapes import SHAPES
from tasks.datasets.synth.writer import ensure_synthetic, read_marker
from tasks.datasets.voc import (
    VOC_CLASSES,
    VOC_SYNTH_COUNTS,
    VOC_SYNTH_SHAPES,
    image_set_file,
    load_voc,
    verify_voc,
    year_dir,
)


@pytest.fixture(scope="module")
def det_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_synthetic(tmp_path_factory.mktemp("det"), ["voc", "coco"], "tiny")


@pytest.fixture()
def det_copy(det_root: Path, tmp_path: Path) -> Path:
    for name in ("VOCdevkit", "coco"):
        shutil.copytree(det_root / name, tmp_path / name)
    return tmp_path


# ------------------------------------------------------------------------------------------ scenes


@pytest.mark.parametrize("shape", ["disc", "square", "triangle", "star", "cross", "heart", "hexagon"])
def test_unit_polygon_traces_the_signed_distance_shape(shape: str) -> None:
    """Point samples inside the traced polygon are the samples where the shape's SDF is negative."""
    poly = scenes.unit_polygon(shape)
    size = 200
    grid = (np.arange(size) + 0.5) / size * 4 - 2  # [-2, 2]^2
    pixels = (poly + 2) * (size / 4)
    inside_poly = scenes.polygon_coverage(pixels, size, size, samples=1) > 0.5
    inside_sdf = SHAPES[shape](grid[None, :], grid[:, None]) <= 0
    iou = (inside_poly & inside_sdf).sum() / (inside_poly | inside_sdf).sum()
    assert iou > 0.98


def test_coverage_integrates_to_the_polygon_area() -> None:
    square = np.array([[2.25, 3.5], [10.75, 3.5], [10.75, 9.0], [2.25, 9.0]])
    cover = scenes.polygon_coverage(square, 16, 16, samples=4)
    assert cover.sum() == pytest.approx(8.5 * 5.5, abs=0.5)
    assert cover[5, 5] == 1.0 and cover[0, 0] == 0.0 and 0 < cover[3, 5] < 1  # row 3 is half covered
    tri = np.array([[0.0, 0.0], [12.0, 0.0], [0.0, 12.0]])
    assert scenes.polygon_coverage(tri, 16, 16, samples=8).sum() == pytest.approx(72.0, abs=1.0)


def test_scene_ground_truth_is_consistent_and_deterministic() -> None:
    style = scenes.SceneStyle(shapes=("disc", "square", "star"), objects=(3, 4))
    for index in range(20):
        scene = scenes.render_scene(style, 7, index)
        again = scenes.render_scene(style, 7, index)
        assert np.array_equal(scene.image, again.image)
        height, width = scene.image.shape[:2]
        assert height in style.heights and width in style.widths and scene.objects
        union = np.zeros((height, width), dtype=int)
        for obj in scene.objects:
            x0, y0, x1, y1 = obj.box
            assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
            ys, xs = np.nonzero(obj.mask)
            assert xs.min() >= np.floor(x0) and xs.max() < np.ceil(x1) and ys.max() < np.ceil(y1)
            union += obj.mask
            # the class map: the object's label inside, 255 only on its outline, never another label
            labels = set(np.unique(scene.class_map[obj.mask]).tolist())
            assert labels <= {obj.label + 1, scenes.IGNORE} and obj.label + 1 in labels
        assert union.max() == 1  # objects never overlap
        assert ((scene.class_map > 0) & (scene.class_map < 255)).sum() <= union.sum()


# ------------------------------------------------------------------------------------------ VOC


def test_voc_stand_in_layout_and_reader_agree_with_detectron2(det_root: Path) -> None:
    marker = read_marker(det_root, "voc")
    assert marker is not None and marker["counts"] == {"trainval": 32, "test": 12}
    n07, n12, n_test = VOC_SYNTH_COUNTS["tiny"]
    sets = (("2007", "trainval", n07), ("2007", "test", n_test), ("2012", "trainval", n12))
    for year, image_set, n in sets:
        assert len(image_set_file(det_root, year, image_set).read_text().split()) == n
    train, test = load_voc(det_root, "trainval"), load_voc(det_root, "test")
    assert train.classes == test.classes == tuple(c for c in VOC_CLASSES if c in VOC_SYNTH_SHAPES)
    assert len(train) == n07 + n12 and len(test) == n_test and train.num_objects > len(train)
    d2 = pytest.importorskip("detectron2.data.datasets.pascal_voc")
    reference = d2.load_voc_instances(str(year_dir(det_root, "2007")), "test", list(test.classes))
    assert len(reference) == len(test.records)
    for ref, rec in zip(reference, test.records, strict=True):
        assert (ref["file_name"], ref["image_id"], ref["width"], ref["height"]) == (
            rec.file_name,
            rec.image_id,
            rec.width,
            rec.height,
        )
        assert np.allclose(np.array([a["bbox"] for a in ref["annotations"]]).reshape(-1, 4), rec.boxes)
        assert [a["category_id"] for a in ref["annotations"]] == rec.labels.tolist()


def test_voc_boxes_match_the_rendered_objects(det_root: Path) -> None:
    """The XML boxes are the 1-based pixel ranges touched by each rendered polygon."""
    from tasks.datasets.synth.shapes import derive_seed
    from tasks.datasets.voc import VOC_SYNTH_STYLE

    rec = load_voc(det_root, "trainval").records[0]
    scene = scenes.render_scene(VOC_SYNTH_STYLE, derive_seed(0, "voc/2007"), 0)
    expected = np.array([[np.floor(b[0]), np.floor(b[1]), np.ceil(b[2]), np.ceil(b[3])] for b in
                         (o.box for o in scene.objects)])  # fmt: skip
    assert np.array_equal(rec.boxes, expected)
    assert [VOC_SYNTH_SHAPES[load_voc(det_root, "test").classes[k]] for k in rec.labels] == [
        VOC_SYNTH_STYLE.shapes[o.label] for o in scene.objects
    ]


def test_voc_verify_and_bad_input(det_root: Path, det_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def reset() -> None:
        shutil.rmtree(det_copy / "VOCdevkit")
        shutil.copytree(det_root / "VOCdevkit", det_copy / "VOCdevkit")

    assert verify_voc(det_copy, check_images=True) == []
    assert main(["data", "verify", "voc", "--root", str(det_copy)]) == 0
    # an image set listing an image that is not there
    (year_dir(det_copy, "2012") / "JPEGImages" / "2012_000003.jpg").unlink()
    problems = verify_voc(det_copy)
    assert len(problems) == 1 and "2012_000003.jpg" in problems[0] and "missing" in problems[0]
    assert main(["data", "verify", "voc", "--root", str(det_copy), "--no-images"]) == 1
    assert "2012_000003.jpg" in capsys.readouterr().out
    with pytest.raises(DatasetError, match="2012_000003"):
        load_voc(det_copy, "trainval")
    # an empty image set
    reset()
    image_set_file(det_copy, "2007", "test").write_text("")
    with pytest.raises(DatasetError, match="lists no images"):
        load_voc(det_copy, "test")
    # an unknown class name, a malformed file
    reset()
    xml = year_dir(det_copy, "2007") / "Annotations" / "000001.xml"
    xml.write_text(xml.read_text().replace("<name>", "<name>x", 1))
    with pytest.raises(DatasetError, match="000001.xml.*not one of the 20 VOC classes"):
        load_voc(det_copy, "trainval")
    xml.write_text("<annotation><size>")
    with pytest.raises(DatasetError, match="cannot parse"):
        load_voc(det_copy, "trainval")
    # the wrong layout: VOC2012 absent, then no VOCdevkit at all
    reset()
    shutil.rmtree(year_dir(det_copy, "2012"))
    problems = verify_voc(det_copy)
    assert len(problems) == 1 and "VOC2012/ImageSets/Main/trainval.txt" in problems[0]
    shutil.rmtree(det_copy / "VOCdevkit")
    assert "no directory" in verify_voc(det_copy)[0]


# ------------------------------------------------------------------------------------------ COCO


def test_coco_reader_agrees_with_detectron2_and_pycocotools(det_root: Path) -> None:
    val = load_coco(det_root, "val2017")
    assert val.category_ids == tuple(sorted(c[0] for c in COCO_SYNTH_CATEGORIES))
    assert val.classes == tuple(c[1] for c in sorted(COCO_SYNTH_CATEGORIES))
    assert len(load_coco(det_root, "train2017")) == 24 and len(val) == 12
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO

    api = COCO(str(annotation_file(det_root, "val2017")))
    style = DATASETS.get("coco")
    assert style.synthetic_classes == len(val.classes)
    for rec in val.records:
        anns = api.loadAnns(api.getAnnIds(imgIds=[rec.image_id]))
        assert len(anns) == rec.num_objects
        for ann, box in zip(anns, rec.boxes, strict=True):
            mask = api.annToMask(ann).astype(bool)
            ys, xs = np.nonzero(mask)
            assert xs.min() >= box[0] - 1 and xs.max() <= box[2] and ys.min() >= box[1] - 1
            assert mask.sum() == pytest.approx(ann["area"], rel=0.15)
    d2 = pytest.importorskip("detectron2.data.datasets.coco")
    reference = d2.load_coco_json(
        str(annotation_file(det_root, "val2017")), str(det_root / "coco" / "val2017"), "augbench_test_coco"
    )
    for ref, rec in zip(reference, val.records, strict=True):
        assert ref["file_name"] == rec.file_name and ref["image_id"] == rec.image_id
        xywh = np.array([a["bbox"] for a in ref["annotations"]]).reshape(-1, 4)
        assert np.allclose(np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1), rec.boxes, atol=1e-4)
        assert [a["category_id"] for a in ref["annotations"]] == rec.labels.tolist()  # contiguous ids


def test_coco_polygons_match_the_rendered_masks(det_root: Path) -> None:
    pytest.importorskip("pycocotools")
    from pycocotools import mask as mask_utils

    from tasks.datasets.coco import COCO_SYNTH_STYLE
    from tasks.datasets.synth.shapes import derive_seed

    rec = load_coco(det_root, "train2017").records[0]
    scene = scenes.render_scene(COCO_SYNTH_STYLE, derive_seed(0, "coco/train2017"), 0)
    assert rec.segmentations is not None and len(rec.segmentations) == len(scene.objects)
    for segm, obj in zip(rec.segmentations, scene.objects, strict=True):
        rle = mask_utils.merge(mask_utils.frPyObjects(segm, rec.height, rec.width))
        decoded = mask_utils.decode(rle).astype(bool)
        iou = (decoded & obj.mask).sum() / (decoded | obj.mask).sum()
        assert iou > 0.85


def test_coco_verify_and_bad_input(det_copy: Path) -> None:
    assert verify_coco(det_copy, check_images=True) == []
    path = annotation_file(det_copy, "val2017")
    doc = json.loads(path.read_text())
    # an annotation naming an image that is not in the file
    bad = json.loads(json.dumps(doc))
    bad["annotations"][0]["image_id"] = 999999
    path.write_text(json.dumps(bad))
    ann_id = bad["annotations"][0]["id"]
    with pytest.raises(DatasetError, match=f"annotation {ann_id} names image 999999") as err:
        load_coco(det_copy, "val2017")
    assert "\n" not in str(err.value)
    # a listed image missing on disk
    path.write_text(json.dumps(doc))
    (det_copy / "coco" / "val2017" / doc["images"][0]["file_name"]).unlink()
    assert any(doc["images"][0]["file_name"] in p for p in verify_coco(det_copy))
    # an empty image set
    path.write_text(json.dumps({**doc, "images": [], "annotations": []}))
    with pytest.raises(DatasetError, match="lists no images"):
        load_coco(det_copy, "val2017")
    # wrong layout: no annotations folder
    shutil.rmtree(det_copy / "coco" / "annotations")
    with pytest.raises(DatasetError, match="no file .*instances_train2017.json"):
        load_coco(det_copy, "train2017")
