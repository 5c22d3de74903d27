"""Provenance recorded with every result: code version, library versions, hardware."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from core import __version__

_REPO = Path(__file__).resolve().parent.parent


@functools.cache
def code_version() -> str:
    """Revision of the source tree (``+dirty`` when tracked files changed), else the package version."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=_REPO, capture_output=True, text=True, timeout=10
        )
        if rev.returncode != 0:
            raise OSError(rev.stderr)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=_REPO,
            capture_output=True,
            text=True,
            timeout=10,
        )
        suffix = "+dirty" if dirty.stdout.strip() else ""
        return f"{__version__}+g{rev.stdout.strip()}{suffix}"
    except (OSError, subprocess.SubprocessError):
        return __version__


def library_versions() -> dict[str, str]:
    import numpy
    import torchvision

    out = {
        "python": platform.python_version(),
        "augbench": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
    }
    try:
        import sklearn

        out["scikit-learn"] = sklearn.__version__
    except ImportError:
        pass
    return out


def hardware(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["gpu_count"] = torch.cuda.device_count()
    return info
