"""``bench eval``: evaluate an external checkpoint (no pretraining) on tasks.

Output directory: ``<runs>/eval/<label>/<profile>-<data source>-<digest>/`` with ``load.json`` (what was
loaded, see :class:`pretrain.external.LoadReport`) and ``results/<family>-<dataset>.json``.  ``digest``
covers the loaded weights, so evaluating the same file twice lands in the same place and a different
file under the same label does not overwrite it.  The result files' ``recipe`` section names the
checkpoint (``name`` = the label, ``config`` = path, sha256, backbone, key prefix); the leaderboard lists
it as a row like any recipe.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.harness import log, overall_source, prepare_data, reference_resolver, run_tasks
from core.paths import DataRoot, cache_dir
from core.results import atomic_write_text
from pretrain import distributed
from pretrain.backbones import build_backbone
from pretrain.external import load_external
from tasks.base import Task, TaskContext
from tasks.datasets.base import OnCorrupt
from tasks.features import state_dict_digest


@dataclass(frozen=True)
class EvalReport:
    out_dir: Path
    result_files: list[Path]
    metrics: dict[str, dict[str, float]]
    load_summary: str


def default_label(path: Path) -> str:
    """``ckpt:<file name without extensions>``."""
    name = path.name
    for suffix in (".safetensors", ".tar", ".pth", ".pt", ".ckpt"):
        name = name.removesuffix(suffix)
    return f"ckpt:{name}"


def evaluate_checkpoint(
    path: Path,
    backbone_name: str,
    tasks: list[Task],
    profile: str,
    data: DataRoot,
    runs: Path,
    *,
    label: str | None = None,
    prefix: str | None = None,
    allow_partial: bool = False,
    on_corrupt: OnCorrupt = "raise",
    progress: bool = True,
    seed: int = 0,
    device: torch.device | None = None,
) -> EvalReport:
    """Load ``path`` into ``backbone_name`` and run every task (see module docstring)."""
    device = device or distributed.init_from_env()
    backbone = build_backbone(backbone_name)
    report = load_external(backbone.net, path, prefix=prefix, allow_partial=allow_partial)
    log(report.summary())
    backbone = backbone.to(device).eval()
    label = label or default_label(path)
    datasets = list(dict.fromkeys(d for t in tasks for d in t.datasets))
    sources = prepare_data(data, datasets)
    digest = state_dict_digest(backbone.net)
    safe_label = label.replace("/", "_").replace(":", "_")
    out_dir = runs / "eval" / safe_label / f"{profile}-{overall_source(sources)}-{digest[:10]}"
    atomic_write_text(out_dir / "load.json", json.dumps(report.as_dict(), indent=2) + "\n")
    ctx = TaskContext(
        data_root=data.path,
        synthetic=data.synthetic,
        profile=profile,
        device=device,
        cache_dir=cache_dir(),
        seed=seed,
        weights_digest=digest,
        progress=progress,
        on_corrupt=on_corrupt,
        work_dir=out_dir / "tasks",
        reference=reference_resolver(profile, data, runs, device, seed, backbone_name, progress),
    )
    subject = {
        "name": label,
        "config": {
            "checkpoint": str(path),
            "sha256": report.sha256,
            "backbone": backbone_name,
            "prefix": report.prefix,
        },
        "config_hash": digest[:16],
    }
    summary = {"external_checkpoint": report.as_dict(), "seconds": None}
    files, metrics = run_tasks(backbone, tasks, ctx, subject, sources, summary, out_dir)
    return EvalReport(out_dir, files, metrics, report.summary())
