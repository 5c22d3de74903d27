"""Segmentation end to end (slow): ``bench run --recipe moco --tasks seg/...`` on the smoke stand-ins.

* the three tasks run through the CLI on the session's MoCo smoke pretraining and write result files;
* each reported mIoU / mAcc / aAcc equals a confusion-matrix reference computed here from the predictions
  the task saved and the label files on disk (read with PIL, independently of mmseg);
* learning signal: the MoCo-initialised FCN beats the majority-class predictor on the VOC12aug stand-in
  by at least :data:`MARGIN` mIoU points (measured: 34.3 vs 14.5, see docs/segmentation.md);
* a killed run resumes from its plain-tensor state and ends where an uninterrupted run ends.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from bench.cli import main
from bench.harness import load_run_backbone
from tasks.base import TaskContext
from tasks.datasets.registry import DATASETS
from tasks.features import state_dict_digest
from tasks.registry import TASKS
from tasks.segmentation.protocols import DATASETS as SEG_DATASETS
from tasks.segmentation.protocols import SMOKE, SegmentationTask
from tests.tier import MOCO_TIER

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]
SEG_TASKS = ("seg/voc12aug", "seg/ade20k", "seg/cityscapes")
MARGIN = 10.0  # mIoU points over the majority-class predictor on the VOC12aug stand-in


@pytest.fixture(scope="module")
def seg_results(moco_smoke_run: Path, smoke_root: Path, smoke_runs: Path) -> dict[str, dict[str, Any]]:
    pytest.importorskip("mmseg")
    assert main(["data", "synth", "--root", str(smoke_root), "--datasets", "voc12aug,cityscapes,ade20k"]) == 0
    argv = ["run", "--recipe", "moco", "--tasks", ",".join(SEG_TASKS), *MOCO_TIER, "--no-progress"]
    assert main([*argv, "--data-root", str(smoke_root), "--runs-dir", str(smoke_runs)]) == 0
    return {
        task: json.loads((moco_smoke_run / "results" / f"{task.replace('/', '-')}.json").read_text())
        for task in SEG_TASKS
    }


def confusion(preds: list[np.ndarray], labels: list[np.ndarray], num_classes: int) -> np.ndarray:
    """Pixel confusion matrix ``[gt, pred]`` over pixels whose label is not 255."""
    conf = np.zeros((num_classes, num_classes), np.int64)
    for pred, label in zip(preds, labels, strict=True):
        assert pred.shape == label.shape
        keep = label != 255
        pairs = label[keep].astype(np.int64) * num_classes + pred[keep].astype(np.int64)
        conf += np.bincount(pairs, minlength=num_classes**2).reshape(num_classes, num_classes)
    return conf


def scores(conf: np.ndarray) -> dict[str, float]:
    """mIoU / mAcc over classes present in the ground truth or predictions; aAcc over all pixels (in %)."""
    tp = np.diag(conf).astype(np.float64)
    gt, pred = conf.sum(1), conf.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou, acc = tp / (gt + pred - tp), tp / gt
    return {"mIoU": np.nanmean(iou) * 100, "mAcc": np.nanmean(acc) * 100, "aAcc": tp.sum() / gt.sum() * 100}


def read_split(task: str, root: Path) -> tuple[list[np.ndarray], list[str]]:
    """Ground-truth maps of the task's test split in the model's label space, and the image stems."""
    ds = SEG_DATASETS[task.split("/")[1]]
    labels, stems = [], []
    for sample in ds.samples(root, ds.test_split):
        with Image.open(sample.label) as img:
            label = np.asarray(img).astype(np.int64)
        if ds.reduce_zero_label:  # ADE20K: 0 ("other") is ignored, class k is k - 1
            label = np.where(label == 0, 255, label - 1)
        labels.append(label)
        stems.append(Path(sample.image).stem)
    return labels, stems


@pytest.mark.parametrize("task", SEG_TASKS)
def test_reported_metrics_equal_a_confusion_matrix_reference(
    seg_results: dict[str, dict[str, Any]], smoke_root: Path, task: str
) -> None:
    doc = seg_results[task]
    ds = SEG_DATASETS[task.split("/")[1]]
    assert doc["task"]["name"] == task and doc["data"]["source"] == "synthetic"
    assert doc["details"]["weights_check"]["backbone_tensors_loaded"] == 120  # every narrow ResNet-18 tensor
    assert doc["details"]["trained_iterations"] == SMOKE[ds.name].iterations
    labels, stems = read_split(task, smoke_root)
    predictions = Path(doc["details"]["predictions_dir"])
    preds = []
    for stem in stems:
        with Image.open(predictions / f"{stem}.png") as img:
            pred = np.asarray(img).astype(np.int64)
        preds.append(pred - 1 if ds.reduce_zero_label else pred)  # saved in annotation ids (ADE: 1..150)
    ref = scores(confusion(preds, labels, ds.num_classes))
    for key in ("mIoU", "mAcc", "aAcc"):
        assert abs(doc["metrics"][key] - ref[key]) <= 0.005 + 1e-6, (key, doc["metrics"][key], ref[key])
    per_class = doc["details"]["per_class_iou"]
    assert len(per_class) == ds.num_classes
    present = [v for v in per_class.values() if v is not None]
    assert abs(np.mean(present) - ref["mIoU"]) < 1e-3


def test_smoke_models_run_channels_last(seg_results: dict[str, dict[str, Any]]) -> None:
    """The smoke setting's NHWC layout reaches the model mmseg trained (the FCN: 1.4x faster on CPU)."""
    for task, result in seg_results.items():
        assert SMOKE[task.split("/")[1]].channels_last
        assert result["details"]["conv_weight_layout"] == "channels_last", task


def test_moco_fcn_beats_the_majority_class(seg_results: dict[str, dict[str, Any]], smoke_root: Path) -> None:
    """The FCN fine-tuned from MoCo must beat predicting the most frequent training class everywhere."""
    ds = SEG_DATASETS["voc12aug"]
    counts = np.zeros(256, np.int64)
    for split in ds.train_splits:
        for sample in ds.samples(smoke_root, split):
            with Image.open(sample.label) as img:
                counts += np.bincount(np.asarray(img).reshape(-1), minlength=256)
    counts[255] = 0
    majority = int(counts.argmax())
    labels, _ = read_split("seg/voc12aug", smoke_root)
    baseline = scores(confusion([np.full_like(lab, majority) for lab in labels], labels, ds.num_classes))
    miou = seg_results["seg/voc12aug"]["metrics"]["mIoU"]
    assert miou >= baseline["mIoU"] + MARGIN, (miou, baseline["mIoU"])


def test_a_killed_run_resumes_where_it_stopped(
    moco_smoke_run: Path, smoke_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("mmseg")
    from tasks.segmentation import mmseg_parts

    assert main(["data", "synth", "--root", str(smoke_root), "--datasets", "voc12aug"]) == 0
    base = TASKS.get("seg/voc12aug")
    assert isinstance(base, SegmentationTask)
    short = dataclasses.replace(SMOKE["voc12aug"], iterations=24, checkpoint_every=12)
    task = dataclasses.replace(base, settings={"smoke": short})
    backbone = load_run_backbone(moco_smoke_run, "narrow_resnet18", torch.device("cpu"))

    def context(work: Path) -> TaskContext:
        return TaskContext(
            data_root=smoke_root, synthetic=False, profile="smoke", device=torch.device("cpu"),
            cache_dir=tmp_path / "cache", seed=0, weights_digest=state_dict_digest(backbone.net),
            progress=False, work_dir=work,
        )  # fmt: skip

    fresh = task.run(backbone, context(tmp_path / "fresh"))
    save = mmseg_parts.PlainStateCheckpointHook.after_train_iter

    def save_then_die(
        self: Any, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        save(self, runner, batch_idx, data_batch, outputs)
        if runner.iter + 1 == 12:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(mmseg_parts.PlainStateCheckpointHook, "after_train_iter", save_then_die)
        with pytest.raises(KeyboardInterrupt):
            task.run(backbone, context(tmp_path / "killed"))
    (state_file,) = (tmp_path / "killed").rglob("state.pt")
    state = torch.load(state_file, weights_only=True)  # plain tensors and containers only
    assert state["iter"] == 12
    resumed = task.run(backbone, context(tmp_path / "killed"))
    assert resumed.details["resumed_from"] == 12 and resumed.details["trained_iterations"] == 12
    assert resumed.metrics == fresh.metrics
    again = task.run(backbone, context(tmp_path / "killed"))  # finished: evaluated again, not retrained
    assert again.details["trained_iterations"] == 0 and again.metrics == fresh.metrics
    assert DATASETS.get("voc12aug").verify(smoke_root) == []
