# ruff: noqa: E501  (the table of cases reads best one case per line)
"""Hostile inputs: each gets exit status 2 and ONE clear line naming the file, key or name, never a
traceback, and nothing is written as a result.  The table is documented in docs/reliability.md."""

from __future__ import annotations

import errno
import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from bench.cli import main
from pretrain.backbones import build_backbone
from pretrain.checkpoint import export_backbone
from tasks.datasets.synth.writer import ensure_synthetic

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = ["--set", "train.batch_size=32", "--set", "train.epochs=1", "--no-progress"]


@dataclass(frozen=True)
class Case:
    """``setup(tmp, root) -> argv`` (without --runs-dir); the error line must contain ``expect``."""

    name: str
    setup: Callable[[Path, Path], list[str]]
    expect: str


def run(*extra: str, recipe: str = "moco", tasks: str = "knn/cifar10") -> Callable[[Path, Path], list[str]]:
    return lambda tmp, root: [
        "run",
        "--recipe",
        recipe,
        "--tasks",
        tasks,
        "--data-root",
        str(root),
        *FAST,
        *extra,  # after FAST: the case's own --set wins
    ]


def _copy_root(tmp: Path, root: Path) -> Path:
    copy = tmp / "data"
    shutil.copytree(root, copy)
    return copy


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def recipe_file(text: str) -> Callable[[Path, Path], list[str]]:
    def setup(tmp: Path, root: Path) -> list[str]:
        path = _write(tmp / "mine.yaml", text)
        return run(recipe=str(path))(tmp, root)

    return setup


def recursive(tmp: Path, root: Path) -> list[str]:
    _write(tmp / "a.yaml", "extends: b.yaml\n")
    _write(tmp / "b.yaml", "extends: a.yaml\ntrain: {epochs: 1}\n")
    return run(recipe=str(tmp / "a.yaml"))(tmp, root)


def partial_cifar(tmp: Path, root: Path) -> list[str]:
    data = _copy_root(tmp, root)
    (data / "cifar-10-batches-py" / "data_batch_3").unlink()
    return run()(tmp, data)


def corrupt_jpeg(tmp: Path, root: Path, truncate: bool) -> list[str]:
    data = _copy_root(tmp, root)
    victim = sorted((data / "imagenet" / "train").rglob("*.JPEG"))[7]
    raw = victim.read_bytes()
    victim.write_bytes(raw[: len(raw) // 2] if truncate else b"\x00garbage" * 50)
    return run()(tmp, data)


def cifar_file(tmp: Path, root: Path, content: bytes) -> list[str]:
    data = _copy_root(tmp, root)
    (data / "cifar-10-batches-py" / "data_batch_1").write_bytes(content)
    return run()(tmp, data)


class Evil:
    def __reduce__(self) -> tuple[Callable[..., object], tuple[str]]:
        import os

        return (os.system, ("echo pwned > /tmp/augbench-pwned",))


def evaluate(path: Path, backbone: str = "narrow_resnet18") -> list[str]:
    return [
        "eval",
        "--checkpoint",
        str(path),
        "--backbone",
        backbone,
        "--tasks",
        "knn/cifar10",
        "--no-progress",
    ]


def evil_checkpoint(tmp: Path, root: Path) -> list[str]:
    torch.save({"state_dict": Evil()}, tmp / "evil.pth")
    return [*evaluate(tmp / "evil.pth"), "--data-root", str(root)]


def checkpoint_of(backbone: str, into: str, nan: bool = False) -> Callable[[Path, Path], list[str]]:
    def setup(tmp: Path, root: Path) -> list[str]:
        net = build_backbone(backbone).net
        if nan:
            with torch.no_grad():
                net.layer2[0].conv1.weight[0, 0, 0, 0] = float("nan")
        export_backbone(tmp / "w.safetensors", net, {})
        return [*evaluate(tmp / "w.safetensors", into), "--data-root", str(root)]

    return setup


def corrupt_safetensors(tmp: Path, root: Path) -> list[str]:
    export_backbone(tmp / "w.safetensors", build_backbone("narrow_resnet18").net, {})
    raw = (tmp / "w.safetensors").read_bytes()
    (tmp / "w.safetensors").write_bytes(raw[: len(raw) // 3])
    return [*evaluate(tmp / "w.safetensors"), "--data-root", str(root)]


def unwritable_runs(tmp: Path, root: Path) -> list[str]:
    _write(tmp / "a-file", "x")
    return [*run()(tmp, root), "--runs-dir", str(tmp / "a-file" / "runs")]


def bad_baseline(tmp: Path, root: Path) -> list[str]:
    return ["ci", "check", str(tmp), "--baseline", str(_write(tmp / "b.json", "{not json"))]


CASES = [
    Case("unknown recipe", run(recipe="moco_mixpu"), "did you mean 'moco_mixup'"),
    Case("unknown task", run(tasks="linear/cifar1O"), "unknown task 'linear/cifar1O'; did you mean"),
    Case("empty task list", run(tasks=","), "unknown task ','"),
    Case("unknown backbone", lambda t, r: evaluate(t / "x.pth", "resnet5O"), "did you mean 'resnet50'"),
    Case("unknown profile", run("--profile", "smok"), "unknown profile 'smok'; did you mean 'smoke'"),
    Case("unknown --set key", run("--set", "train.epoch=3"), "unknown key 'epoch'; did you mean 'epochs'"),
    Case("mistyped --set value", run("--set", "train.epochs=abc"), "train.epochs: expected an integer"),
    Case("--set without =", run("--set", "train.epochs"), "is not of the form key=value"),
    Case("--set out of range", run("--set", "augment.sources=[{kind: generative, p: 2}]"), "p must be a probability"),
    Case("unknown stage kind", run("--set", "augment.stages=[{kind: mixpu}]"), "unknown kind 'mixpu'; did you mean 'mixup'"),
    Case("YAML with a wrong type", recipe_file("extends: moco\nmethod: {temperature: hot}\n"), "method.temperature: expected a number"),
    Case("YAML syntax error", recipe_file("extends: moco\ntrain: {epochs: [1\n"), "invalid YAML"),
    Case("YAML not a mapping", recipe_file("- moco\n"), "expected a mapping at top level"),
    Case("recipe file without extends", recipe_file("train: {epochs: 1}\n"), "must name the recipe it extends"),
    Case("recursive extends", recursive, "recursive extends (a.yaml -> b.yaml -> a.yaml)"),
    Case("missing recipe file", run(recipe="/nonexistent/r.yaml"), "cannot read config /nonexistent/r.yaml"),
    Case("missing dataset", lambda t, r: run()(t, t), "dataset 'imagenet' not usable under"),
    Case("partial dataset", partial_cifar, "data_batch_3"),
    Case("corrupt JPEG", lambda t, r: corrupt_jpeg(t, r, truncate=False), "cannot decode image"),
    Case("truncated JPEG", lambda t, r: corrupt_jpeg(t, r, truncate=True), "cannot decode image"),
    Case("truncated CIFAR pickle", lambda t, r: cifar_file(t, r, b"\x80\x04\x95\x10"), "data_batch_1"),
    Case("code-executing pickle as dataset", lambda t, r: cifar_file(t, r, pickle.dumps(Evil())), "refusing to unpickle"),
    Case("code-executing pickle as checkpoint", evil_checkpoint, "cannot load"),
    Case("missing checkpoint", lambda t, r: evaluate(t / "nope.pth"), "checkpoint not found"),
    Case("corrupt safetensors", corrupt_safetensors, "cannot read safetensors file"),
    Case("wrong-architecture checkpoint", checkpoint_of("resnet18", "resnet50"), "does not fully match the backbone"),
    Case("wrong-width checkpoint", checkpoint_of("resnet18", "narrow_resnet18"), "shape-mismatched"),
    Case("checkpoint with NaNs", checkpoint_of("narrow_resnet18", "narrow_resnet18", nan=True), "NaN or infinite"),
    Case("unwritable run directory", unwritable_runs, "a-file"),
    Case("batch larger than the data", run("--set", "train.batch_size=100000"), "exceeds the 300 pretraining images"),
    Case("malformed --seeds", run("--seeds", "0,x"), "--seeds must be comma-separated integers"),
    Case("unknown dataset to verify", lambda t, r: ["data", "verify", "cifar1O", "--root", str(r)], "did you mean 'cifar10'"),
    Case("unknown generator", lambda t, r: ["generate", "--generator", "sd-unclp", "--dataset", "imagenet"], "did you mean 'sd-unclip'"),
    Case("missing variant store", run(recipe="moco_sd"), "variant store missing"),
    Case("malformed CI baseline", bad_baseline, "invalid JSON"),
]  # fmt: skip


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_synthetic(tmp_path_factory.mktemp("hostile-data"), ["imagenet", "cifar10"], "tiny")


def _check_one_line_error(capsys: pytest.CaptureFixture[str], expect: str) -> None:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("bench: error:")]
    assert len(lines) == 1, err
    assert expect in lines[0], lines[0]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input(case: Case, root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    argv = case.setup(tmp_path, root)
    if argv[0] in ("run", "eval") and "--runs-dir" not in argv:
        argv += ["--runs-dir", str(runs)]
    assert main(argv) == 2
    _check_one_line_error(capsys, case.expect)
    assert not list(tmp_path.rglob("results/*.json")), "a result was written"
    assert not Path("/tmp/augbench-pwned").exists(), "pickled code was executed"


def test_full_disk_on_the_result_write(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC while a result file is written: one line, no result, no temporary file left behind."""
    import core.results as results

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(results.os, "fsync", full)
    runs = tmp_path / "runs"
    assert main([*run()(tmp_path, root), "--runs-dir", str(runs)]) == 2
    _check_one_line_error(capsys, "No space left on device")
    assert not list(runs.rglob("results/*.json")) and not list(runs.rglob("*.tmp-*"))


def test_second_run_on_a_locked_run_directory_refuses(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two `bench run` processes on one run directory: the second refuses at once, naming the holder."""
    import multiprocessing

    from core.fsutil import run_lock

    runs = tmp_path / "runs"
    argv = [*run()(tmp_path, root), "--runs-dir", str(runs)]
    assert main(argv) == 0
    (run_dir,) = (runs / "moco").iterdir()
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
    ready, release = multiprocessing.Event(), multiprocessing.Event()

    def hold() -> None:
        with run_lock(run_dir):
            ready.set()
            release.wait(60)

    holder = multiprocessing.get_context("fork").Process(target=hold)
    holder.start()
    try:
        assert ready.wait(30)
        assert main(argv) == 2
        _check_one_line_error(capsys, f"is in use by another bench run (pid {holder.pid})")
    finally:
        release.set()
        holder.join(30)
    after = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file() and p.name != ".bench.lock"}
    assert after == {p: t for p, t in before.items() if p.name != ".bench.lock"}  # nothing was touched
    assert main(argv) == 0  # free again
