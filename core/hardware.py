"""What the hardware does fast: the rule that resolves ``precision: auto``.

bfloat16 autocast pays off on a CPU only when the CPU computes in bfloat16 natively (AVX512-BF16 or
AMX tiles): measured 3.4x faster than fp32 for the smoke ResNets on such a CPU, but 10-15x *slower* on an
AVX2-only one (AMD Zen 3, 2026-12-03: narrow ResNet-18, fwd+bwd of 256 32-px images, 0.66 s fp32 vs 7.3 s
bf16), where oneDNN emulates it.  On CUDA, bf16 where the GPU supports it, else fp16.
"""

from __future__ import annotations

from typing import Literal, cast

import torch

AutoPrecision = Literal["bf16", "fp16", "fp32"]


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX tiles), as torch sees it."""
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def auto_precision(device: torch.device) -> AutoPrecision:
    """The autocast precision ``auto`` means on ``device``: ``"bf16"``, ``"fp16"`` or ``"fp32"`` (none)."""
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu":
        return "bf16" if cpu_has_native_bf16() else "fp32"
    return "fp32"


#: The autocast dtype of each precision (None: no autocast, fp32).
AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


def precision_for(name: str, device: torch.device) -> AutoPrecision:
    """A ``precision`` setting resolved on ``device``: ``"auto"`` becomes :func:`auto_precision`,
    ``"bf16"``, ``"fp16"`` and ``"fp32"`` are kept (an explicit setting is never overridden).

    The one place that maps setting names to precisions: pretraining (:func:`autocast_dtype`), the frozen
    feature extractor, mmseg's optimiser wrapper and the studies' cost model all resolve through it.
    """
    if name == "auto":
        return auto_precision(device)
    if name in AUTOCAST_DTYPES:
        return cast(AutoPrecision, name)
    raise ValueError(f"unknown precision {name!r}; expected 'auto', 'bf16', 'fp16' or 'fp32'")


def autocast_dtype(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None = fp32) of the ``precision`` setting ``name`` on ``device``."""
    return AUTOCAST_DTYPES[precision_for(name, device)]
