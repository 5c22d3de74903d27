import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli import main
from leaderboard.collect import collect
from leaderboard.layouts import build_layout
from leaderboard.plots import read_scalars
from tests.conftest import make_result
from tests.leaderboard.test_leaderboard import _generative, _invariance


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    for seed, (base, mix) in enumerate([(50.0, 52.5), (51.0, 54.0), (52.0, 53.0)]):
        make_result(root, "moco", "linear/cifar10", seed, base)
        make_result(root, "moco_mixup", "linear/cifar10", seed, mix)
        _invariance(root, "moco", seed, 0.8 + seed / 100, 0.3)
        _invariance(root, "moco_mixup", seed, 0.7, 0.4 - seed / 100)
    make_result(root, "moco", "linear/imagenet", 0, 30.0)  # moco_mixup's cell stays missing
    _generative(make_result(root, "moco_oracle", "linear/cifar10", 0, 60.0), "ab" * 8, True)
    return root


def _csv(path: Path) -> dict[tuple[str, str, str], dict[str, str]]:
    with open(path, newline="") as fh:
        return {(r["table"], r["row"], r["column"]): r for r in csv.DictReader(fh)}


def _num(text: str) -> float | None:
    return float(text) if text else None


def test_directory_exports_round_trip(runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "board"
    assert main(["leaderboard", str(runs), "-o", str(out), "--no-plots"]) == 0
    assert {p.name for p in out.iterdir()} == {"families.md", "families.csv", "families.json", "index.md"}
    doc = json.loads((out / "families.json").read_text())
    assert doc["schema"] == "augbench-leaderboard/1" and doc["layout"] == "families"
    lines = _csv(out / "families.csv")
    tables = {t.id: t for t in build_layout("families", collect(runs))}
    n_cells = 0
    for t in doc["tables"]:
        model = tables[t["id"]]
        assert [c["key"] for c in t["columns"]] == [c.key for c in model.columns]
        for cell in t["cells"]:
            n_cells += 1
            line = lines[(t["id"], cell["row"], cell["column"])]
            tc = model.get(cell["row"], cell["column"])
            assert line["status"] == cell["status"] == ("missing" if tc.cell is None else "ok")
            if tc.cell is None:  # missing: never 0
                assert cell["mean"] is None and line["mean"] == "" and cell["n"] == 0
                continue
            assert cell["values"] == list(tc.cell.values) == [float(v) for v in line["values"].split(";")]
            assert cell["seeds"] == list(tc.cell.seeds) == [int(s) for s in line["seeds"].split(";")]
            assert cell["mean"] == tc.cell.mean == float(line["mean"]) and cell["std"] == float(line["std"])
            assert cell["best"] == tc.best == (line["best"] == "True")
            if tc.delta is None:
                assert cell["delta"] is None and line["delta"] == ""
            else:
                assert cell["delta"]["mean"] == tc.delta.mean == float(line["delta"])
                assert cell["delta"]["lo"] == _num(line["delta_lo"])
                assert cell["delta"]["n"] == int(line["delta_n"])
                noise = cell["delta"]["within_noise"]
                assert line["within_noise"] == ("" if noise is None else str(noise))
    assert n_cells == len(lines) == 3 * 2 + 2 * 2  # linear: 3 rows x 2 columns; representation: 2 x 2
    oracle = lines[("smoke-synthetic-linear-in-process-pytorch-v1", "moco_oracle", "linear/cifar10|top1")]
    assert oracle["oracle"] == "True" and oracle["display"] == "moco_oracle [ORACLE]"
    assert oracle["best"] == "False"
    rep = next(t for t in doc["tables"] if t["family"] == "representation")
    assert {c["direction"] for c in rep["columns"]} == {"descriptive"}
    assert not any(c["best"] for c in rep["cells"])
    index = (out / "index.md").read_text()
    assert "[markdown](families.md) · [CSV](families.csv) · [JSON](families.json)" in index
    assert main(["leaderboard", str(runs), "-o", str(out), "--no-plots", "--layout", "paper:2310.18850"]) == 0
    index = (out / "index.md").read_text()
    assert "layout `families`" in index and "layout `paper:2310.18850`" in index
    assert "[CSV](paper-2310.18850.csv)" in index


def test_markdown_file_with_plots(runs: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    board = tmp_path / "BOARD.md"
    assert main(["leaderboard", str(runs), "-o", str(board)]) == 0
    md = board.read_text()
    plots = tmp_path / "BOARD-plots"
    links = [line for line in md.splitlines() if line.startswith("![")]
    assert links and all("(BOARD-plots/" in line for line in links)
    names = {p.name for p in plots.iterdir()}
    for line in links:
        png = line.split("](", 1)[1].split(")", 1)[0]
        assert (tmp_path / png).is_file() and (tmp_path / png).with_suffix(".svg").is_file()
    assert any(n.endswith("-invariance-invariance-diversity.png") for n in names)
    assert sum(n.endswith("-bars.png") for n in names) == 2


def test_training_curves_from_tensorboard(runs: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from torch.utils.tensorboard import SummaryWriter

    run_dir = next((runs / "moco").glob("*s0*"))
    with SummaryWriter(log_dir=str(run_dir / "tensorboard")) as writer:
        for step in range(5):
            writer.add_scalar("train/loss", 5.0 - step, step)
            writer.add_scalar("train/images_per_second", 100.0, step)
    scalars = read_scalars(run_dir)
    assert scalars["train/loss"] == [(s, 5.0 - s) for s in range(5)]
    out = tmp_path / "board"
    assert main(["leaderboard", str(runs), "-o", str(out)]) == 0
    md = (out / "families.md").read_text()
    assert "### Training curves (TensorBoard logs of the runs above)" in md
    assert "(plots/families-curves-smoke-synthetic.png)" in md
    assert (out / "plots" / "families-curves-smoke-synthetic.svg").is_file()


def test_without_matplotlib_tables_are_still_written(
    runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    out = tmp_path / "board"
    assert main(["leaderboard", str(runs), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "plots skipped: matplotlib is not installed (pip install 'augbench[plots]')" in err
    assert {"families.md", "families.csv", "families.json", "index.md"} <= {p.name for p in out.iterdir()}
    assert not (out / "plots").exists()
    assert "plots skipped: matplotlib is not installed" in (out / "families.md").read_text()


def test_core_imports_without_matplotlib() -> None:
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "import bench.cli, bench.commands, leaderboard.board, leaderboard.plots, ci.check, ci.report\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])
