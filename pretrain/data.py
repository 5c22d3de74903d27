"""Pretraining data: a resumable, deterministic stream of uint8 batches.

Batch order is a pure function of ``(seed, epoch, step-in-epoch, rank)``: epoch ``e`` uses the
permutation ``randperm(N, seed=seed + e)``, split into ``N // (B * world)`` full global batches
(``drop_last``); process ``r`` takes the ``r``-th slice of each global batch.  Resuming at step ``s`` is
therefore exact: the stream restarts at epoch ``s // steps_per_epoch`` and skips the batches already
seen, without replaying them.

With a generative source stage (:mod:`pretrain.generative.swap`) each batch also carries per-view
sources: the stream applies the swap plan of (seed, step, sample) either by gathering from an in-memory
:class:`~pretrain.generative.swap.VariantBank` or, on the on-disk path, through a
:class:`~pretrain.generative.swap.SwapDataset` whose DataLoader keys are ``(step, index)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from core.errors import ConfigError

if TYPE_CHECKING:
    from pretrain.generative.swap import SourceSwap, VariantBank


class StreamBatch(NamedTuple):
    """One process's batch.

    Attributes:
        images: ``uint8 [B, 3, S, S]``, or per-view sources ``uint8 [B, 2, 3, S, S]`` when a generative
            stage is configured (view ``v`` starts from ``images[:, v]``).
        labels: ``int64 [B]`` labels the method may see (-1 = hidden).
        swapped: ``bool [B, 2]``, which views got a generated variant (``None`` without a swap stage).
    """

    images: torch.Tensor
    labels: torch.Tensor
    swapped: torch.Tensor | None = None


def hide_labels(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Copy of ``labels`` with all but a seeded ``fraction`` replaced by -1 (the recipe's label regime).

    The kept subset is the first ``round(fraction * N)`` indices of ``randperm(N, seed)``, so it is
    reproducible and recorded by (fraction, seed).  ``fraction = 0`` hides every label (self-supervised).
    """
    out = np.full_like(labels, -1)
    n_keep = round(fraction * len(labels))
    if n_keep:
        perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed)).numpy()
        keep = perm[:n_keep]
        out[keep] = labels[keep]
    return out


class PretrainStream:
    """Deterministic batches of (uint8 images [B, 3, S, S], labels [B]) for one process.

    Args:
        dataset: items ``(uint8 [3, S, S], int)``; ignored for image access when ``images`` is given.
            With ``swap`` and no ``images``, a :class:`~pretrain.generative.swap.SwapDataset`.
        labels: the labels the method may see ([N], -1 = hidden).
        images: optional in-memory uint8 tensor [N, 3, S, S] (skips decoding).
        swap: the generative source stage (``None``: batches carry only the source images).
        bank: the decoded variants for the in-memory path (required with ``swap`` and ``images``).
    """

    def __init__(
        self,
        dataset: Dataset,
        labels: np.ndarray,
        batch_size: int,
        seed: int,
        *,
        images: torch.Tensor | None = None,
        num_workers: int = 0,
        rank: int = 0,
        world_size: int = 1,
        swap: SourceSwap | None = None,
        bank: VariantBank | None = None,
    ) -> None:
        if swap is not None and images is not None and bank is None:
            raise ValueError("an in-memory stream with a generative swap needs the variant bank")
        self.swap, self.bank = swap, bank
        self.dataset, self.images = dataset, images
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.n = len(self.labels)
        self.batch_size, self.seed = batch_size, seed
        self.num_workers, self.rank, self.world_size = num_workers, rank, world_size
        self.steps_per_epoch = self.n // (batch_size * world_size)
        if self.steps_per_epoch < 1:
            raise ConfigError(
                f"train.batch_size={batch_size} x {world_size} process(es) exceeds the {self.n} "
                "pretraining images: lower the batch size or use more data"
            )

    def _epoch_batches(self, epoch: int, skip: int) -> list[list[int]]:
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + epoch))
        b, w = self.batch_size, self.world_size
        batches = []
        for step in range(skip, self.steps_per_epoch):
            start = step * b * w + self.rank * b
            batches.append(perm[start : start + b].tolist())
        return batches

    def batches(self, start_step: int) -> Iterator[StreamBatch]:
        """Yield batches forever from global step ``start_step`` (0-based)."""
        epoch, skip = divmod(start_step, self.steps_per_epoch)
        step = start_step
        while True:
            index_batches = self._epoch_batches(epoch, skip)
            if self.images is not None:
                for idx in index_batches:
                    yield self._in_memory(step, torch.tensor(idx))
                    step += 1
            else:
                keys: list[list[int]] | list[list[tuple[int, int]]] = index_batches
                if self.swap is not None:  # SwapDataset items are keyed by (step, index)
                    keys = [[(s, i) for i in idx] for s, idx in enumerate(index_batches, step)]
                loader = DataLoader(
                    self.dataset,
                    batch_sampler=keys,
                    num_workers=self.num_workers,
                    pin_memory=torch.cuda.is_available(),
                    persistent_workers=False,
                )
                for item, idx in zip(loader, index_batches, strict=True):
                    swapped = item[2] if self.swap is not None else None
                    yield StreamBatch(item[0], self.labels[torch.tensor(idx)], swapped)
                    step += 1
            epoch, skip = epoch + 1, 0

    def _in_memory(self, step: int, idx: torch.Tensor) -> StreamBatch:
        assert self.images is not None
        images, labels = self.images[idx], self.labels[idx]
        if self.swap is None:
            return StreamBatch(images, labels)
        assert self.bank is not None
        swap, variant = self.swap.plan(step, idx.numpy())
        views = images.unsqueeze(1).repeat(1, 2, 1, 1, 1)
        rows, cols = np.nonzero(swap)
        if rows.size:
            views[rows, cols] = self.bank.gather(idx[rows], torch.from_numpy(variant[rows, cols]))
        return StreamBatch(views, labels, torch.from_numpy(swap))
