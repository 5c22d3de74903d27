from pathlib import Path

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
