import json
from pathlib import Path
from typing import Any

import pytest

from core.errors import UnknownNameError
from core.results import write_result
from leaderboard.collect import collect
from leaderboard.layouts import baseline_recipe, build_layout, families
from leaderboard.render import render
from tests.conftest import make_result


def _table(tables: list[Any], family: str, **meta: str) -> Any:
    (t,) = [t for t in tables if t.family == family and all(getattr(t, k) == v for k, v in meta.items())]
    return t


def test_mean_std_over_seeds_and_separate_tables(tmp_path: Path) -> None:
    make_result(tmp_path, "moco", "linear/cifar10", 0, 50.0)
    make_result(tmp_path, "moco", "linear/cifar10", 1, 54.0)
    make_result(tmp_path, "simclr", "linear/cifar10", 0, 40.0)
    make_result(tmp_path, "moco", "linear/cifar10", 0, 70.0, profile="paper", source="real")
    tables = families(collect(tmp_path))
    assert [(t.profile, t.data_source) for t in tables] == [("paper", "real"), ("smoke", "synthetic")]
    smoke = tables[1]
    (col,) = smoke.columns
    cell = smoke.get("moco", col.key).cell
    assert cell is not None and cell.values == (50.0, 54.0) and cell.seeds == (0, 1) and cell.mean == 52.0
    assert abs(cell.std - 2.8284271) < 1e-6
    md = render(tmp_path)
    assert "| moco     | **52.00** ± 2.83 (n=2)" in md
    assert "## profile `paper`, data `real`" in md and "## profile `smoke`, data `synthetic`" in md
    assert "Do not edit by hand" in md
    assert "protocol `unnamed` · backend in-process (PyTorch) · task version 1" in md


def test_one_table_per_family_and_task_version(tmp_path: Path) -> None:
    make_result(tmp_path, "moco", "linear/cifar10", 0, 50.0)
    make_result(tmp_path, "moco", "linear/imagenet", 0, 30.0)
    make_result(tmp_path, "moco", "knn/cifar10", 0, 45.0)
    make_result(tmp_path, "moco", "linear/food101", 0, 20.0, version=2)
    tables = families(collect(tmp_path))
    assert [(t.family, list(t.task_versions.values())) for t in tables] == [
        ("linear", [1, 1]),
        ("linear", [2]),
        ("knn", [1]),
    ]
    assert [c.header for c in tables[0].columns] == ["imagenet", "cifar10"]  # the datasets' listing order
    md = render(tmp_path)
    assert md.count("### Linear probe (frozen features)") == 2 and "task version 2" in md


def test_distinct_configs_get_distinct_rows_and_newest_wins(tmp_path: Path) -> None:
    make_result(tmp_path, "moco", "linear/cifar10", 0, 50.0, config_hash="aaaaaa1")
    make_result(tmp_path, "moco", "linear/cifar10", 0, 60.0, config_hash="bbbbbb2")
    make_result(tmp_path, "simclr", "linear/cifar10", 0, 10.0)
    make_result(tmp_path, "simclr", "linear/cifar10", 0, 11.0, created="2026-02-01T00:00:00")
    # same seed and config, newer file: replaces the older one (written under another run directory)
    newer = json.loads(make_result(tmp_path / "x", "simclr", "linear/cifar10", 0, 12.0).read_text())
    newer["created"] = "2026-03-01T00:00:00"
    write_result(tmp_path / "simclr" / "other" / "results" / "linear-cifar10.json", newer)
    (table,) = families(collect(tmp_path))
    assert [r.label for r in table.rows] == ["moco (cfg aaaaaa)", "moco (cfg bbbbbb)", "simclr"]
    cell = table.get("simclr", table.columns[0].key).cell
    assert cell is not None and cell.values == (12.0,)


def test_missing_cells_are_missing_never_zero(tmp_path: Path) -> None:
    make_result(tmp_path, "moco", "linear/cifar10", 0, 50.0)
    make_result(tmp_path, "simclr", "linear/cifar100", 0, 30.0)
    (table,) = families(collect(tmp_path))
    assert table.get("moco", "linear/cifar100|top1").cell is None
    md = render(tmp_path)
    assert "| moco     | **50.00** (n=1) |             | —" in md
    assert "| 0.00" not in md and "| **0.00" not in md


def test_empty(tmp_path: Path) -> None:
    assert "No result files found" in render(tmp_path)


def test_baseline_rule() -> None:
    assert baseline_recipe("moco_mixup") == "moco"
    assert baseline_recipe("simclr_sd") == "simclr"
    assert baseline_recipe("moco_sd_mixup") == "moco"
    assert baseline_recipe("moco_semi_erasing") == "moco_semi"
    assert baseline_recipe("moco_sup_icgan_cutmix") == "moco_sup"
    assert baseline_recipe("moco") is None and baseline_recipe("moco_sup") is None
    assert baseline_recipe("ckpt:resnet50.pth") is None and baseline_recipe("my_recipe") is None


def test_delta_against_the_baseline_over_paired_seeds(tmp_path: Path) -> None:
    for seed, (base, mix, cut) in enumerate([(50.0, 52.0, 52.0), (51.0, 54.0, 53.1), (52.0, 53.0, 53.9)]):
        make_result(tmp_path, "moco", "linear/cifar10", seed, base)
        make_result(tmp_path, "moco_mixup", "linear/cifar10", seed, mix)
        make_result(tmp_path, "moco_cutmix", "linear/cifar10", seed, cut)
    make_result(tmp_path, "moco_erasing", "linear/cifar10", 5, 60.0)  # no paired seed
    make_result(tmp_path, "simclr_mixup", "linear/cifar10", 0, 40.0)  # baseline simclr has no result
    (table,) = families(collect(tmp_path))
    key = table.columns[0].key
    rows = {r.label: r for r in table.rows}
    assert rows["moco_mixup"].baseline == "moco" and rows["simclr_mixup"].baseline is None
    mix, cut = table.get("moco_mixup", key).delta, table.get("moco_cutmix", key).delta
    assert mix is not None and mix.mean == pytest.approx(2.0) and mix.within_noise  # diffs 2, 3, 1
    assert cut is not None and cut.mean == pytest.approx(2.0) and cut.within_noise is False  # 2, 2.1, 1.9
    assert table.get("moco_erasing", key).delta is None
    md = render(tmp_path)
    assert "| +2.00 ≈" in md and "| +2.00       |" in md
    assert table.get("moco_erasing", key).best  # best mean, whatever its seeds


def _invariance(root: Path, recipe: str, seed: int, inv: float, div: float, legacy: bool = False) -> None:
    hib = {"invariance": True, "diversity": True} if legacy else {"invariance": None, "diversity": None}
    make_result(
        root,
        recipe,
        "invariance",
        seed,
        inv,
        extra={
            "metrics": {"invariance": inv, "diversity": div},
            "primary_metric": "invariance",
            "higher_is_better": hib,
            "task": {"name": "invariance", "version": 1, "family": "invariance", "protocol": {"name": "iv"}},
        },
    )


def test_descriptive_metrics_never_get_a_best_marker(tmp_path: Path) -> None:
    _invariance(tmp_path, "moco", 0, 0.8, 0.3)
    _invariance(tmp_path, "moco_mixup", 0, 0.7, 0.4, legacy=True)  # a file written before null existed
    make_result(tmp_path, "moco", "linear/cifar10", 0, 50.0)
    tables = families(collect(tmp_path))
    rep = _table(tables, "representation")
    assert [c.header for c in rep.columns] == ["invariance", "diversity"]
    assert {c.direction for c in rep.columns} == {"descriptive"}
    assert not any(tc.best for tc in rep.cells.values())
    assert _table(tables, "linear").get("moco", "linear/cifar10|top1").best
    md = render(tmp_path)
    assert "0.800 (n=1)" in md and "**0.800**" not in md and "invariance (descriptive)" in md


def _det(root: Path, recipe: str, backend: str, ap50: float, seed: int = 0) -> None:
    task = f"det/voc07@{backend}"
    make_result(
        root,
        recipe,
        task,
        seed,
        ap50,
        extra={
            "metrics": {"AP": ap50 / 2, "AP50": ap50, "AP75": ap50 / 3},
            "primary_metric": "AP50",
            "higher_is_better": {"AP": True, "AP50": True, "AP75": True},
            "task": {
                "name": task,
                "version": 1,
                "family": "det",
                "protocol": {"name": "moco-det-voc07-c4", "backend": backend},
            },
        },
    )


def _seg(root: Path, recipe: str, dataset: str, miou: float) -> None:
    make_result(
        root,
        recipe,
        f"seg/{dataset}",
        0,
        miou,
        extra={
            "metrics": {"mIoU": miou, "mAcc": miou + 5, "aAcc": 90.0},
            "primary_metric": "mIoU",
            "higher_is_better": {"mIoU": True, "mAcc": True, "aAcc": True},
            "task": {
                "name": f"seg/{dataset}",
                "version": 1,
                "family": "seg",
                "protocol": {"name": "fcn", "framework": "mmsegmentation"},
            },
        },
    )


def test_backends_never_share_a_table_or_column(tmp_path: Path) -> None:
    _det(tmp_path, "moco", "detectron2", 60.0)
    _det(tmp_path, "moco", "torchvision", 50.0)
    _det(tmp_path, "moco_mixup", "torchvision", 52.0)
    _seg(tmp_path, "moco", "voc12aug", 40.0)
    tables = families(collect(tmp_path))
    d2 = _table(tables, "det", backends=["detectron2"])
    tv = _table(tables, "det", backends=["torchvision"])
    assert [c.header for c in d2.columns] == ["voc07 AP50", "voc07 AP", "voc07 AP75"]
    assert {c.task for c in d2.columns} == {"det/voc07@detectron2"}
    assert {c.task for c in tv.columns} == {"det/voc07@torchvision"} and len(tv.rows) == 2
    assert _table(tables, "seg").backends == ["mmsegmentation"]
    md = render(tmp_path)
    assert "backend detectron2" in md and "backend torchvision" in md and "backend mmsegmentation" in md
    assert "### Object detection" in md and "### Semantic segmentation" in md
    paper = build_layout("paper:2310.18850", collect(tmp_path))
    (table,) = paper
    det_cols = [c for c in table.columns if c.metric == "AP"]
    assert [c.header for c in det_cols] == [
        "det AP [det/voc07@detectron2, v1]",
        "det AP [det/voc07@torchvision, v1]",
    ]
    assert table.get("moco", det_cols[0].key).cell.values == (30.0,)  # type: ignore[union-attr]
    assert table.get("moco_mixup", det_cols[0].key).cell is None


def _generative(path: Path, digest: str, oracle: bool) -> None:
    doc = json.loads(path.read_text())
    doc["recipe"]["generative"] = {
        "generator": "oracle" if oracle else "sd-unclip",
        "oracle": oracle,
        "digest": digest,
        "p": 0.5,
        "views": [0, 1],
        "per_image": 10,
    }
    write_result(path, doc)


def test_generative_rows_are_labelled_and_split_by_store(tmp_path: Path) -> None:
    _generative(make_result(tmp_path, "moco_oracle", "linear/cifar10", 0, 55.0), "d1" * 8, True)
    _generative(
        make_result(tmp_path, "moco_sd", "linear/cifar10", 0, 52.0, config_hash="c1"), "e1" * 8, False
    )
    _generative(
        make_result(tmp_path, "moco_sd", "linear/cifar10", 1, 53.0, config_hash="c1"), "e2" * 8, False
    )
    make_result(tmp_path, "moco", "linear/cifar10", 0, 50.0)
    (table,) = families(collect(tmp_path))
    assert {r.label for r in table.rows} == {
        "moco",
        "moco_oracle",
        "moco_sd (cfg c1, store e1e1e1)",
        "moco_sd (cfg c1, store e2e2e2)",
    }
    # the oracle is a reference, not a competitor: never "best" although it has the highest mean
    assert table.get("moco_oracle", "linear/cifar10|top1").best is False
    assert table.get("moco_sd (cfg c1, store e2e2e2)", "linear/cifar10|top1").best
    md = render(tmp_path)
    assert "| moco_oracle [ORACLE]" in md
    assert "- `moco_oracle`: variants from ORACLE re-renderings of the synthetic stand-in" in md
    assert "(store digest `" + "d1" * 8 + "`, 10 per image), p = 0.5 on views [0, 1]" in md
    assert "- `moco_sd (cfg c1, store e2e2e2)`: variants from sd-unclip" in md
    paper = render(tmp_path, "paper:2403.05966")
    assert "| +oracle (moco_oracle) [ORACLE]" in paper
    assert "`moco_sd` has results under several configs or variant stores" in paper


def test_paper_2310_layout(tmp_path: Path) -> None:
    for seed in (0, 1):
        make_result(tmp_path, "moco", "linear/imagenet", seed, 30.0 + seed)
        make_result(tmp_path, "moco_erasing", "linear/imagenet", seed, 32.0 + seed)
        _invariance(tmp_path, "moco", seed, 0.8, 0.3)
        _invariance(tmp_path, "moco_erasing", seed, 0.7, 0.35)
    make_result(tmp_path, "moco_sup", "linear/imagenet", 0, 40.0)
    make_result(tmp_path, "simclr", "linear/imagenet", 0, 99.0)  # not a row of this layout
    (table,) = build_layout("paper:2310.18850", collect(tmp_path))
    augs = ("none", "erasing", "cutout", "cutmix", "mixup")
    assert [(r.section, r.name) for r in table.rows] == [
        (s, a) for s in ("self-supervised", "supervised") for a in augs
    ]
    assert [c.header for c in table.columns] == ["ImageNet top-1", "Linv", "Ldiv"]
    assert table.get("moco_erasing", table.columns[0].key).delta.mean == 2.0  # type: ignore[union-attr]
    assert table.get("moco_sup", table.columns[0].key).best  # "simclr" is no row here
    md = render(tmp_path, "paper:2310.18850")
    assert "| self-supervised | none (moco)" in md and "| supervised      | none (moco_sup)" in md
    assert "30.50 ± 0.71 (n=2)" in md and "| 32.50 ± 0.71 (n=2) Δ +2.00 |" in md  # diffs 2, 2: no noise
    assert "0.700 ± 0.000 (n=2) Δ -0.100 |" in md and "semi-supervised" not in md
    assert "| —" in md


def test_paper_2403_layout(tmp_path: Path) -> None:
    make_result(tmp_path, "simclr", "linear/cifar10", 0, 40.0)
    make_result(tmp_path, "simclr_icgan", "linear/cifar10", 0, 42.0)
    make_result(tmp_path, "simclr", "linear-aug/cifar10", 0, 45.0)
    make_result(tmp_path, "moco", "knn/cifar10", 0, 1.0)  # no linear result: no moco section
    tables = build_layout("paper:2403.05966", collect(tmp_path))
    assert [t.id for t in tables] == [
        "smoke-synthetic-2403.05966-linear",
        "smoke-synthetic-2403.05966-linear-aug",
    ]
    first = tables[0]
    assert [r.name for r in first.rows] == ["baseline", "+IC-GAN", "+SD"]  # no oracle row without results
    assert [c.header for c in first.columns] == ["CIFAR-10"]
    assert first.get("simclr_icgan", first.columns[0].key).delta.mean == 2.0  # type: ignore[union-attr]


def test_unknown_layout() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'paper:2310.18850'"):
        build_layout("paper:2310.1885", [])
