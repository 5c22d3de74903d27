"""External checkpoints: formats, key prefixes, partial loads, refusal of pickled code."""

from __future__ import annotations

import collections
import pickle
from pathlib import Path

import pytest
import torch
import torchvision

from core.errors import CheckpointError
from pretrain.backbones import build_backbone
from pretrain.checkpoint import export_backbone
from pretrain.external import best_prefix, load_external


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture()
def source() -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_backbone("narrow_resnet18").net
    with torch.no_grad():  # non-default BN statistics, so a load is visible everywhere
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
    return net


def test_safetensors_roundtrip(tmp_path: Path, source: torch.nn.Module) -> None:
    path = tmp_path / "backbone.safetensors"
    export_backbone(path, source, {"recipe": "x"})
    target = build_backbone("narrow_resnet18").net
    report = load_external(target, path)
    assert _same(source, target) and report.prefix == "" and not report.missing and not report.ignored
    assert len(report.loaded) == len(source.state_dict())
    n = len(source.state_dict())
    assert len(report.sha256) == 64 and f"loaded {n}/{n} backbone tensors" in report.summary()


def test_torchvision_state_dict_ignores_classifier(tmp_path: Path) -> None:
    torch.manual_seed(1)
    tv = torchvision.models.resnet18(weights=None)  # has fc.weight / fc.bias (1000 classes)
    path = tmp_path / "resnet18.pth"
    torch.save(tv.state_dict(), path)
    target = build_backbone("resnet18").net
    report = load_external(target, path)
    assert report.ignored == ["fc.bias", "fc.weight"]
    assert all(torch.equal(target.state_dict()[k], tv.state_dict()[k]) for k in report.loaded)


def test_moco_style_training_checkpoint(tmp_path: Path, source: torch.nn.Module) -> None:
    """MoCo's main_moco.py saves {'epoch', 'arch', 'state_dict' (DDP: module.encoder_q/k.*), 'optimizer'}."""
    state = collections.OrderedDict()
    for k, v in source.state_dict().items():
        state[f"module.encoder_q.{k}"] = v.clone()
        state[f"module.encoder_k.{k}"] = torch.zeros_like(v)  # the key encoder must NOT be picked
    state["module.encoder_q.fc.0.weight"] = torch.randn(4, 4)
    state["module.queue"] = torch.randn(4, 8)
    path = tmp_path / "checkpoint_0199.pth.tar"
    torch.save({"epoch": 200, "arch": "resnet50", "state_dict": state, "optimizer": {}}, path)
    target = build_backbone("narrow_resnet18").net
    report = load_external(target, path)
    assert report.prefix == "module.encoder_q."  # ties with encoder_k: the one found first wins
    assert _same(source, target)
    assert "module.encoder_q.fc.0.weight" in report.ignored and "module.queue" in report.ignored


def test_prefix_choice_prefers_most_matches_then_shortest() -> None:
    own = {"conv1.weight", "bn1.weight"}
    keys = ["backbone.conv1.weight", "backbone.bn1.weight", "head.conv1.weight", "conv1.weight"]
    assert best_prefix(keys, own) == "backbone."
    assert best_prefix(["a.conv1.weight", "conv1.weight"], own) == ""
    assert best_prefix(["xconv1.weight"], own) == ""  # must be a whole key component


def test_partial_loads_are_errors_unless_allowed(tmp_path: Path, source: torch.nn.Module) -> None:
    state = source.state_dict()
    del state["layer4.1.conv2.weight"]
    state["fc.weight"] = torch.zeros(3)
    state["conv1.weight"] = torch.zeros(1, 3, 3, 3)  # wrong shape
    path = tmp_path / "partial.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"1 missing \(e\.g\. layer4\.1\.conv2\.weight\).*1 shape"):
        load_external(build_backbone("narrow_resnet18").net, path)
    target = build_backbone("narrow_resnet18").net
    before = target.state_dict()["conv1.weight"].clone()
    report = load_external(target, path, allow_partial=True)
    assert report.missing == ["layer4.1.conv2.weight"] and report.mismatched == ["conv1.weight"]
    assert torch.equal(target.state_dict()["conv1.weight"], before)  # left random
    key = "layer1.0.conv1.weight"
    assert torch.equal(target.state_dict()[key], source.state_dict()[key])
    assert "NOT loaded: 1 missing, 1 shape-mismatched" in report.summary()


def test_missing_batch_counters_are_exempt(tmp_path: Path, source: torch.nn.Module) -> None:
    state = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "old.pth"
    torch.save(state, path)
    report = load_external(build_backbone("narrow_resnet18").net, path)
    assert not report.missing and len(report.exempt_missing) == 20


class Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("pwned",))


def test_pickled_code_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "evil.pth"
    with open(path, "wb") as fh:
        pickle.dump({"state_dict": {"conv1.weight": torch.zeros(1)}, "x": Evil()}, fh)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_external(build_backbone("narrow_resnet18").net, path)
    assert "pwned" not in capsys.readouterr().out


def test_wrong_architecture_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(CheckpointError, match="shape-mismatched"):
        load_external(build_backbone("resnet50").net, path)
    with pytest.raises(CheckpointError, match="not found"):
        load_external(build_backbone("resnet50").net, tmp_path / "nope.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot load"):
        load_external(build_backbone("resnet50").net, garbage)
    torch.save({"epoch": 3}, tmp_path / "nostate.pth")
    with pytest.raises(CheckpointError, match="no state dict"):
        load_external(build_backbone("resnet50").net, tmp_path / "nostate.pth")
