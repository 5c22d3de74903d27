"""Segmentation tasks: mmcv.ops stand-in, backbone mapping, config generation, metric, weight check, errors.

Fast tests (no training); the end-to-end runs are in ``test_segmentation_e2e.py`` (slow).
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from bench.cli import main
from core.errors import BenchError, CheckpointError
from pretrain.backbones import build_backbone
from pretrain.checkpoint import export_backbone
from tasks.datasets import voc_seg
from tasks.datasets.segmaps import read_label_map
from tasks.datasets.synth.writer import ensure_synthetic
from tasks.registry import TASKS, resolve_tasks, task_groups
from tasks.segmentation import mmcv_compat
from tasks.segmentation.protocols import ADE20K, CITYSCAPES, PAPER, SMOKE, VOC12AUG

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def mm() -> None:
    pytest.importorskip("mmseg")
    from tasks.segmentation.mmseg_backend import load_mmseg

    load_mmseg("test")


# ------------------------------------------------------------------------------------ registry


def test_tasks_are_registered_in_their_groups() -> None:
    names = ["seg/voc12aug", "seg/cityscapes", "seg/ade20k"]
    groups = task_groups()
    assert groups["seg"] == names and groups["transfer"][-3:] == names  # after det/voc07, instseg/coco
    assert set(names) <= set(groups["all"])
    assert [t.name for t in resolve_tasks("seg")] == names
    task = TASKS.get("seg/ade20k")
    assert task.primary == "mIoU" and [m.name for m in task.metrics] == ["mIoU", "mAcc", "aAcc"]
    assert task.protocol("paper")["iterations"] == 160_000 and task.protocol("paper")["model"] == "upernet"
    assert task.protocol("smoke")["model"] == "upernet"


def test_paper_settings_follow_the_mmseg_configs() -> None:
    voc, city, ade = PAPER["voc12aug"], PAPER["cityscapes"], PAPER["ade20k"]
    assert (voc.model, voc.crop_size, voc.iterations, voc.batch_size, voc.lr) == (
        "fcn",
        (512, 512),
        20_000,
        16,
        0.01,
    )
    assert (city.model, city.crop_size, city.iterations, city.test_mode) == (
        "fcn",
        (769, 769),
        40_000,
        "slide",
    )
    assert (ade.model, ade.crop_size, ade.iterations) == ("upernet", (512, 512), 160_000)
    for s in PAPER.values():
        assert (s.momentum, s.weight_decay, s.poly_power, s.min_lr, s.precision) == (
            0.9,
            5e-4,
            0.9,
            1e-4,
            "fp32",
        )
    for name, s in SMOKE.items():
        assert s.model == PAPER[name].model and s.iterations <= 400


# ------------------------------------------------------------------------------------ mmcv.ops stand-in


def test_point_sample_is_bilinear_sampling_in_unit_coordinates() -> None:
    torch.manual_seed(0)
    image = torch.randn(2, 3, 5, 7)
    points = torch.rand(2, 11, 2) * 0.8 + 0.1  # (x, y) in [0, 1]
    out = mmcv_compat.point_sample(image, points)
    assert out.shape == (2, 3, 11)
    # reference: align_corners=False maps x in [0, 1] to pixel coordinate x * W - 0.5
    for n in range(2):
        for p in range(11):
            x = points[n, p, 0].item() * 7 - 0.5
            y = points[n, p, 1].item() * 5 - 0.5
            x0, y0 = int(np.floor(x)), int(np.floor(y))
            wx, wy = x - x0, y - y0

            def pix(yy: int, xx: int, n: int = n) -> torch.Tensor:
                inside = 0 <= yy < 5 and 0 <= xx < 7
                return image[n, :, yy, xx] if inside else torch.zeros(3)

            expected = (
                pix(y0, x0) * (1 - wx) * (1 - wy)
                + pix(y0, x0 + 1) * wx * (1 - wy)
                + pix(y0 + 1, x0) * (1 - wx) * wy
                + pix(y0 + 1, x0 + 1) * wx * wy
            )
            torch.testing.assert_close(out[n, :, p], expected, rtol=1e-5, atol=1e-5)
    grid = points.view(2, 11, 1, 2)
    torch.testing.assert_close(mmcv_compat.point_sample(image, grid)[..., 0], out)


def test_stand_in_module_raises_for_compiled_ops() -> None:
    module = mmcv_compat.build_module()
    assert module.point_sample is mmcv_compat.point_sample
    with pytest.raises(ModuleNotFoundError, match="compiled mmcv op"):
        module.CrissCrossAttention  # noqa: B018
    with pytest.raises(RuntimeError, match="install the full `mmcv`"):
        module.sigmoid_focal_loss(torch.zeros(1), torch.zeros(1))


def test_install_leaves_a_full_mmcv_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "mmcv.ops", raising=False)
    monkeypatch.setattr(mmcv_compat, "full_mmcv_available", lambda: True)
    assert mmcv_compat.install() is False
    assert "mmcv.ops" not in sys.modules


def test_core_runs_without_the_seg_stack_and_seg_tasks_name_the_extra(tmp_path: Path) -> None:
    """With mmseg/mmengine/mmcv unimportable: the CLI lists tasks, a seg task fails with one line."""
    root = ensure_synthetic(tmp_path / "data", ["voc12aug"], "tiny")
    ckpt = tmp_path / "random.safetensors"
    export_backbone(ckpt, build_backbone("narrow_resnet18").net, {})
    code = f"""
import sys
for name in ("mmseg", "mmengine", "mmcv"):
    sys.modules[name] = None
from bench.cli import main
assert main(["ls", "tasks", "--data-root", {str(root)!r}]) == 0
argv = ["eval", "--checkpoint", {str(ckpt)!r}, "--backbone", "narrow_resnet18", "--tasks", "seg/voc12aug"]
argv += ["--data-root", {str(root)!r}, "--runs-dir", {str(tmp_path / "runs")!r}, "--no-progress"]
sys.exit(main(argv))
"""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert "seg/voc12aug" in proc.stdout
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("bench: error:")]
    assert "pip install 'augbench[seg]'" in line
    assert not list((tmp_path / "runs").rglob("results/*.json"))


def _env(tmp_path: Path) -> dict[str, str]:
    import os

    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "BENCH_CACHE": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
    }


# ------------------------------------------------------------------------------------ backbone mapping


def _mmseg_backbone(name: str, model: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS

    from tasks.segmentation.mmseg_config import backbone_config

    torch.manual_seed(0)
    ours = build_backbone(name).net.eval()
    cfg, _ = backbone_config(ours, model, dict(type="BN", requires_grad=True))
    with DefaultScope.overwrite_default_scope("mmseg"):
        theirs = MODELS.build(cfg)
    theirs.eval()  # mmseg's ResNet.train() returns None
    theirs.load_state_dict(ours.state_dict(), strict=True)  # torchvision keys, no renaming
    return ours, theirs


def _torchvision_stages(net: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    outs = []
    for i in range(1, 5):
        x = getattr(net, f"layer{i}")(x)
        outs.append(x)
    return outs


@pytest.mark.parametrize("name", ["narrow_resnet18", "resnet18"])
def test_mmseg_backbone_equals_the_torchvision_backbone(mm: None, name: str) -> None:
    ours, theirs = _mmseg_backbone(name, "upernet")  # undilated: the same function as torchvision's
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(_torchvision_stages(ours, x), theirs(x), strict=True):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    ("name", "kind"), [("narrow_resnet18", "AugbenchCifarStemResNet"), ("resnet50", "ResNet")]
)
def test_fcn_backbones_have_output_stride_8(mm: None, name: str, kind: str) -> None:
    _, theirs = _mmseg_backbone(name, "fcn")
    assert type(theirs).__name__ in (kind, "CifarStemResNet")
    with torch.no_grad():
        shapes = [tuple(f.shape[-2:]) for f in theirs(torch.randn(1, 3, 64, 64))]
    assert shapes[-1] == (8, 8)
    if name == "resnet50":  # D8: stages 3-4 dilated, not strided
        assert shapes == [(16, 16), (8, 8), (8, 8), (8, 8)]
        assert theirs.layer4[0].conv2.dilation == (2, 2) and theirs.layer4[1].conv2.dilation == (4, 4)


def test_generated_configs(mm: None, tmp_path: Path) -> None:
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS

    from tasks.segmentation.mmseg_config import build_config, seg_uses_bf16

    net = build_backbone("resnet50").net
    voc = build_config(VOC12AUG, PAPER["voc12aug"], net, tmp_path / "voc", tmp_path / "w.pth")
    model = voc["model"]
    assert model["backbone"]["type"] == "ResNet" and model["backbone"]["dilations"] == (1, 1, 2, 4)
    assert model["backbone"]["init_cfg"] == dict(type="Pretrained", checkpoint=str(tmp_path / "w.pth"))
    assert model["decode_head"]["type"] == "FCNHead" and model["decode_head"]["in_channels"] == 2048
    assert model["auxiliary_head"]["in_channels"] == 1024 and model["decode_head"]["num_classes"] == 21
    assert model["data_preprocessor"]["mean"] == [123.675, 116.28, 103.53]
    assert model["data_preprocessor"]["std"] == [58.395, 57.12, 57.375]
    assert model["data_preprocessor"]["bgr_to_rgb"] is True
    train = voc["train_dataloader"]
    assert train["batch_size"] == 16 and train["dataset"]["type"] == "ConcatDataset"
    assert [d["ann_file"] for d in train["dataset"]["datasets"]] == [
        "ImageSets/Segmentation/train.txt",
        "ImageSets/Segmentation/aug.txt",
    ]
    assert voc["optim_wrapper"]["optimizer"] == dict(type="SGD", lr=0.01, momentum=0.9, weight_decay=5e-4)
    assert voc["param_scheduler"][0]["end"] == 20_000 and voc["default_hooks"]["checkpoint"] is None
    city = build_config(CITYSCAPES, PAPER["cityscapes"], net, tmp_path, tmp_path / "w.pth")
    assert city["model"]["test_cfg"] == dict(mode="slide", crop_size=(769, 769), stride=(513, 513))
    ade = build_config(ADE20K, PAPER["ade20k"], net, tmp_path, tmp_path / "w.pth")
    assert ade["model"]["decode_head"]["in_channels"] == [256, 512, 1024, 2048]
    assert (
        ade["model"]["backbone"]["strides"] == (1, 2, 2, 2)
        and ade["model"]["decode_head"]["num_classes"] == 150
    )
    assert ade["test_dataloader"]["dataset"]["reduce_zero_label"] is True
    for cfg in (voc, ade):
        cfg["model"]["backbone"].pop("init_cfg")
        with DefaultScope.overwrite_default_scope("mmseg"):
            MODELS.build(cfg["model"])
    smoke = build_config(ADE20K, SMOKE["ade20k"], build_backbone("narrow_resnet18").net, tmp_path, tmp_path)
    assert smoke["model"]["backbone"]["type"] == "AugbenchCifarStemResNet"
    assert smoke["model"]["decode_head"]["in_channels"] == [32, 64, 128]  # CIFAR stem: stages 2-4
    assert smoke["model"]["decode_head"]["in_index"] == [1, 2, 3]
    # smoke precision auto: bf16 autocast only where the CPU computes bf16 natively (core/hardware.py)
    bf16 = seg_uses_bf16("auto")
    assert smoke["optim_wrapper"]["type"] == ("AugbenchBf16OptimWrapper" if bf16 else "OptimWrapper")
    narrow = build_backbone("narrow_resnet18").net
    fp32 = build_config(ADE20K, replace(SMOKE["ade20k"], precision="fp32"), narrow, tmp_path, tmp_path)
    assert fp32["optim_wrapper"]["type"] == "OptimWrapper"


def test_registration_is_idempotent(mm: None) -> None:
    from mmseg.registry import MODELS, OPTIM_WRAPPERS

    from tasks.segmentation import mmseg_config, mmseg_parts
    from tasks.segmentation.mmseg_backend import load_mmseg

    load_mmseg("again")
    assert mmseg_config.CIFAR_STEM == mmseg_parts.CIFAR_STEM_RESNET
    assert MODELS.get(mmseg_parts.CIFAR_STEM_RESNET) is mmseg_parts.CifarStemResNet
    assert OPTIM_WRAPPERS.get(mmseg_parts.BF16_OPTIM_WRAPPER) is mmseg_parts.Bf16OptimWrapper


# ------------------------------------------------------------------------------------ weight check


class _FakeRunner:
    def __init__(self, backbone: torch.nn.Module) -> None:
        self.model = torch.nn.Module()
        self.model.backbone = backbone


def test_weight_check_names_what_did_not_load(mm: None) -> None:
    from tasks.segmentation.mmseg_parts import WeightCheckHook

    _, theirs = _mmseg_backbone("narrow_resnet18", "fcn")
    state = {k: v.clone() for k, v in theirs.state_dict().items()}
    hook = WeightCheckHook(state, "w.pth")
    hook.before_train(_FakeRunner(theirs))
    assert hook.report["backbone_tensors_loaded"] == len(state)
    partial = {k: v for k, v in state.items() if not k.startswith("layer4.1.")}
    partial["fc.weight"] = torch.zeros(3)
    changed = dict(state, **{"conv1.weight": state["conv1.weight"] + 1})
    with pytest.raises(
        CheckpointError, match=r"not in the file: layer4\.1\.bn1\.bias.*not in the model: fc\.weight"
    ):
        WeightCheckHook(partial, "w.pth").before_train(_FakeRunner(theirs))
    with pytest.raises(CheckpointError, match=r"not loaded \(shape or value differs\): conv1\.weight"):
        WeightCheckHook(changed, "w.pth").before_train(_FakeRunner(theirs))


# ------------------------------------------------------------------------------------ metric


def confusion_miou(
    preds: list[np.ndarray], labels: list[np.ndarray], num_classes: int, ignore: int = 255
) -> dict[str, Any]:
    """Reference: one confusion matrix over all pixels; IoU_c = TP / (TP + FP + FN) over classes present in
    the ground truth or the predictions (others are NaN and left out of the mean)."""
    conf = np.zeros((num_classes, num_classes), np.int64)
    for pred, label in zip(preds, labels, strict=True):
        keep = label != ignore
        conf += np.bincount(label[keep] * num_classes + pred[keep], minlength=num_classes**2).reshape(
            num_classes, num_classes
        )
    tp = np.diag(conf).astype(np.float64)
    gt, pr = conf.sum(1), conf.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = tp / (gt + pr - tp)
        acc = tp / gt
    return {
        "mIoU": np.nanmean(iou) * 100,
        "mAcc": np.nanmean(acc) * 100,
        "aAcc": tp.sum() / gt.sum() * 100,
        "iou": iou,
    }


def test_iou_metric_matches_a_confusion_matrix(mm: None) -> None:
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    from tasks.segmentation.mmseg_parts import PerClassIoUMetric

    rng = np.random.default_rng(0)
    names = [f"c{k}" for k in range(6)]
    preds, labels = [], []
    metric = PerClassIoUMetric()
    metric.dataset_meta = {"classes": names}
    for _ in range(5):
        label = rng.choice([0, 1, 2, 4, 255], size=(9, 13), p=[0.4, 0.2, 0.2, 0.1, 0.1])
        pred = np.where(
            rng.random((9, 13)) < 0.6, np.where(label == 255, 0, label), rng.integers(0, 6, (9, 13))
        )
        preds.append(pred)
        labels.append(label)
        sample = SegDataSample()
        sample.pred_sem_seg = PixelData(data=torch.from_numpy(pred)[None])
        sample.gt_sem_seg = PixelData(data=torch.from_numpy(label)[None])
        metric.process({}, [sample.to_dict()])
    result = metric.evaluate(5)
    ref = confusion_miou(preds, labels, 6)
    for key in ("mIoU", "mAcc", "aAcc"):
        assert abs(result[f"seg/{key}"] - ref[key]) <= 0.005 + 1e-9  # mmseg rounds to 0.01
    for name, value in zip(names, ref["iou"], strict=True):
        got = metric.last["per_class_iou"][name]
        assert (got is None) if np.isnan(value) else abs(got - value * 100) < 1e-3


# ------------------------------------------------------------------------------------ bad input via the CLI


@pytest.fixture
def eval_argv(tmp_path: Path) -> list[str]:
    ckpt = tmp_path / "random.safetensors"
    export_backbone(ckpt, build_backbone("narrow_resnet18").net, {})
    return [
        "eval",
        "--checkpoint",
        str(ckpt),
        "--backbone",
        "narrow_resnet18",
        "--runs-dir",
        str(tmp_path / "runs"),
    ]


def _run_bad(argv: list[str], root: Path, task: str, capsys: pytest.CaptureFixture[str]) -> str:
    code = main([*argv, "--tasks", task, "--data-root", str(root), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    (line,) = [x for x in err.splitlines() if x.startswith("bench: error:")]
    assert not list(Path(argv[-1]).rglob("results/*.json"))
    return line


def test_missing_dataset_fails_in_one_line(
    mm: None, eval_argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    line = _run_bad(eval_argv, tmp_path / "empty", "seg/ade20k", capsys)
    assert "ade20k" in line and "ADEChallengeData2016" in line


@pytest.mark.parametrize("fault", ["size", "ids", "absent"])
def test_bad_voc_data_fails_in_one_line(
    mm: None, eval_argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str], fault: str
) -> None:
    root = ensure_synthetic(tmp_path / "data", ["voc12aug"], "tiny")
    (sample, *_) = voc_seg.voc_samples(root, "aug")
    labels = read_label_map(sample.label)
    if fault == "size":
        Image.fromarray(labels[:, :-5]).save(sample.label)
    elif fault == "ids":
        Image.fromarray(np.where(labels == 0, 42, labels).astype(np.uint8)).save(sample.label)
    else:
        path = root / voc_seg.VOC2012_DIR / "ImageSets" / "Segmentation" / "train.txt"
        path.write_text(path.read_text() + "2012_424242\n")
    line = _run_bad(eval_argv, root, "seg/voc12aug", capsys)
    expected = {
        "size": "but its image",
        "ids": "[42] outside the valid ids 0..20 and 255",
        "absent": "2012_424242",
    }
    assert expected[fault] in line
    if fault != "absent":
        assert sample.label in line


def test_missing_extra_error_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.segmentation.mmseg_backend import load_mmseg

    monkeypatch.setitem(sys.modules, "mmseg", None)
    monkeypatch.setitem(sys.modules, "mmseg.models", None)
    with pytest.raises(
        BenchError,
        match=r"seg/ade20k needs the optional package 'mmsegmentation': pip install 'augbench\[seg\]'",
    ):
        load_mmseg("seg/ade20k")


class _Arbitrary:
    """A pickled object a weights-only load must refuse."""


def test_state_files_load_without_unpickling_objects(mm: None, tmp_path: Path) -> None:
    from tasks.segmentation.mmseg_parts import STATE_FORMAT, read_state

    path = tmp_path / "state.pt"
    torch.save({"format": STATE_FORMAT, "fingerprint": "a", "iter": 3, "model": {"w": torch.ones(2)}}, path)
    assert read_state(path, "a")["iter"] == 3
    with pytest.raises(CheckpointError, match="another task configuration"):
        read_state(path, "b")
    torch.save({"format": STATE_FORMAT, "fingerprint": "a", "object": _Arbitrary()}, path)
    with pytest.raises(CheckpointError, match="cannot load segmentation state"):
        read_state(path, "a")
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot load segmentation state"):
        read_state(path, "a")
    torch.save({"iter": 3}, path)
    with pytest.raises(CheckpointError, match="not an augbench segmentation state"):
        read_state(path, "a")
