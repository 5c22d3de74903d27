"""The generative source stage in pretraining: the swap plan, both stream paths, recipes end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.cli import main
from pretrain.augment.config import GenerativeConfig
from pretrain.data import PretrainStream
from pretrain.generative.sources import load_sources
from pretrain.generative.store import VariantStore
from pretrain.generative.swap import SourceSwap, SwapDataset, VariantBank, load_variant, swap_plan
from tasks.datasets.base import load_uint8_tensor
from tasks.datasets.registry import DATASETS

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = ["--set", "train.batch_size=32", "--set", "train.epochs=1", "--no-progress"]


def test_p0_never_and_p1_always_swaps_selected_views() -> None:
    idx = np.arange(1000)
    swap, _ = swap_plan(0, 5, idx, GenerativeConfig(p=0.0), 10)
    assert not swap.any()
    swap, _ = swap_plan(0, 5, idx, GenerativeConfig(p=1.0, views=(1,)), 10)
    assert swap[:, 1].all() and not swap[:, 0].any()
    swap, _ = swap_plan(0, 5, idx, GenerativeConfig(p=1.0), 10)
    assert swap.all()


@pytest.mark.parametrize("p", [0.25, 0.5, 0.75])
def test_swap_rate_matches_p_and_variants_are_uniform(p: float) -> None:
    n, k = 20000, 10
    swap, variant = swap_plan(3, 17, np.arange(n), GenerativeConfig(p=p), k)
    sigma = math.sqrt(p * (1 - p) / (2 * n))
    assert abs(swap.mean() - p) < 5 * sigma
    counts = np.bincount(variant.ravel(), minlength=k)
    expected = 2 * n / k
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 40  # 9 degrees of freedom: p(chi2 > 40) < 1e-5
    # the two views and successive steps draw independently
    assert abs((swap[:, 0] & swap[:, 1]).mean() - p * p) < 5 * math.sqrt(p * p / n)
    other, _ = swap_plan(3, 18, np.arange(n), GenerativeConfig(p=p), k)
    assert abs((swap & other).mean() - p * p) < 5 * math.sqrt(p * p / (2 * n))


def test_plan_is_a_pure_function_of_seed_step_and_sample() -> None:
    cfg = GenerativeConfig(p=0.5)
    a = swap_plan(1, 9, np.array([5, 77, 123]), cfg, 10)
    b = swap_plan(1, 9, np.array([123, 5]), cfg, 10)
    assert np.array_equal(a[0][[2, 0]], b[0]) and np.array_equal(a[1][[2, 0]], b[1])
    assert not np.array_equal(
        swap_plan(2, 9, np.arange(64), cfg, 10)[1], swap_plan(1, 9, np.arange(64), cfg, 10)[1]
    )
    assert not np.array_equal(
        swap_plan(1, 8, np.arange(64), cfg, 10)[1], swap_plan(1, 9, np.arange(64), cfg, 10)[1]
    )


def _streams(root: Path, store_path: Path, cfg: GenerativeConfig) -> tuple[PretrainStream, PretrainStream]:
    info = DATASETS.get("imagenet")
    full = info.load(root, "train", size=40, resize=40)
    store = VariantStore(store_path)
    relpaths = load_sources(root, "imagenet", "train").relpaths
    swap = SourceSwap(cfg, 0, 4)
    labels = np.full(len(full), -1)
    images = load_uint8_tensor(full)[0]
    bank = VariantBank.load(store, relpaths, 40, root.parent / "bank-cache", progress=False)
    memory = PretrainStream(full, labels, 16, 0, images=images, swap=swap, bank=bank)
    disk = PretrainStream(SwapDataset(full, relpaths, store, swap, 40), labels, 16, 0, swap=swap)
    return memory, disk


def test_in_memory_and_on_disk_paths_agree_and_resume(tiny_root: Path, oracle_store: Path) -> None:
    cfg = GenerativeConfig(p=0.5, views=(0, 1))
    memory, disk = _streams(tiny_root, oracle_store, cfg)
    it_m, it_d = memory.batches(0), disk.batches(0)
    seen = []
    for step in range(21):  # crosses an epoch boundary (18 steps per epoch)
        m, d = next(it_m), next(it_d)
        assert m.images.shape == (16, 2, 3, 40, 40) and m.images.dtype == torch.uint8
        assert torch.equal(m.images, d.images) and torch.equal(m.swapped, d.swapped)
        seen.append(m)
        if step == 3:  # a swapped view holds the planned variant; an unswapped one the source image
            idx = torch.tensor(memory._epoch_batches(0, 0)[3])
            swap, variant = swap_plan(0, 3, idx.numpy(), cfg, 4)
            b, v = map(int, np.argwhere(swap)[0])
            rel = load_sources(tiny_root, "imagenet", "train").relpaths[int(idx[b])]
            assert torch.equal(
                m.images[b, v], load_variant(VariantStore(oracle_store), rel, int(variant[b, v]), 40)
            )
            b, v = map(int, np.argwhere(~swap)[0])
            assert torch.equal(m.images[b, v], memory.images[idx[b]])  # type: ignore[index]
    rate = torch.stack([s.swapped for s in seen]).float().mean().item()
    assert 0.4 < rate < 0.6
    resumed = next(memory.batches(19))  # resume = the same batch as the uninterrupted stream's step 19
    assert torch.equal(resumed.images, seen[19].images) and torch.equal(resumed.swapped, seen[19].swapped)


def test_p0_leaves_every_view_untouched(tiny_root: Path, oracle_store: Path) -> None:
    memory, _ = _streams(tiny_root, oracle_store, GenerativeConfig(p=0.0))
    batch = next(memory.batches(0))
    assert not batch.swapped.any()
    assert torch.equal(batch.images[:, 0], batch.images[:, 1])


def test_oracle_recipe_end_to_end(
    tiny_root: Path, oracle_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    argv = ["run", "--recipe", "moco_oracle_mixup", "--tasks", "knn/cifar10", "--data-root", str(tiny_root),
            "--runs-dir", str(runs), *FAST]  # fmt: skip
    assert main([*argv, "--set", "augment.sources.0.p=0.75"]) == 0
    (result,) = runs.glob("moco_oracle_mixup/*/results/knn-cifar10.json")
    doc = json.loads(result.read_text())
    gen = doc["recipe"]["generative"]
    assert gen["generator"] == "oracle" and gen["oracle"] is True and gen["p"] == 0.75
    assert gen["digest"] == VariantStore(oracle_store).digest() and gen["per_image"] == 4
    assert doc["pretrain"]["generative"] == gen
    assert doc["recipe"]["config"]["augment"]["sources"][0]["store"] == "oracle"
    capsys.readouterr()


def test_missing_store_fails_before_pretraining(
    tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    argv = ["run", "--recipe", "simclr_sd", "--tasks", "knn/cifar10", "--data-root", str(tiny_root),
            "--runs-dir", str(runs), *FAST]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "variant store missing" in err and "Traceback" not in err
    assert "bench generate --generator sd-unclip --model DIR --dataset imagenet --split train" in err
    assert not runs.exists() or not list(runs.rglob("*.json"))
    assert main(["show", "recipe", "moco_icgan", "--data-root", str(tiny_root)]) == 0
    out = capsys.readouterr().out
    assert "store: missing; bench run fails until it exists" in out
    assert "bench generate --generator icgan --model DIR" in out


def test_oracle_store_is_generated_on_first_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Like the stand-ins, the oracle store of a synthetic dataset is generated once, then reused."""
    from pretrain.generative import training

    monkeypatch.setattr(training, "ORACLE_PER_IMAGE", 2)  # the paper's 10 in production
    root = tmp_path / "data"
    assert (
        main(["data", "synth", "--root", str(root), "--datasets", "imagenet,cifar10", "--scale", "tiny"]) == 0
    )
    argv = ["run", "--recipe", "byol_oracle", "--tasks", "knn/cifar10", "--data-root", str(root),
            "--runs-dir", str(tmp_path / "runs"), *FAST]  # fmt: skip
    assert main(argv) == 0
    assert "generating the oracle variant store" in capsys.readouterr().err
    store = VariantStore(root / "imagenet-variants" / "oracle")
    assert store.is_complete() and store.manifest()["per_image"] == 2
    assert main([*argv, "--seeds", "1"]) == 0
    assert "generating the oracle variant store" not in capsys.readouterr().err
