"""IC-GAN's noise: a standard normal truncated to ``[-2 t, 2 t]`` (the truncation trick, Brock et al. 2019).

IC-GAN's colab / ``predict.py`` and arXiv 2403.05966's generation code draw
``scipy.stats.truncnorm.rvs(-2 * truncation, 2 * truncation)`` (a *standard* normal restricted to +-2t, not
rescaled by t) with ``truncation = 0.7``, i.e. values in [-1.4, 1.4].  Here the same distribution is drawn
by inversion from one ``torch.Generator`` per variant, so a variant's noise is a pure function of its seed:
``z = Phi^-1(Phi(a) + u (Phi(b) - Phi(a)))`` with ``u ~ U[0, 1)^dim`` in float64, ``a = -2t``, ``b = 2t``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def truncated_normal(seed: int, dim: int, truncation: float) -> Tensor:
    """``dim`` float32 values from the standard normal truncated to ``[-2 truncation, 2 truncation]``, drawn
    from a CPU ``torch.Generator`` seeded with ``seed`` (0 <= seed < 2**64) alone."""
    if truncation <= 0:
        raise ValueError(f"truncation must be positive, got {truncation}")
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    u = torch.rand(dim, generator=gen, dtype=torch.float64)
    bound = 2.0 * truncation
    lo, hi = (torch.special.ndtr(torch.tensor(v, dtype=torch.float64)) for v in (-bound, bound))
    z = torch.special.ndtri(lo + u * (hi - lo)).float()
    limit = torch.tensor(bound, dtype=torch.float32)
    return torch.minimum(torch.maximum(z, -limit), limit)


def noise_batch(seeds: list[int], dim: int, truncation: float) -> Tensor:
    """``[len(seeds), dim]``: row ``j`` is :func:`truncated_normal` ``(seeds[j], dim, truncation)``."""
    return torch.stack([truncated_normal(s, dim, truncation) for s in seeds])
