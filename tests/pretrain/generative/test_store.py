"""The variant store and `bench generate`: layout, manifest, records, resume after a kill, shards, verify."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.cli import main
from pretrain.generative.base import GeneratorSettings, variant_seed
from pretrain.generative.generate import generate, parse_shard
from pretrain.generative.sources import load_sources
from pretrain.generative.store import (
    COMPLETE,
    StoreError,
    VariantStore,
    default_store_dir,
    require_store,
    resolve_store_dir,
    variant_relpath,
)
from tests.pretrain.generative.conftest import ORACLE_TEST_SETTINGS

pytestmark = pytest.mark.usefixtures("one_thread")


def test_layout_names() -> None:
    assert variant_relpath("train/n01/n01_000001.JPEG", 3) == "train/n01/n01_000001/03.JPEG"
    assert variant_relpath("images/apple_pie/1005649.jpg", 0) == "images/apple_pie/1005649/00.jpg"
    assert variant_relpath("train/000123", 9) == "train/000123/09.png"  # array datasets (CIFAR)
    assert variant_relpath("val/x/y.png", 1) == "val/x/y/01.png"
    root = Path("/data")
    assert default_store_dir(root, "imagenet", "sd-unclip") == root / "imagenet-variants" / "sd-unclip"
    assert resolve_store_dir("icgan", root, "imagenet") == root / "imagenet-variants" / "icgan"
    assert resolve_store_dir("/abs/store", root, "imagenet") == Path("/abs/store")
    assert resolve_store_dir("./mine", root, "imagenet") == root / "mine"


def test_parse_shard() -> None:
    assert parse_shard("2/5", {}) == (2, 5)
    assert parse_shard(None, {}) == (0, 1)
    env = {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "5"}
    assert parse_shard(None, env) == (2, 4)
    for bad in ("3/3", "x/2", "1", "-1/2"):
        with pytest.raises(Exception, match="shard"):
            parse_shard(bad, {})


def test_store_layout_manifest_and_records(tiny_root: Path, oracle_store: Path) -> None:
    sources = load_sources(tiny_root, "imagenet", "train")
    store = VariantStore(oracle_store)
    manifest = store.manifest()
    assert manifest["generator"] == "oracle" and manifest["oracle"] is True
    assert (manifest["dataset"], manifest["split"], manifest["per_image"]) == ("imagenet", "train", 4)
    assert manifest["source"] == {"fingerprint": sources.fingerprint, "num_images": 300}
    assert manifest["settings"]["keep"] == 0.5 and "device" not in manifest["settings"]
    assert manifest["data_source"] == "synthetic" and manifest["generator_info"]["kind"].startswith("oracle")
    assert {"code_version", "libraries", "created"} <= set(manifest)
    records = list(store.records())
    assert sorted(r["source"] for r in records) == sorted(sources.relpaths)  # each source exactly once
    rec = next(r for r in records if r["index"] == 17)
    assert rec["source"] == sources.relpaths[17]
    assert rec["seeds"] == [variant_seed(0, rec["source"], k) for k in range(4)]
    for k in range(4):  # the layout mirrors the dataset's files
        path = oracle_store / sources.relpaths[17].removesuffix(".JPEG") / f"{k:02d}.JPEG"
        assert path.is_file() and Image.open(path).size == (40, 40)
    assert store.is_complete() and store.verify(sources, check_images=True) == []
    assert require_store(oracle_store, "imagenet", "train", "CMD").path == oracle_store
    with pytest.raises(Exception, match="holds imagenet/train, not imagenet/val"):
        require_store(oracle_store, "imagenet", "val", "CMD")


def _pixels(store: Path, rel: str, k: int) -> np.ndarray:
    return np.asarray(Image.open(VariantStore(store).variant_path(rel, k)))


def test_shards_batches_and_limit_give_the_same_variants(
    tiny_root: Path, oracle_store: Path, tmp_path: Path
) -> None:
    """A variant's pixels depend on (seed, source, k) only: not on the shard, the batch or --limit."""
    out = tmp_path / "sharded"
    settings = dataclasses.replace(ORACLE_TEST_SETTINGS, batch_size=7)
    sources = load_sources(tiny_root, "imagenet", "train")
    first = generate("oracle", None, tiny_root, "imagenet", "train", settings, out=out, shard=(0, 2),
                     limit=40, progress=False)  # fmt: skip
    assert (first.generated, first.complete) == (20, False)
    assert {r["index"] % 2 for r in VariantStore(out).records()} == {0}
    second = generate("oracle", None, tiny_root, "imagenet", "train", settings, out=out, shard=(1, 2),
                      progress=False)  # fmt: skip
    assert second.generated == 150 and not second.complete  # shard 0 still lacks its images 40..299
    third = generate("oracle", None, tiny_root, "imagenet", "train", settings, out=out, shard=(0, 2),
                     progress=False)  # fmt: skip
    assert (third.generated, third.skipped, third.complete) == (130, 20, True)
    assert (out / COMPLETE).is_file() and third.digest == VariantStore(oracle_store).digest()
    for i in (0, 1, 39, 41, 299):
        for k in (0, 3):
            assert np.array_equal(
                _pixels(out, sources.relpaths[i], k), _pixels(oracle_store, sources.relpaths[i], k)
            )


def test_other_settings_are_refused(tiny_root: Path, oracle_store: Path) -> None:
    other = dataclasses.replace(ORACLE_TEST_SETTINGS, keep=0.9)
    with pytest.raises(StoreError, match="another settings"):
        generate("oracle", None, tiny_root, "imagenet", "train", other, out=oracle_store, progress=False)
    # batch size and device do not change pixels: the same store accepts them (nothing left to do)
    same = dataclasses.replace(ORACLE_TEST_SETTINGS, batch_size=3, device="cpu")
    report = generate("oracle", None, tiny_root, "imagenet", "train", same, out=oracle_store, progress=False)
    assert (report.generated, report.skipped, report.complete) == (0, 300, True)


def test_torn_record_line_is_not_done(tmp_path: Path) -> None:
    store = VariantStore(tmp_path)
    store.append_records("s", [{"source": "a"}, {"source": "b"}])
    with open(tmp_path / "records" / "s.jsonl", "a") as fh:
        fh.write('{"source": "c"')  # killed inside the write
    assert store.done() == {"a", "b"}


def test_rerun_clears_a_killed_writers_temporaries(tiny_root: Path, tmp_path: Path) -> None:
    """A temporary left in a not-yet-recorded source's folder (any pid, any host) is removed when that
    source is generated; a finished source's folder is not touched."""
    out = tmp_path / "store"
    argv = ["generate", "--generator", "oracle", "--dataset", "imagenet", "--data-root", str(tiny_root),
            "--out", str(out), "--per-image", "2", "--no-progress"]  # fmt: skip
    assert main([*argv, "--limit", "2"]) == 0
    sources = load_sources(tiny_root, "imagenet", "train")
    store = VariantStore(out)
    partial = store.variant_path(sources.relpaths[3], 1)
    partial.parent.mkdir(parents=True)
    stale = partial.with_name(
        f".{partial.name}.tmp-{os.getpid()}"
    )  # even a live pid: the owner shard decides
    stale.write_bytes(b"half a JPEG")
    assert main([*argv, "--limit", "5"]) == 0
    assert not stale.exists() and partial.is_file()
    assert not list(out.rglob(".*.tmp-*"))


def test_kill_during_generation_then_rerun(tiny_root: Path, tmp_path: Path) -> None:
    """SIGKILL mid-way, rerun the same command: the store is complete, every source was generated once,
    no half-written file is counted as done and no temporary file is left."""
    out = tmp_path / "killed"
    argv = [sys.executable, "-m", "bench.cli", "generate", "--generator", "oracle", "--dataset", "imagenet",
            "--data-root", str(tiny_root), "--out", str(out), "--per-image", "4", "--batch-size", "1",
            "--no-progress"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    records = out / "records" / "shard-00000-of-00001.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if records.is_file() and records.read_text().count("\n") >= 10:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = VariantStore(out).done()
    assert len(done_before) >= 10
    if proc.returncode != -signal.SIGKILL:
        pytest.skip("generation finished before the kill (machine too fast for this test's timing)")
    assert not (out / COMPLETE).exists()
    again = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr
    assert (
        f"generated {300 - len(done_before)} source images ({len(done_before)} already done)" in again.stdout
    )
    sources = [r["source"] for r in VariantStore(out).records()]
    assert len(sources) == len(set(sources)) == 300  # nothing generated twice
    assert (out / COMPLETE).is_file() and not list(out.rglob(".*.tmp-*"))
    assert main(["data", "verify", str(out), "--root", str(tiny_root)]) == 0


def test_verify_finds_missing_and_corrupt_variants(
    tiny_root: Path, oracle_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(oracle_store, broken)
    sources = load_sources(tiny_root, "imagenet", "train")
    VariantStore(broken).variant_path(sources.relpaths[5], 2).unlink()
    VariantStore(broken).variant_path(sources.relpaths[8], 1).write_bytes(b"not a jpeg")
    assert main(["data", "verify", str(broken), "--root", str(tiny_root)]) == 1
    out = capsys.readouterr().out
    assert "1 recorded variant file(s) missing" in out and "1 variant file(s) do not decode" in out
    assert main(["data", "verify", str(oracle_store), "--root", str(tiny_root)]) == 0
    assert "ok, 300 source images x 4 variants by oracle (ORACLE" in capsys.readouterr().out


def test_generate_cli_errors(tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["generate", "--dataset", "imagenet", "--data-root", str(tiny_root), "--no-progress"]
    assert main([*base, "--generator", "oracel"]) == 2
    assert "did you mean 'oracle'" in capsys.readouterr().err
    assert main([*base, "--generator", "sd-unclip", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "needs --model DIR" in err and "Traceback" not in err
    assert main([*base, "--generator", "icgan", "--model", str(tmp_path / "nope")]) == 2
    assert "model folder not found" in capsys.readouterr().err
    assert main([*base, "--generator", "oracle", "--model", str(tmp_path)]) == 2
    assert "takes no --model" in capsys.readouterr().err
    assert main([*base, "--generator", "oracle", "--shard", "2/2"]) == 2
    assert "--shard" in capsys.readouterr().err
    assert main([*base, "--generator", "oracle", "--keep", "1.5"]) == 2
    assert "keep must be in [0, 1]" in capsys.readouterr().err
    real = tmp_path / "real"
    shutil.copytree(tiny_root / "imagenet", real / "imagenet")
    (real / "imagenet" / ".augbench-synthetic.json").unlink()  # looks like real data now
    assert main([*base[:3], "--data-root", str(real), "--generator", "oracle"]) == 2
    assert "synthetic stand-ins only" in capsys.readouterr().err


def test_generate_cli_limit(tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "quick"
    argv = ["generate", "--generator", "oracle", "--dataset", "imagenet", "--data-root", str(tiny_root),
            "--out", str(out), "--limit", "6", "--per-image", "2", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert f"store: {out}" in text and "generated 6 source images (0 already done), incomplete" in text
    assert len(list(out.rglob("*.JPEG"))) == 12
    assert main(["data", "verify", str(out), "--root", str(tiny_root), "--no-images"]) == 1
    assert "294 of 300 source images have no variants yet" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["size"] == 40  # the oracle's default size: the stand-in's own


def test_settings_validation() -> None:
    with pytest.raises(ValueError):
        GeneratorSettings(per_image=0)
    with pytest.raises(ValueError):
        GeneratorSettings(truncation=0.0)
