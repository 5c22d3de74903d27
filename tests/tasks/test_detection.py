"""Dense transfer tasks (fast part): protocols, names and groups, the torchvision -> detectron2 converter
(against detectron2's own model keys), strict backbone loading, VOC AP (hand-computed reference and
detectron2's evaluator) and COCO metrics (pycocotools and detectron2's COCOEvaluator)."""

from __future__ import annotations

import contextlib
import io
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import BenchError, CheckpointError, ConfigError, UnknownNameError
from pretrain.backbones import build_backbone
from tasks.base import TaskContext
from tasks.datasets.coco import annotation_file, load_coco
from tasks.datasets.detection import DetRecord, DetSplit
from tasks.datasets.synth.writer import ensure_synthetic
from tasks.datasets.voc import load_voc, year_dir
from tasks.detection.convert import convert_state_dict, detectron2_to_torchvision, torchvision_to_detectron2
from tasks.detection.metrics import (
    ImageDetections,
    average_precision,
    coco_metrics,
    voc_class_ap,
    voc_metrics,
)
from tasks.detection.protocol import build_protocol
from tasks.detection.tasks import DenseTransferTask, build_dense_task, detectron2_available, resolve_backend
from tasks.detection.tv_model import build_tv_detector, load_backbone
from tasks.registry import resolve_tasks, task_groups

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def det_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_synthetic(tmp_path_factory.mktemp("det"), ["voc", "coco"], "tiny")


# ------------------------------------------------------------------------------ protocols and names


def test_paper_protocols_are_the_moco_configs() -> None:
    voc = build_protocol("det/voc07", None, "paper")
    assert (voc.iterations, voc.steps, voc.batch, voc.base_lr, voc.warmup_iters) == (
        24000,
        (18000, 22000),
        16,
        0.02,
        100,
    )
    assert voc.min_size_train == tuple(range(480, 801, 32)) and voc.min_size_test == 800
    assert (voc.arch, voc.mask, voc.freeze_at, voc.norm, voc.stride_in_1x1) == (
        "c4",
        False,
        0,
        "SyncBN",
        False,
    )
    assert (
        voc.extra_norm_after_res5 and voc.precise_bn_iters > 0 and voc.pixel_mean == (123.675, 116.28, 103.53)
    )
    c4 = build_protocol("instseg/coco", None, "paper")
    assert (c4.variant, c4.iterations, c4.steps, c4.mask) == ("c4_2x", 180000, (120000, 160000), True)
    assert c4.min_size_train == (640, 672, 704, 736, 768, 800)
    assert build_protocol("instseg/coco", "c4_1x", "paper").steps == (60000, 80000)
    fpn = build_protocol("instseg/coco", "fpn_1x", "paper")
    assert (fpn.arch, fpn.iterations, fpn.box_head_convs, fpn.fpn_in_features) == (
        "fpn",
        90000,
        4,
        ("res2", "res3", "res4", "res5"),
    )
    smoke = {v: build_protocol("instseg/coco", v, "smoke") for v in ("c4_2x", "c4_1x", "fpn_1x")}
    assert smoke["c4_1x"].iterations * 2 == smoke["c4_2x"].iterations
    s = build_protocol("det/voc07", None, "smoke")
    assert s.steps == (s.iterations * 3 // 4, s.iterations * 11 // 12) and s.grad_clip is not None
    with pytest.raises(ConfigError, match="variants"):
        build_protocol("instseg/coco", "c4_3x", "smoke")


def test_task_names_backends_and_groups() -> None:
    tasks = resolve_tasks("det/voc07@torchvision,instseg/coco:fpn_1x@torchvision,instseg/coco@torchvision")
    assert [t.name for t in tasks] == [
        "det/voc07@torchvision",
        "instseg/coco:fpn_1x@torchvision",
        "instseg/coco:c4_2x@torchvision",
    ]
    voc, fpn, _ = tasks
    assert (voc.family, voc.datasets, voc.primary) == ("det", ("voc",), "AP50")
    assert (fpn.family, fpn.datasets, fpn.primary) == ("instseg", ("coco",), "segm_AP")
    assert voc.protocol("smoke")["backend"] == "torchvision"
    auto = "detectron2" if detectron2_available() else "torchvision"
    assert resolve_backend("auto") == resolve_backend(None) == auto
    names = [t.name for t in resolve_tasks("all")]
    assert f"det/voc07@{auto}" in names and f"instseg/coco:c4_2x@{auto}" in names
    groups = task_groups()
    assert groups["det"] == ["det/voc07"] and groups["transfer"][:2] == ["det/voc07", "instseg/coco"]
    assert set(groups["transfer"][2:]) == {"seg/voc12aug", "seg/cityscapes", "seg/ade20k"}
    transfer = [t.name for t in resolve_tasks("transfer")]
    assert transfer[:2] == [f"det/voc07@{auto}", f"instseg/coco:c4_2x@{auto}"]
    with pytest.raises(ConfigError, match="backend"):
        resolve_tasks("det/voc07@mmdet")
    with pytest.raises(ConfigError, match="variants"):
        resolve_tasks("instseg/coco:c4_9x")
    with pytest.raises(UnknownNameError, match="did you mean"):
        resolve_tasks("det/voc7")


# ------------------------------------------------------------------------------ weights


@pytest.mark.parametrize("name", ["narrow_resnet18", "resnet50"])
def test_converter_round_trips_names_and_values(name: str) -> None:
    state = build_backbone(name).net.state_dict()
    converted = convert_state_dict(state)
    assert {detectron2_to_torchvision(k) for k in converted} == set(state)
    for key, value in state.items():
        assert converted[torchvision_to_detectron2(key)] is value
    expected = {
        "conv1.weight": "stem.conv1.weight",
        "bn1.running_var": "stem.conv1.norm.running_var",
        "layer1.0.bn2.weight": "res2.0.conv2.norm.weight",
        "layer2.0.downsample.0.weight": "res3.0.shortcut.weight",
        "layer4.1.bn1.num_batches_tracked": "res5.1.conv1.norm.num_batches_tracked",
        "layer3.0.downsample.1.bias": "res4.0.shortcut.norm.bias",
    }
    for tv, d2 in expected.items():
        assert torchvision_to_detectron2(tv) == d2


def _d2_model(name: str, arch: str) -> torch.nn.Module:
    pytest.importorskip("detectron2")
    if not detectron2_available():
        pytest.skip("detectron2 does not import")
    from detectron2.modeling import build_model

    from tasks.detection.d2_config import build_cfg
    from tasks.detection.d2_model import register

    register()
    variant = "fpn_1x" if arch == "fpn" else "c4_2x"
    p = build_protocol("instseg/coco", variant, "smoke")
    ctx = TaskContext(Path("."), True, "smoke", torch.device("cpu"), Path("."), 0, "x", progress=False)
    cfg = build_cfg(p, build_backbone(name), 4, ["unused"], "unused", Path("."), ctx)
    return build_model(cfg)


@pytest.mark.parametrize(
    ("name", "arch"), [("narrow_resnet18", "c4"), ("resnet50", "c4"), ("narrow_resnet18", "fpn")]
)
def test_converted_keys_are_detectron2_model_keys(name: str, arch: str) -> None:
    """Every converted key is the suffix of exactly one key of detectron2's own model (and the trunk of that
    model has no other tensors): what matching_heuristics needs to load everything."""
    model = _d2_model(name, arch)
    converted = set(convert_state_dict(build_backbone(name).net.state_dict()))
    prefixes = ("backbone.", "roi_heads.") if arch == "c4" else ("backbone.bottom_up.",)
    trunk = set()
    for key in model.state_dict():
        for prefix in prefixes:
            rest = key.removeprefix(prefix)
            if key.startswith(prefix) and rest.split(".")[0] in ("stem", "res2", "res3", "res4", "res5"):
                trunk.add(rest)
    assert trunk - converted == ({"res5.norm.weight", "res5.norm.bias", "res5.norm.running_mean",
                                  "res5.norm.running_var", "res5.norm.num_batches_tracked"} if arch == "c4"
                                 else set())  # fmt: skip
    assert converted <= trunk


def test_detectron2_loader_fails_on_an_incomplete_backbone() -> None:
    pytest.importorskip("detectron2")
    if not detectron2_available():
        pytest.skip("detectron2 does not import")
    from detectron2.checkpoint import DetectionCheckpointer

    from tasks.detection.d2_backend import load_pretrained

    model = _d2_model("narrow_resnet18", "c4")
    state = build_backbone("narrow_resnet18").net.state_dict()

    class Holder:
        checkpointer = DetectionCheckpointer(model)

    with contextlib.redirect_stdout(io.StringIO()):
        assert load_pretrained(Holder(), dict(state), "test") == len(state)  # type: ignore[arg-type]
        missing = {k: v for k, v in state.items() if k != "layer3.1.conv2.weight"}
        with pytest.raises(CheckpointError, match=r"res4\.1\.conv2\.weight"):
            load_pretrained(Holder(), missing, "test")  # type: ignore[arg-type]
        wrong = {**state, "layer1.0.conv1.weight": torch.zeros(3, 3, 3, 3)}
        with pytest.raises(CheckpointError, match="wrong shape"):
            load_pretrained(Holder(), wrong, "test")  # type: ignore[arg-type]


@pytest.mark.parametrize("variant", ["c4_2x", "fpn_1x"])
def test_torchvision_detector_loads_every_backbone_tensor_and_trains(variant: str) -> None:
    p = build_protocol("instseg/coco", variant, "smoke")
    pretrained = build_backbone("narrow_resnet18").net.state_dict()
    model = build_tv_detector(p, "narrow_resnet18", 3)
    assert load_backbone(model, p, "narrow_resnet18", pretrained) == len(pretrained)
    where = (
        "roi_heads.box_head.head.layer4.0.conv1.weight"
        if variant == "c4_2x"
        else "backbone.body.layer4.0.conv1.weight"
    )
    assert torch.equal(model.state_dict()[where], pretrained["layer4.0.conv1.weight"])
    with pytest.raises(CheckpointError, match="layer2.0.bn1.weight"):
        load_backbone(
            model, p, "narrow_resnet18", {k: v for k, v in pretrained.items() if k != "layer2.0.bn1.weight"}
        )
    masks = torch.zeros(1, 60, 70, dtype=torch.uint8)
    masks[0, 10:30, 20:45] = 1
    target = {"boxes": torch.tensor([[20.0, 10.0, 45.0, 30.0]]), "labels": torch.tensor([2]), "masks": masks}
    model.train()
    losses = model([torch.rand(3, 60, 70), torch.rand(3, 60, 70)], [target, target])
    assert set(losses) >= {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness"}
    assert all(torch.isfinite(v) for v in losses.values())


# ------------------------------------------------------------------------------ VOC AP


def _record(image_id: str, boxes: list[list[float]], difficult: list[bool]) -> DetRecord:
    n = len(boxes)
    return DetRecord(image_id, f"{image_id}.jpg", 40, 40, np.array(boxes, np.float32).reshape(-1, 4),
                     np.zeros(n, np.int64), np.array(difficult, bool), np.zeros(n, bool))  # fmt: skip


def test_voc_ap_matches_a_hand_computed_reference() -> None:
    """One class, two images: a true positive, a detection of a difficult object (ignored), a false
    positive, a second true positive and a duplicate.  By hand: recall .5 .5 .5 1 1, precision 1 1 1/2 2/3
    1/2; 11-point AP = (6 * 1 + 5 * 2/3) / 11 = 28/33, area AP = .5 * 1 + .5 * 2/3 = 5/6."""
    # continuous coordinates = VOC's (xmin - 1, ymin - 1, xmax, ymax)
    split = DetSplit(
        "voc",
        "test",
        ("a",),
        (
            _record("1", [[0, 0, 10, 10], [19, 19, 30, 30]], [False, True]),
            _record("2", [[4, 4, 15, 15]], [False]),
        ),
    )
    dets = {
        "1": ImageDetections(np.array([[0, 0, 10, 10], [19, 19, 30, 30], [0, 0, 10, 10]], np.float32),
                             np.array([0.9, 0.8, 0.5]), np.zeros(3, np.int64)),
        "2": ImageDetections(np.array([[30, 30, 39, 39], [4, 4, 15, 15]], np.float32),
                             np.array([0.7, 0.6]), np.zeros(2, np.int64)),
    }  # fmt: skip
    assert voc_class_ap(split, dets, 0, 0.5, use_07_metric=True) == pytest.approx(28 / 33)
    assert voc_class_ap(split, dets, 0, 0.5, use_07_metric=False) == pytest.approx(5 / 6)
    metrics = voc_metrics(split, dets)  # exact boxes: the same AP at every IoU threshold
    assert metrics["AP"] == pytest.approx(100 * 28 / 33) and metrics["AP75"] == pytest.approx(100 * 28 / 33)
    assert average_precision(np.array([0.5, 1.0]), np.array([1.0, 0.5]), False) == pytest.approx(0.75)


def _noisy_detections(split: DetSplit, seed: int, rle: bool = False) -> dict[str | int, ImageDetections]:
    """Ground truth jittered, some dropped or relabelled, plus random false positives; scores rounded to 3
    decimals and boxes to 0.1 px (the precision of detectron2's VOC result files)."""
    rng = np.random.default_rng(seed)
    out: dict[str | int, ImageDetections] = {}
    for rec in split.records:
        keep = rng.random(rec.num_objects) < 0.8
        boxes = rec.boxes[keep] + rng.normal(0, 2.0, (int(keep.sum()), 4)).astype(np.float32)
        labels = rec.labels[keep].copy()
        flip = rng.random(len(labels)) < 0.15
        labels[flip] = rng.integers(0, len(split.classes), int(flip.sum()))
        n_fp = int(rng.integers(0, 4))
        xy = rng.uniform(0, 40, (n_fp, 2))
        fp = np.concatenate([xy, xy + rng.uniform(8, 30, (n_fp, 2))], 1).astype(np.float32)
        boxes = np.round(np.concatenate([boxes, fp]).clip(0, [rec.width, rec.height] * 2), 1)
        labels = np.concatenate([labels, rng.integers(0, len(split.classes), n_fp)])
        scores = np.round(rng.uniform(0.05, 1.0, len(labels)), 3)
        masks = None
        if rle:
            from pycocotools import mask as mask_utils

            masks = []
            for b in boxes:
                m = np.zeros((rec.height, rec.width), np.uint8, order="F")
                m[int(b[1]) : int(np.ceil(b[3])), int(b[0]) : int(np.ceil(b[2]))] = 1
                masks.append(mask_utils.encode(m))
        out[rec.image_id] = ImageDetections(boxes, scores, labels.astype(np.int64), masks)
    return out


def test_voc_metrics_agree_with_detectron2_voc_evaluator(det_root: Path) -> None:
    pytest.importorskip("detectron2")
    if not detectron2_available():
        pytest.skip("detectron2 does not import")
    from detectron2.data import MetadataCatalog
    from detectron2.evaluation import PascalVOCDetectionEvaluator
    from detectron2.structures import Boxes, Instances

    test = load_voc(det_root, "test")
    dets = _noisy_detections(test, seed=3)
    name = f"augbench_test_voc_{abs(hash(str(det_root)))}"
    MetadataCatalog.get(name).set(
        thing_classes=list(test.classes), dirname=str(year_dir(det_root, "2007")), year=2007, split="test"
    )
    evaluator = PascalVOCDetectionEvaluator(name)
    evaluator.reset()
    for rec in test.records:
        det = dets[rec.image_id]
        inst = Instances((rec.height, rec.width))
        inst.pred_boxes = Boxes(torch.from_numpy(det.boxes))
        inst.scores = torch.from_numpy(det.scores)
        inst.pred_classes = torch.from_numpy(det.labels)
        evaluator.process([{"image_id": rec.image_id}], [{"instances": inst}])
    reference = evaluator.evaluate()["bbox"]
    ours = voc_metrics(test, dets)
    assert 0 < ours["AP50"] < 100
    for key in ("AP", "AP50", "AP75"):
        assert ours[key] == pytest.approx(reference[key], abs=1e-6)


# ------------------------------------------------------------------------------ COCO metrics


def test_coco_metrics_agree_with_pycocotools_and_detectron2(det_root: Path) -> None:
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    val = load_coco(det_root, "val2017")
    dets = _noisy_detections(val, seed=5, rle=True)
    ours = coco_metrics(val, dets, ("bbox", "segm"))
    # pycocotools directly, on results written here
    results = []
    for image_id, det in dets.items():
        for box, score, label, mask in zip(det.boxes, det.scores, det.labels, det.masks or [], strict=True):
            x0, y0, x1, y1 = (float(v) for v in box)
            item = {"image_id": image_id, "category_id": val.category_ids[label], "score": float(score)}
            results.append({**item, "bbox": [x0, y0, x1 - x0, y1 - y0], "segmentation": mask})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(annotation_file(det_root, "val2017")))
        for iou_type in ("bbox", "segm"):
            ev = COCOeval(gt, gt.loadRes(results), iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            for k, name in enumerate(("AP", "AP50", "AP75")):
                assert ours[f"{iou_type}_{name}"] == pytest.approx(ev.stats[k] * 100, abs=1e-9)
    assert 0 < ours["segm_AP50"] < 100 and 0 < ours["bbox_AP"] < 100
    empty = {
        rec.image_id: ImageDetections(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64), [])
        for rec in val.records
    }
    assert coco_metrics(val, empty, ("bbox",)) == {"bbox_AP": 0.0, "bbox_AP50": 0.0, "bbox_AP75": 0.0}
    # detectron2's COCOEvaluator on the same detections
    pytest.importorskip("detectron2")
    if not detectron2_available():
        return
    from detectron2.data import DatasetCatalog
    from detectron2.data.datasets import register_coco_instances
    from detectron2.evaluation import COCOEvaluator
    from detectron2.structures import Boxes, Instances
    from pycocotools import mask as mask_utils

    name = f"augbench_test_coco_{abs(hash(str(det_root)))}"
    register_coco_instances(
        name, {}, str(annotation_file(det_root, "val2017")), str(det_root / "coco" / "val2017")
    )
    DatasetCatalog.get(name)  # loading sets the dataset-id mapping the evaluator needs (as in training)
    evaluator = COCOEvaluator(name, ("bbox", "segm"), False)
    evaluator.reset()
    for rec in val.records:
        det = dets[rec.image_id]
        inst = Instances((rec.height, rec.width))
        inst.pred_boxes = Boxes(torch.from_numpy(det.boxes))
        inst.scores = torch.from_numpy(det.scores).float()
        inst.pred_classes = torch.from_numpy(det.labels)
        inst.pred_masks = torch.from_numpy(
            np.stack([mask_utils.decode(m) for m in det.masks or []]).astype(bool)
        )
        evaluator.process([{"image_id": rec.image_id}], [{"instances": inst}])
    with contextlib.redirect_stdout(io.StringIO()):
        reference = evaluator.evaluate()
    for iou_type in ("bbox", "segm"):
        for name in ("AP", "AP50", "AP75"):
            assert ours[f"{iou_type}_{name}"] == pytest.approx(reference[iou_type][name], abs=1e-3)


def test_a_task_object_is_what_the_registry_builds() -> None:
    task = build_dense_task("instseg/coco", "c4_1x@torchvision")
    assert task == DenseTransferTask("instseg/coco", "c4_1x", "torchvision")
    assert replace(task, backend="detectron2").name == "instseg/coco:c4_1x@detectron2"


def test_without_the_optional_stacks(
    det_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No detectron2: auto picks torchvision and an explicit @detectron2 fails with one line; no
    pycocotools: the task fails naming the extra (before any training)."""
    import tasks.detection.tasks as dense

    monkeypatch.setattr(dense, "detectron2_available", lambda: False)
    assert resolve_backend("auto") == "torchvision"
    backbone = build_backbone("narrow_resnet18")
    ctx = TaskContext(det_root, True, "smoke", torch.device("cpu"), det_root, 0, "x", progress=False)
    p = build_protocol("det/voc07", None, "smoke")
    with pytest.raises(BenchError, match=r"needs detectron2.*det/voc07@torchvision"):
        dense.run_protocol(DenseTransferTask("det/voc07", "c4_24k", "detectron2"), p, backbone, ctx)
    monkeypatch.setitem(sys.modules, "pycocotools", None)
    with pytest.raises(BenchError, match=r"pip install 'augbench\[det\]'"):
        dense.run_protocol(DenseTransferTask("det/voc07", "c4_24k", "torchvision"), p, backbone, ctx)


@pytest.mark.parametrize(
    ("task", "variant", "profile", "backbone"),
    [
        ("det/voc07", None, "paper", "resnet50"),
        ("instseg/coco", "c4_2x", "smoke", "narrow_resnet18"),
        ("instseg/coco", "fpn_1x", "smoke", "narrow_resnet18"),
        ("instseg/coco", "fpn_1x", "paper", "resnet50"),
    ],
)
def test_both_backends_build_the_same_architecture(
    task: str, variant: str | None, profile: str, backbone: str
) -> None:
    """Generated detectron2 config and torchvision builder agree on the model: the same parameter count up
    to torchvision's background outputs (the paper R50-C4 Faster R-CNN has detectron2's 33.2M)."""
    pytest.importorskip("detectron2")
    if not detectron2_available():
        pytest.skip("detectron2 does not import")
    from detectron2.modeling import build_model

    from tasks.detection.d2_config import build_cfg
    from tasks.detection.d2_model import register

    register()
    p = build_protocol(task, variant, profile)
    ctx = TaskContext(Path("."), True, profile, torch.device("cpu"), Path("."), 0, "x", progress=False)
    d2 = build_model(build_cfg(p, build_backbone(backbone), 20, ["unused"], "unused", Path("."), ctx))
    tv = build_tv_detector(p, backbone, 20)
    d2_count, tv_count = (sum(q.numel() for q in m.parameters()) for m in (d2, tv))
    # torchvision's predictors also have outputs for the background class: 4 box deltas and a mask logit
    box_in = tv.roi_heads.box_predictor.bbox_pred.in_features
    extra = 4 * (box_in + 1)
    if p.mask:
        extra += tv.roi_heads.mask_predictor.mask_fcn_logits.in_channels + 1
    assert tv_count - d2_count == extra
    if task == "det/voc07":
        assert round(d2_count / 1e6, 1) == 33.2
