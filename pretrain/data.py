"""Pretraining data: a resumable, deterministic stream of uint8 batches.

Batch order is a pure function of ``(seed, epoch, step-in-epoch, rank)``: epoch ``e`` uses the
permutation ``randperm(N, seed=seed + e)``, split into ``N // (B * world)`` full global batches
(``drop_last``); process ``r`` takes the ``r``-th slice of each global batch.  Resuming at step ``s`` is
therefore exact: the stream restarts at epoch ``s // steps_per_epoch`` and skips the batches already
seen, without replaying them.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from bench.errors import ConfigError


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
        labels: the labels the method may see ([N], -1 = hidden).
        images: optional in-memory uint8 tensor [N, 3, S, S] (skips decoding).
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
    ) -> None:
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

    def batches(self, start_step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield batches forever from global step ``start_step`` (0-based)."""
        epoch, skip = divmod(start_step, self.steps_per_epoch)
        while True:
            index_batches = self._epoch_batches(epoch, skip)
            if self.images is not None:
                for idx in index_batches:
                    t = torch.tensor(idx)
                    yield self.images[t], self.labels[t]
            else:
                loader = DataLoader(
                    self.dataset,
                    batch_sampler=index_batches,
                    num_workers=self.num_workers,
                    pin_memory=torch.cuda.is_available(),
                    persistent_workers=False,
                )
                for (images, _), idx in zip(loader, index_batches, strict=True):
                    yield images, self.labels[torch.tensor(idx)]
            epoch, skip = epoch + 1, 0
