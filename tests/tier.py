"""The CI tier: the ``--set`` overrides under which ``ci/baselines/smoke.json`` was measured.

The baseline stores, per recipe, the overrides that reproduce its config from the smoke profile
(``recipes.<name>.overrides``; today the smoke default with ``train.precision=fp32``, so every CPU runs
the same arithmetic).  The session's shared MoCo run (``tests/conftest.py``, ``moco_smoke_run``) is
pretrained in this tier, so one pretraining feeds the learning-signal, detection, segmentation and gate
tests: every ``bench run --recipe moco`` of a slow test that should reuse it passes :data:`MOCO_TIER`.
"""

from __future__ import annotations

import json
from pathlib import Path

BASELINE = Path(__file__).resolve().parents[1] / "ci" / "baselines" / "smoke.json"


def tier_args(recipe: str) -> list[str]:
    """``--set`` arguments that reproduce the baseline's config of ``recipe``."""
    overrides = json.loads(BASELINE.read_text())["recipes"][recipe]["overrides"]
    return [arg for o in overrides for arg in ("--set", o)]


MOCO_TIER = tier_args("moco")
