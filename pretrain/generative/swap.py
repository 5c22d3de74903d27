"""The generative source swap inside SSL pretraining (arXiv 2403.05966, Sec. 3).

For view ``v`` in ``cfg.views`` of sample ``i`` at optimiser step ``t``, the view's source image is replaced
by variant ``k`` of that sample with probability ``cfg.p``; the view pipeline (crop, flip, colour, ...)
and the masking/mixing stages then apply as usual.  Both draws are a pure function of
``(train.seed, t, i, v)`` (:func:`swap_plan`, a counter-based hash, SplitMix64), so they are

* reproducible and resumable like every other random draw of the trainer (the step is the counter);
* independent of batch composition and of the process that loads the sample, which lets DataLoader
  workers apply the swap where the images are decoded (:class:`SwapDataset`, the on-disk path) and the
  in-memory path gather the same variants from a decoded bank (:class:`VariantBank`).

Tensor contract: the pretraining stream yields per-view sources ``uint8 [B, 2, 3, S, S]`` (view 0, view 1)
and a mask ``bool [B, 2]`` of swapped views when a generative stage is configured.  Variants are resized
and centre-cropped to ``data.image_size`` exactly like the source images (``tasks.datasets.base.
eval_transform``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from core.fsutil import atomic_path
from pretrain.augment.config import GenerativeConfig
from pretrain.generative.store import VariantStore
from tasks.datasets.base import decode_image, eval_transform

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_SALT = 0x5EED_6E4E  # separates these draws from any other use of the training seed


def _splitmix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on uint64 arrays (wrapping arithmetic)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _hash(*parts: np.ndarray) -> np.ndarray:
    h = np.zeros(np.broadcast_shapes(*(p.shape for p in parts)), dtype=np.uint64)
    for part in parts:
        h = _splitmix(h + part.astype(np.uint64) * _GOLDEN + _GOLDEN)
    return h


def _unit(h: np.ndarray) -> np.ndarray:
    """Uniform floats in [0, 1) from the top 53 bits."""
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def swap_plan(
    seed: int, step: int, indices: np.ndarray, cfg: GenerativeConfig, num_variants: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(swap bool [B, 2], variant int64 [B, 2])`` for samples ``indices`` at ``step`` (module docstring).

    ``swap[b, v]`` is False for views not in ``cfg.views``; ``variant`` is drawn for every entry.
    """
    idx = np.asarray(indices, dtype=np.int64).reshape(-1, 1)
    view = np.arange(2, dtype=np.int64).reshape(1, 2)
    base = (np.array(_SALT + seed, dtype=np.int64), np.array(step, dtype=np.int64), idx, view)
    coin = _unit(_hash(*base, np.array(0, dtype=np.int64)))
    pick = _unit(_hash(*base, np.array(1, dtype=np.int64)))
    selected = np.isin(view, np.asarray(cfg.views)).repeat(len(idx), axis=0)
    swap = (coin < cfg.p) & selected
    variant = np.minimum((pick * num_variants).astype(np.int64), num_variants - 1)
    return swap, variant


def load_variant(store: VariantStore, relpath: str, k: int, size: int) -> torch.Tensor:
    """Variant ``k`` of ``relpath`` as ``uint8 [3, size, size]`` (the sources' eval transform)."""
    return eval_transform(decode_image(str(store.variant_path(relpath, k))), size, size)


@dataclass(frozen=True)
class SourceSwap:
    """Everything the stream needs to apply one generative stage."""

    cfg: GenerativeConfig
    seed: int
    num_variants: int

    def plan(self, step: int, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return swap_plan(self.seed, step, indices, self.cfg, self.num_variants)


class VariantBank:
    """All variants of the first ``n`` sources decoded at ``size``: ``uint8 [n, K, 3, size, size]``.

    Built once per (store digest, n, size) into ``<cache>/variant-banks/`` (an ``.npy`` written to a
    temporary name and renamed) and memory-mapped afterwards, so in-memory training gathers a step's
    variants without decoding anything.  Smoke scale: 5000 x 10 x 3 x 40 x 40 = 240 MB.
    """

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self.tensor = torch.from_numpy(array)  # shares the memory map

    @classmethod
    def load(
        cls,
        store: VariantStore,
        relpaths: tuple[str, ...],
        size: int,
        cache: Path,
        num_workers: int = 0,
        progress: bool = True,
    ) -> VariantBank:
        per_image = int(store.manifest()["per_image"])
        path = cache / "variant-banks" / f"{store.digest()}-n{len(relpaths)}-s{size}.npy"
        if not path.is_file():
            shape = (len(relpaths), per_image, 3, size, size)
            flat = _FlatVariants(store, relpaths, per_image, size)
            loader = DataLoader(flat, batch_size=per_image, num_workers=num_workers)
            bar = tqdm(loader, desc=f"decode variants {store.path.name}", unit="img", disable=not progress,
                       file=sys.stderr)  # fmt: skip
            with atomic_path(path) as tmp:
                out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
                for i, batch in enumerate(bar):
                    out[i] = batch.numpy()
                out.flush()
                del out
        return cls(np.load(path, mmap_mode="c"))  # copy-on-write: writable view, file untouched

    def gather(self, indices: torch.Tensor, variants: torch.Tensor) -> torch.Tensor:
        """``uint8 [M, 3, S, S]`` variants ``variants[j]`` of samples ``indices[j]``."""
        return self.tensor[indices, variants]


class _FlatVariants(Dataset[torch.Tensor]):
    def __init__(self, store: VariantStore, relpaths: tuple[str, ...], per_image: int, size: int) -> None:
        self.store, self.relpaths, self.per_image, self.size = store, relpaths, per_image, size

    def __len__(self) -> int:
        return len(self.relpaths) * self.per_image

    def __getitem__(self, j: int) -> torch.Tensor:
        i, k = divmod(j, self.per_image)
        return load_variant(self.store, self.relpaths[i], k, self.size)


class SwapDataset(Dataset[tuple[torch.Tensor, int, torch.Tensor]]):
    """The on-disk path: ``dataset[(step, i)] = (uint8 [2, 3, S, S] per-view sources, label, bool [2])``.

    ``base[i]`` must be ``(uint8 [3, S, S], label)`` (the pretraining split, eval-transformed to
    ``size``); swapped views are decoded from the store in the worker that loads the sample.
    """

    def __init__(
        self, base: Dataset, relpaths: tuple[str, ...], store: VariantStore, swap: SourceSwap, size: int
    ) -> None:
        self.base, self.relpaths, self.store, self.swap, self.size = base, relpaths, store, swap, size

    def __len__(self) -> int:
        return len(self.relpaths)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int, torch.Tensor]:
        step, i = key
        image, label = self.base[i]
        swap, variant = self.swap.plan(step, np.array([i]))
        views = [
            load_variant(self.store, self.relpaths[i], int(variant[0, v]), self.size) if swap[0, v] else image
            for v in range(2)
        ]
        return torch.stack(views), int(label), torch.from_numpy(swap[0])
