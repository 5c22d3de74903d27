"""`bench generate` with the tiny random diffusion pipelines, then pretraining on their variants."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from bench.cli import main
from pretrain.generative.store import VariantStore

pytestmark = pytest.mark.usefixtures("one_thread")


def test_sd_variations_quick_look(
    tiny_root: Path, tiny_variations_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sdv"
    argv = ["generate", "--generator", "sd-variations", "--model", str(tiny_variations_dir), "--dataset",
            "imagenet", "--data-root", str(tiny_root), "--out", str(out), "--limit", "3", "--per-image", "2",
            "--steps", "2", "--size", "48", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    assert "generated 3 source images (0 already done), incomplete" in capsys.readouterr().out
    files = sorted(out.rglob("*.JPEG"))
    assert len(files) == 6 and all(Image.open(f).size == (48, 48) for f in files)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["generator"] == "sd-variations" and manifest["oracle"] is False
    assert manifest["settings"]["guidance_scale"] == 3.0 and manifest["settings"]["steps"] == 2
    assert len(manifest["generator_info"]["weights_digest"]) == 64


@pytest.mark.slow
def test_sd_unclip_store_feeds_pretraining(
    tiny_root: Path, tiny_unclip_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A complete unCLIP store of the tiny ImageNet train split (300 images x 2 variants), then
    `bench run --recipe moco_sd` reading it: the result records the generator, its digest and p."""
    out = tmp_path / "unclip"
    argv = ["generate", "--generator", "sd-unclip", "--model", str(tiny_unclip_dir), "--dataset", "imagenet",
            "--data-root", str(tiny_root), "--out", str(out), "--per-image", "2", "--steps", "2",
            "--size", "40", "--batch-size", "25", "--noise-level", "100", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    assert "complete" in capsys.readouterr().out
    store = VariantStore(out)
    assert store.manifest()["settings"]["guidance_scale"] == 10.0  # sd-unclip's default (the paper's script)
    assert store.manifest()["settings"]["noise_level"] == 100
    runs = tmp_path / "runs"
    run = ["run", "--recipe", "moco_sd", "--tasks", "knn/cifar10", "--data-root", str(tiny_root),
           "--runs-dir", str(runs), "--set", f"augment.sources.0.store={out}",
           "--set", "augment.sources.0.p=1.0",
           "--set", "augment.sources.0.views=[1]", "--set", "train.batch_size=32", "--set", "train.epochs=1",
           "--no-progress"]  # fmt: skip
    assert main(run) == 0
    (result,) = runs.glob("moco_sd/*/results/knn-cifar10.json")
    gen = json.loads(result.read_text())["recipe"]["generative"]
    assert gen["generator"] == "sd-unclip" and gen["oracle"] is False and gen["digest"] == store.digest()
    assert (gen["p"], gen["views"], gen["per_image"]) == (1.0, [1], 2)
