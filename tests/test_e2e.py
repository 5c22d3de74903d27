"""End to end through the `bench` CLI on synthetic data in the real on-disk layouts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.cli import main

FAST = ["--set", "train.batch_size=32", "--set", "train.epochs=1", "--no-progress"]


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    assert main(["data", "synth", "--root", str(root), "--scale", "tiny"]) == 0
    return root


def run_cli(*argv: str) -> int:
    return main(["run", "--recipe", "moco", "--tasks", "cifar10", *argv])


def test_run_writes_results_and_leaderboard(
    tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    assert run_cli("--data-root", str(tiny_root), "--runs-dir", str(runs), "--seeds", "0,1", *FAST) == 0
    out = capsys.readouterr()
    assert f"leaderboard: {runs / 'LEADERBOARD.md'}" in out.out
    assert "SYNTHETIC stand-ins" in out.err  # a data root holding `bench data synth` output says so
    files = sorted(runs.glob("moco/*/results/linear-cifar10.json"))
    assert len(files) == 2
    doc = json.loads(files[0].read_text())
    assert doc["data"]["source"] == "synthetic"
    assert doc["data"]["datasets"] == {"imagenet": "synthetic", "cifar10": "synthetic"}
    assert doc["task"]["name"] == "linear/cifar10" and doc["task"]["version"] >= 1
    assert doc["task"]["protocol"]["name"] == "linear-cached"
    assert doc["profile"] == "smoke" and doc["seed"] in (0, 1)
    assert set(doc["provenance"]) == {"code_version", "libraries", "hardware"}
    assert {"torch", "torchvision", "python"} <= set(doc["provenance"]["libraries"])
    assert doc["recipe"]["config"]["method"]["kind"] == "moco"
    assert 0.0 <= doc["metrics"]["top1"] <= doc["metrics"]["top5"] <= 100.0
    assert doc["details"]["n_test"] == 200 and doc["details"]["selected"]
    board = (runs / "LEADERBOARD.md").read_text()
    assert "| moco" in board and "(n=2)" in board and "data `synthetic`" in board

    # a second invocation reuses the finished pretraining and the feature cache
    assert run_cli("--data-root", str(tiny_root), "--runs-dir", str(runs), "--seeds", "0", *FAST) == 0
    assert "reusing finished pretraining" in capsys.readouterr().err


def test_embedded_default_uses_synthetic_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No data root: the stand-ins are generated into the cache (tiny scale here for speed)."""
    import bench.harness as harness
    from tasks.datasets.synth import writer

    real = writer.ensure_synthetic
    monkeypatch.setattr(harness, "ensure_synthetic", lambda root, names, scale: real(root, names, "tiny"))
    assert run_cli("--runs-dir", str(tmp_path / "runs"), *FAST) == 0
    (result,) = (tmp_path / "runs").glob("moco/smoke-synthetic-*/results/linear-cifar10.json")
    assert json.loads(result.read_text())["data"]["source"] == "synthetic"
    assert (Path(os.environ["BENCH_CACHE"]) / "synthetic" / "cifar-10-batches-py").is_dir()


def test_kill_then_resume(tiny_root: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    argv = [
        sys.executable, "-m", "bench.cli", "run", "--recipe", "moco", "--tasks", "cifar10",
        "--data-root", str(tiny_root), "--runs-dir", str(runs), "--no-progress",
        "--set", "train.batch_size=16", "--set", "train.epochs=6", "--set", "train.checkpoint_every=4",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    ckpts: list[Path] = []
    while time.time() < deadline and not ckpts and proc.poll() is None:
        time.sleep(0.2)
        ckpts = list(runs.glob("moco/*/checkpoints/last.pt"))
    assert ckpts, "no checkpoint appeared"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_dir = ckpts[0].parent.parent
    assert not (run_dir / "pretrain.json").exists()

    again = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "--resume" in again.stderr and "Traceback" not in again.stderr

    resumed = subprocess.run([*argv, "--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads((run_dir / "pretrain.json").read_text())
    assert summary["resumed_from"] >= 4 and summary["steps"] == summary["total_steps"] == 6 * (300 // 16)
    assert (run_dir / "results" / "linear-cifar10.json").is_file()


def test_eval_external_checkpoint(
    tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`bench eval` on a MoCo-style training checkpoint: loads the query encoder, runs tasks, reports."""
    import torch

    from pretrain.backbones import build_backbone

    torch.manual_seed(3)
    net = build_backbone("narrow_resnet18").net
    state = {f"module.encoder_q.{k}": v for k, v in net.state_dict().items()}
    state["module.encoder_q.fc.0.weight"] = torch.zeros(2, 2)
    ckpt = tmp_path / "checkpoint_0001.pth.tar"
    torch.save({"epoch": 1, "arch": "narrow_resnet18", "state_dict": state}, ckpt)
    runs = tmp_path / "runs"
    argv = ["eval", "--checkpoint", str(ckpt), "--backbone", "narrow_resnet18", "--tasks", "knn/cifar10",
            "--data-root", str(tiny_root), "--runs-dir", str(runs), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    n = len(net.state_dict())
    assert f"loaded {n}/{n} backbone tensors" in out and "module.encoder_q." in out
    (result,) = runs.glob("eval/ckpt_checkpoint_0001/smoke-synthetic-*/results/knn-cifar10.json")
    doc = json.loads(result.read_text())
    assert doc["recipe"]["name"] == "ckpt:checkpoint_0001"
    assert doc["recipe"]["config"]["prefix"] == "module.encoder_q."
    assert doc["pretrain"]["external_checkpoint"]["ignored"] == 1
    load = json.loads((result.parent.parent / "load.json").read_text())
    assert load["loaded"] == n and load["missing"] == []
    assert "| ckpt:checkpoint_0001" in (runs / "LEADERBOARD.md").read_text()

    del state["module.encoder_q.layer2.0.conv1.weight"]
    torch.save({"state_dict": state}, ckpt)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "1 missing (e.g. layer2.0.conv1.weight)" in err and "--allow-partial" in err
    assert "Traceback" not in err
    assert main([*argv, "--allow-partial", "--label", "partial"]) == 0
    assert "NOT loaded: 1 missing" in capsys.readouterr().out
    assert main([*argv[:4], "resnet5O", *argv[5:]]) == 2
    assert "did you mean 'resnet50'" in capsys.readouterr().err


def test_eval_representation_metrics(
    tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`bench eval` runs invariance, CKA (against itself) and OPD (against another checkpoint) as tasks."""
    import torch

    from pretrain.backbones import build_backbone
    from pretrain.checkpoint import export_backbone

    paths = []
    for seed, name in ((0, "x"), (1, "y")):
        torch.manual_seed(seed)
        paths.append(tmp_path / f"{name}.safetensors")
        export_backbone(paths[-1], build_backbone("narrow_resnet18").net, {})
    x, y = paths
    runs = tmp_path / "runs"
    argv = ["eval", "--checkpoint", str(x), "--backbone", "narrow_resnet18",
            "--tasks", f"invariance,cka:{x},opd:{y}",
            "--data-root", str(tiny_root), "--runs-dir", str(runs), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    files = runs.glob("eval/ckpt_x/smoke-synthetic-*/results/*.json")
    docs = {d["task"]["name"]: d for d in (json.loads(p.read_text()) for p in files)}
    assert set(docs) == {"invariance", f"cka:{x}", f"opd:{y}"}
    inv, cka, opd = docs["invariance"], docs[f"cka:{x}"], docs[f"opd:{y}"]
    assert inv["primary_metric"] == "invariance" and inv["details"]["policy"] == "moco"
    assert 0.0 < inv["metrics"]["invariance"] < 1.0 and inv["metrics"]["diversity"] > 0.0
    assert inv["data"]["datasets"] == {"imagenet": "synthetic"}
    assert abs(cka["metrics"]["cka"] - 1.0) < 1e-9 and abs(cka["metrics"]["cka_minibatch"] - 1.0) < 1e-9
    assert cka["details"]["reference"]["checkpoint"]["sha256"] == cka["recipe"]["config"]["sha256"]
    assert inv["higher_is_better"] == {"invariance": None, "diversity": None}  # descriptive metrics
    assert opd["higher_is_better"] == {"opd": None} and 0.0 < opd["metrics"]["opd"] <= 2.0
    assert opd["details"]["reference"]["checkpoint"]["path"] == str(y)
    assert "invariance" in (runs / "LEADERBOARD.md").read_text()
    capsys.readouterr()
