"""``precision: auto`` resolves by what the hardware computes natively (core/hardware.py)."""

from __future__ import annotations

import pytest
import torch

from core import hardware
from tasks.features import resolve_precision as feature_precision
from tasks.segmentation.mmseg_config import seg_uses_bf16


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16"), (False, "fp32")])
def test_auto_on_cpu_follows_native_bf16(
    monkeypatch: pytest.MonkeyPatch, native: bool, expected: str
) -> None:
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: native)
    cpu = torch.device("cpu")
    assert hardware.auto_precision(cpu) == expected
    assert hardware.autocast_dtype("auto", cpu) == (torch.bfloat16 if native else None)
    assert feature_precision("auto", cpu) == expected
    if not torch.cuda.is_available():
        assert seg_uses_bf16("auto") is native
    # explicit settings are never overridden
    assert hardware.autocast_dtype("bf16", cpu) == torch.bfloat16
    assert hardware.autocast_dtype("fp32", cpu) is None
    assert feature_precision("bf16", cpu) == "bf16" and seg_uses_bf16("bf16") and not seg_uses_bf16("fp32")
    assert hardware.precision_for("fp16", cpu) == "fp16"
    assert hardware.autocast_dtype("fp16", cpu) == torch.float16
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        hardware.precision_for("fp8", cpu)


def test_native_bf16_check_matches_torch() -> None:
    expected = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert hardware.cpu_has_native_bf16() is bool(expected)
