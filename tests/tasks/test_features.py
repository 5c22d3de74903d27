"""Tests of frozen-feature extraction and its on-disk cache (tasks/features.py)."""

from __future__ import annotations

import copy
import json
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import DatasetError
from tasks import features as F
from tasks.features import FeatureError, FeatureSet, extract_features, feature_key, state_dict_digest

pytestmark = pytest.mark.usefixtures("one_thread")


class Images(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    """``n`` random uint8 images ``[3, size, size]`` with a ``labels`` array."""

    def __init__(self, n: int, size: int = 8, seed: int = 0, classes: int = 5) -> None:
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
        self.labels = torch.randint(0, classes, (n,), generator=g).numpy()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])


class Net(torch.nn.Module):
    """Tiny conv net ``[B, 3, S, S] -> [B, dim]`` that counts its forward calls and images."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
        )
        self.head = torch.nn.Linear(8, dim)
        self.calls = 0
        self.images = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.images += x.shape[0]
        assert x.dtype == torch.float32 and float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        return self.head(self.body(x))


def reference(model: Net, ds: Images) -> np.ndarray:
    with torch.no_grad():
        return model.head(model.body(ds.images.float() / 255.0)).numpy()


@pytest.mark.parametrize(("precision", "rtol", "atol"), [("fp32", 2e-3, 2e-3), ("bf16", 3e-2, 3e-2)])
def test_extraction_equals_running_the_model(
    tmp_path: Path, precision: F.Precision, rtol: float, atol: float
) -> None:
    ds, model = Images(37), Net()
    fs = extract_features(
        model, ds, cache_dir=tmp_path, key="k", batch_size=8, precision=precision, progress=False
    )
    assert isinstance(fs, FeatureSet) and fs.features.shape == (37, 16) and fs.features.dtype == np.float16
    np.testing.assert_allclose(fs.features.astype(np.float32), reference(model, ds), rtol=rtol, atol=atol)
    np.testing.assert_array_equal(fs.labels, ds.labels)
    assert fs.labels.dtype == np.int64 and model.calls == 5 and model.images == 37
    assert fs.path == tmp_path / "k.f16" and len(fs) == 37 and fs.dim == 16
    meta = json.loads((tmp_path / "k.json").read_text())
    assert meta["shape"] == [37, 16] and meta["dtype"] == "float16" and meta["precision"] == precision
    assert {"labels_sha256", "created", "format"} <= set(meta)


def test_cache_hit_does_not_run_the_model(tmp_path: Path) -> None:
    ds, model = Images(20), Net()
    first = extract_features(model, ds, cache_dir=tmp_path, key="k", batch_size=8, progress=False)
    calls = model.calls
    second = extract_features(model, ds, cache_dir=tmp_path, key="k", batch_size=8, progress=False)
    assert model.calls == calls == 3
    np.testing.assert_array_equal(first.features, second.features)
    assert isinstance(second.features, np.memmap) and not second.features.flags.writeable


def test_model_mode_is_restored(tmp_path: Path) -> None:
    model = Net().train()
    extract_features(model, Images(4), cache_dir=tmp_path, key="k", progress=False)
    assert model.training


@pytest.mark.parametrize(
    "damage", ["leftover_tmp", "missing_sidecar", "corrupt_sidecar", "truncated", "more_rows", "new_labels"]
)
def test_incomplete_or_stale_cache_is_recomputed(tmp_path: Path, damage: str) -> None:
    ds, model = Images(20), Net()
    if damage == "leftover_tmp":  # a crashed writer: tmp data, no committed files
        (tmp_path / "k.f16.tmp-999999").write_bytes(b"\x00" * 7)
    else:
        extract_features(model, ds, cache_dir=tmp_path, key="k", batch_size=8, progress=False)
    if damage == "missing_sidecar":
        (tmp_path / "k.json").unlink()
    elif damage == "corrupt_sidecar":
        (tmp_path / "k.json").write_text('{"shape": [20,')
    elif damage == "truncated":
        (tmp_path / "k.f16").write_bytes((tmp_path / "k.f16").read_bytes()[:-2])
    elif damage == "more_rows":
        ds = Images(23)
    elif damage == "new_labels":
        ds.labels = (ds.labels + 1) % 5
    before = model.calls
    fs = extract_features(model, ds, cache_dir=tmp_path, key="k", batch_size=8, progress=False)
    assert model.calls > before  # recomputed
    assert fs.features.shape == (len(ds), 16)
    np.testing.assert_allclose(fs.features.astype(np.float32), reference(model, ds), rtol=3e-2, atol=3e-2)
    np.testing.assert_array_equal(fs.labels, ds.labels)
    assert not list(tmp_path.glob(f"*.tmp-{os.getpid()}"))


def test_failed_extraction_commits_nothing(tmp_path: Path) -> None:
    class Boom(Net):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.calls == 2:
                raise RuntimeError("boom")
            return super().forward(x)

    ds = Images(30)
    with pytest.raises(RuntimeError):
        extract_features(Boom(), ds, cache_dir=tmp_path, key="k", batch_size=8, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    assert F.load_cached_features(tmp_path, "k", ds.labels) is None


def test_writer_streams_batches_and_never_holds_all_features(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    n, dim, batch = 4096, 256, 128
    ds, model = Images(n, size=4), Net(dim)
    writes: list[tuple[int, ...]] = []
    original = F._Fp16Writer.write

    def spy(self: F._Fp16Writer, arr: np.ndarray) -> None:
        writes.append(arr.shape)
        original(self, arr)

    monkeypatch.setattr(F._Fp16Writer, "write", spy)
    tracemalloc.start()
    try:
        fs = extract_features(model, ds, cache_dir=tmp_path, key="big", batch_size=batch, progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert writes == [(batch, dim)] * (n // batch)  # one write per batch, as it is produced
    assert isinstance(fs.features, np.memmap)
    assert peak < n * dim * 2 / 4  # far below one float16 copy of all features
    assert (tmp_path / "big.f16").stat().st_size == n * dim * 2


def test_state_dict_digest_and_keys() -> None:
    a, b = Net(), Net()
    assert state_dict_digest(a) == state_dict_digest(b) == state_dict_digest(copy.deepcopy(a))
    with torch.no_grad():
        b.head.bias[0] += 1e-3
    assert state_dict_digest(a) != state_dict_digest(b)
    a.register_buffer("scale", torch.ones(3, dtype=torch.bfloat16))
    assert state_dict_digest(a) != state_dict_digest(Net())
    base = feature_key(state_dict_digest(Net()), "cifar10@/data", "train", "resize32-centercrop32")
    variants = [
        feature_key(state_dict_digest(b), "cifar10@/data", "train", "resize32-centercrop32"),
        feature_key(state_dict_digest(Net()), "cifar100@/data", "train", "resize32-centercrop32"),
        feature_key(state_dict_digest(Net()), "cifar10@/data", "test", "resize32-centercrop32"),
        feature_key(state_dict_digest(Net()), "cifar10@/data", "train", "resize36-centercrop32"),
    ]
    assert len({base, *variants}) == 5
    assert base == feature_key(state_dict_digest(Net()), "cifar10@/data", "train", "resize32-centercrop32")
    assert all(F._KEY_RE.match(k) and len(k) <= 64 for k in (base, *variants))


def test_keys_written_by_weights_do_not_collide(tmp_path: Path) -> None:
    ds, a, b = Images(10), Net(), Net()
    with torch.no_grad():
        b.head.weight.mul_(2)
    ka = feature_key(state_dict_digest(a), "d", "train", "t")
    kb = feature_key(state_dict_digest(b), "d", "train", "t")
    fa = extract_features(a, ds, cache_dir=tmp_path, key=ka, progress=False)
    fb = extract_features(b, ds, cache_dir=tmp_path, key=kb, progress=False)
    assert fa.path != fb.path and not np.array_equal(fa.features, fb.features)


def test_user_errors(tmp_path: Path) -> None:
    ds = Images(6)
    with pytest.raises(FeatureError):
        extract_features(Net(), ds, cache_dir=tmp_path, key="../escape", progress=False)
    no_labels = Images(6)
    del no_labels.labels
    with pytest.raises(DatasetError):
        extract_features(Net(), no_labels, cache_dir=tmp_path, key="k", progress=False)
    with pytest.raises(FeatureError):
        extract_features(torch.nn.Identity(), ds, cache_dir=tmp_path, key="k", progress=False)  # 4-D output

    class Huge(Net):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x) * 1e6

    with pytest.raises(FeatureError):
        extract_features(Huge(), ds, cache_dir=tmp_path, key="k", precision="fp32", progress=False)
    floats = Images(6)
    floats.images = floats.images.float()
    with pytest.raises(DatasetError):
        extract_features(Net(), floats, cache_dir=tmp_path, key="k", progress=False)
    with pytest.raises(FeatureError):
        extract_features(Net(), ds, cache_dir=tmp_path, key="k", precision="fp8", progress=False)  # type: ignore[arg-type]
    assert not list(tmp_path.glob("k.*"))
