import json
from pathlib import Path

from bench.results import write_result
from leaderboard.collect import collect
from leaderboard.render import render
from tests.conftest import make_result


def test_mean_std_over_seeds_and_separate_tables(tmp_path: Path) -> None:
    make_result(tmp_path, "moco", "linear/cifar10", 0, 50.0)
    make_result(tmp_path, "moco", "linear/cifar10", 1, 54.0)
    make_result(tmp_path, "simclr", "linear/cifar10", 0, 40.0)
    make_result(tmp_path, "moco", "linear/cifar10", 0, 70.0, profile="paper", source="real")
    tables = collect(tmp_path)
    assert [(t.profile, t.data_source) for t in tables] == [("paper", "real"), ("smoke", "synthetic")]
    smoke = tables[1]
    cell = smoke.rows["moco"]["linear/cifar10"]
    assert cell.values == (50.0, 54.0) and cell.mean == 52.0
    assert abs(cell.std - 2.8284271) < 1e-6
    md = render(tmp_path)
    assert "| moco     | 52.00 ± 2.83 (n=2)" in md
    assert "## profile `paper`, data `real`" in md and "## profile `smoke`, data `synthetic`" in md
    assert "Do not edit by hand" in md


def test_distinct_configs_get_distinct_rows_and_newest_wins(tmp_path: Path) -> None:
    make_result(tmp_path, "moco", "linear/cifar10", 0, 50.0, config_hash="aaaaaa1")
    make_result(tmp_path, "moco", "linear/cifar10", 0, 60.0, config_hash="bbbbbb2")
    (table,) = collect(tmp_path)
    assert set(table.rows) == {"moco (cfg aaaaaa)", "moco (cfg bbbbbb)"}


def test_missing_cells_render_dash(tmp_path: Path) -> None:
    make_result(tmp_path, "moco", "linear/cifar10", 0, 50.0)
    make_result(tmp_path, "simclr", "linear/cifar100", 0, 30.0)
    md = render(tmp_path)
    assert "| moco     | 50.00            | -" in md


def test_empty(tmp_path: Path) -> None:
    assert "No result files found" in render(tmp_path)


def _generative(path: Path, digest: str, oracle: bool) -> None:
    doc = json.loads(path.read_text())
    doc["recipe"]["generative"] = {"generator": "oracle" if oracle else "sd-unclip", "oracle": oracle,
                                   "digest": digest, "p": 0.5, "views": [0, 1], "per_image": 10}  # fmt: skip
    write_result(path, doc)


def test_generative_rows_are_labelled_and_split_by_store(tmp_path: Path) -> None:
    _generative(make_result(tmp_path, "moco_oracle", "linear/cifar10", 0, 55.0), "d1" * 8, True)
    _generative(
        make_result(tmp_path, "moco_sd", "linear/cifar10", 0, 52.0, config_hash="c1"), "e1" * 8, False
    )
    _generative(
        make_result(tmp_path, "moco_sd", "linear/cifar10", 1, 53.0, config_hash="c1"), "e2" * 8, False
    )
    (table,) = collect(tmp_path)
    assert set(table.rows) == {
        "moco_oracle",
        "moco_sd (cfg c1, store e1e1e1)",
        "moco_sd (cfg c1, store e2e2e2)",
    }
    md = render(tmp_path)
    assert "| moco_oracle [ORACLE]" in md
    assert "- `moco_oracle`: variants from ORACLE re-renderings of the synthetic stand-in" in md
    assert "(store digest `" + "d1" * 8 + "`, 10 per image), p = 0.5 on views [0, 1]" in md
    assert "- `moco_sd (cfg c1, store e2e2e2)`: variants from sd-unclip" in md
