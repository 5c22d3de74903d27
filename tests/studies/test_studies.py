"""Study files (strict schema, registry names), planning and grouping, the CLI, a tiny study end to end."""

import argparse
import json
import textwrap
from pathlib import Path

import pytest

from bench.cli import build_parser, main
from core.errors import ConfigError
from studies.registry import STUDIES, load_study
from studies.run import launcher_argv, plan_cells, run_groups
from tests.conftest import make_result

TINY = """\
name: tiny
title: two recipes, two seeds, one task
source: a test
data: imagenet
layouts: [families, "paper:2403.05966"]
profiles:
  smoke:
    seeds: [0, 1]
    set: [train.batch_size=32, train.max_steps=3, data.max_images=256]
    blocks:
      - recipes: [moco, simclr]
        tasks: [knn/cifar10]
"""


def _write(tmp_path: Path, text: str, name: str = "study.yaml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_shipped_studies_validate() -> None:
    assert STUDIES.names() == ["2310.18850", "2403.05966"]
    s = load_study("2310.18850")
    assert s.data == "imagenet100" and s.layouts[0] == "paper:2310.18850"
    paper = {r for b in s.profile("paper").blocks for r in b.recipes}
    assert len(paper) == 15 and {"moco_semi_cutout", "moco_sup_mixup"} <= paper
    g = load_study("2403.05966")
    smoke = {r for b in g.profile("smoke").blocks for r in b.recipes}
    assert smoke == {"moco", "moco_oracle"}
    assert len({t for b in g.profile("paper").blocks for t in b.tasks}) == 6


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "recipes: [moco, simclr]",
            "recipes: [moco, simclrr]",
            r"recipes\[1\]: unknown recipe 'simclrr'.*simclr",
        ),
        (
            "tasks: [knn/cifar10]",
            "tasks: [knn/cifar1O]",
            r"tasks\[0\]: unknown task 'knn/cifar1O'.*knn/cifar10",
        ),
        ("layouts: [families,", "layouts: [familys,", r"layouts\[0\]: unknown layout 'familys'.*families"),
        ("    seeds: [0, 1]", "    seeds: [0, 1]\n    sets: []", r"unknown key 'sets'; did you mean 'set'"),
        ("data: imagenet", "data: voc", "not an image-classification dataset"),
        ("data: imagenet", "data: imagenet\ncolour: red", "unknown key 'colour'"),
        ("train.max_steps=3", "train.max_stepz=3", "max_stepz"),
        ("seeds: [0, 1]", "seeds: []", "seeds must be a non-empty list"),
        (
            "tasks: [knn/cifar10]",
            "tasks: [knn/cifar10]\n        max_seeds: 0",
            "max_seeds must be at least 1",
        ),
    ],
)
def test_study_files_validate_strictly(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in TINY
    with pytest.raises(ConfigError, match=message):
        load_study(_write(tmp_path, TINY.replace(old, new)))


def test_plan_groups_and_launcher_pass_through(tmp_path: Path) -> None:
    study = load_study(_write(tmp_path, TINY))
    with pytest.raises(ConfigError, match="no 'paper' profile"):
        study.profile("paper")
    cells = plan_cells(study, "smoke")
    assert [(c.recipe, c.seed) for c in cells] == [("moco", 0), ("moco", 1), ("simclr", 0), ("simclr", 1)]
    assert run_groups(cells, {}) == [(["moco", "simclr"], [0, 1], ("knn/cifar10",))]
    have = {("moco", 0): {"knn/cifar10"}, ("simclr", 0): {"knn/cifar10"}}
    assert run_groups(cells, have) == [(["moco", "simclr"], [1], ("knn/cifar10",))]
    have[("moco", 1)] = {"knn/cifar10"}
    assert run_groups(cells, have) == [(["simclr"], [1], ("knn/cifar10",))]
    shipped = plan_cells(load_study("2310.18850"), "smoke", seeds=[3, 4])
    dense = ("det/voc07", "instseg/coco", "seg/voc12aug")
    moco = [c for c in shipped if c.recipe == "moco"]
    assert [(c.seed, c.specs) for c in moco] == [
        (3, ("linear/imagenet100", "invariance", *dense)),  # max_seeds: 1 takes the first of --seeds
        (4, ("linear/imagenet100", "invariance")),
    ]
    lin = ("linear/imagenet100", "invariance")
    assert run_groups(shipped, {}) == [
        (["moco"], [3], (*lin, *dense)),
        (["moco"], [4], lin),
        (["moco_erasing", "moco_mixup", "moco_sup"], [3, 4], lin),
    ]
    args = build_parser().parse_args(
        [
            "study",
            "x",
            "--launcher",
            "slurm",
            "--slurm-partition",
            "gpu",
            "--gpus-per-node",
            "4",
            "--split-tasks",
        ]
    )
    assert launcher_argv(args) == [
        "--launcher", "slurm", "--slurm-partition", "gpu", "--gpus-per-node", "4", "--split-tasks"
    ]  # fmt: skip
    assert launcher_argv(argparse.Namespace()) == []


def test_smoke_cost_model_follows_precision_and_method(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default smoke rate is MoCo's measured rate for the precision the recipe resolves to on this CPU
    (``auto`` follows core.hardware), divided by the method's measured relative cost."""
    import core.hardware
    from pretrain.recipes import resolve_recipe
    from studies import plan

    moco, simclr = (resolve_recipe(r, "smoke", ["train.epochs=10"]) for r in ("moco", "simclr"))
    for native in (True, False):
        monkeypatch.setattr(core.hardware, "cpu_has_native_bf16", lambda native=native: native)
        precision = "bf16" if native else "fp32"
        assert plan.smoke_rate(moco) == (plan.SMOKE_THROUGHPUT[precision], precision)
        assert plan.smoke_rate(simclr)[0] == pytest.approx(
            plan.SMOKE_THROUGHPUT[precision] / plan.SMOKE_METHOD_COST["simclr"]
        )
    pinned = resolve_recipe("moco", "smoke", ["train.precision=fp32"])
    monkeypatch.setattr(core.hardware, "cpu_has_native_bf16", lambda: True)
    assert plan.smoke_rate(pinned) == (plan.SMOKE_THROUGHPUT["fp32"], "fp32")
    cell = next(c for c in plan_cells(load_study("2403.05966"), "smoke") if c.recipe == "moco")
    overrides = load_study("2403.05966").overrides("smoke")
    tasks = 6 * plan.SMOKE_TASK_SECONDS["linear"]
    tier = resolve_recipe("moco", "smoke", overrides).train  # the study's own batch and epochs
    steps = tier.epochs * (5000 // tier.batch_size)
    expected = steps * tier.batch_size / plan.SMOKE_THROUGHPUT["fp32"] + tasks
    assert plan.cell_seconds(cell, "smoke", overrides, 5000, None) == pytest.approx(expected)
    assert plan.cell_seconds(cell, "smoke", overrides, 5000, 100.0) == pytest.approx(
        steps * tier.batch_size / 100.0 + tasks
    )


def test_cli_ls_show_and_dry_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ls", "studies"]) == 0
    out = capsys.readouterr().out
    assert "2310.18850" in out and "2403.05966" in out
    assert main(["show", "study", "2403.05966"]) == 0
    assert "moco_oracle" in capsys.readouterr().out
    assert main(["study", "2403.05966", "--profile", "paper", "--dry-run", "--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "45 cells" in out and "GPU-hours" in out and "1281167 pretraining images" in out
    assert "MISS moco_sd:" in out and "bench generate --generator sd-unclip" in out
    data = tmp_path / "data"
    assert main(["study", "2310.18850", "--dry-run", "--data-root", str(data)]) == 0
    out = capsys.readouterr().out
    assert "MISS imagenet100" in out and "8 cells" in out
    assert main(["study", "2403.0596"]) == 2
    assert "unknown study '2403.0596'; did you mean '2403.05966'" in capsys.readouterr().err


@pytest.mark.slow
def test_tiny_study_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, runs = tmp_path / "data", tmp_path / "runs"
    assert (
        main(["data", "synth", "--root", str(data), "--scale", "tiny", "--datasets", "imagenet,cifar10"]) == 0
    )
    # results of other recipes / configs in the same runs directory must stay out of the study's tables
    make_result(runs, "byol", "knn/cifar10", 0, 50.0)
    make_result(runs, "moco", "knn/cifar10", 0, 99.0, config_hash="other")
    study = _write(tmp_path, TINY)
    argv = ["study", study, "--data-root", str(data), "--runs-dir", str(runs), "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "4 cells, 4 run, 0 skipped" in out
    board = runs / "studies" / "tiny" / "families.md"
    text = board.read_text()
    assert "moco" in text and "simclr" in text and "byol" not in text and "cfg other" not in text
    assert "moco (cfg" not in text  # one identity within the study: rows are plain recipe names
    assert (runs / "studies" / "tiny" / "index.md").is_file()
    results = sorted(p for r in ("moco", "simclr") for p in (runs / r).glob("*-s*-*/results/*.json"))
    assert len(results) == 5  # 4 cells + the planted moco result of another config
    files = [*results, *runs.glob("*/smoke-synthetic-s*/pretrain.json")]
    # a NEWER result of the same recipe, config, seed and task under another data root (a run without the
    # study's --data-root) must neither hide the study's own result nor reach its tables
    own = next(
        p for p in results if "moco" in p.parts and "-s0-" in p.parent.parent.name and "other" not in str(p)
    )
    doc = json.loads(own.read_text())
    doc["data"]["root"], doc["created"], doc["metrics"]["top1"] = "/elsewhere", "2999-01-01T00:00:00", 77.7
    foreign = runs / "moco" / "smoke-synthetic-s0-elsewhere" / "results" / own.name
    foreign.parent.mkdir(parents=True)
    foreign.write_text(json.dumps(doc))
    before = {p: p.stat().st_mtime_ns for p in files}
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "4 cells, 0 run, 4 skipped" in out and out.count("skipped (finished)") == 4
    assert {p: p.stat().st_mtime_ns for p in files} == before  # nothing recomputed
    text = board.read_text()
    assert "77.7" not in text and "moco (cfg" not in text
