"""Matrix runs: recipe lists and globs, skipping existing results, the summary, `bench ls recipes --grid`."""

import json
from pathlib import Path

import pytest

from bench.cli import main
from bench.matrix import expand_recipes
from core.errors import ConfigError

FAST = ["--set", "train.batch_size=32", "--set", "train.epochs=1", "--no-progress"]


def test_expand_recipes() -> None:
    assert expand_recipes("moco, moco_mixup,moco") == ["moco", "moco_mixup"]
    from pretrain.recipes import RECIPES

    mixing = expand_recipes("moco_*mix*")  # registry order
    assert mixing == [n for n in RECIPES.names() if n.startswith("moco_") and "mix" in n]
    assert mixing[:2] == ["moco_mixup", "moco_cutmix"] and "moco_sd_mixup" in mixing
    globbed = expand_recipes("simclr_[ms]*")
    assert (
        globbed[0] == "simclr_mixup"
        and "simclr_sd" in globbed
        and all(n.startswith("simclr_") for n in globbed)
    )
    assert expand_recipes("moco,my_recipe.yaml") == ["moco", "my_recipe.yaml"]  # files pass through
    with pytest.raises(ConfigError, match=r"recipe pattern 'mocco\*' matches no recipe; did you mean 'moco'"):
        expand_recipes("mocco*")
    with pytest.raises(ConfigError, match="empty"):
        expand_recipes(" , ")


def test_ls_recipes_grid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ls", "recipes", "--grid"]) == 0
    out = capsys.readouterr().out
    assert "self-supervised, no generative source:" in out and "supervised, no generative source:" in out
    assert "semi-supervised, generative source sd (sd-unclip store):" in out
    line = next(x for x in out.splitlines() if x.startswith("moco ") and "moco_erasing" in x)
    assert line.split() == ["moco", "moco", "moco_mixup", "moco_cutmix", "moco_cutout", "moco_erasing"]
    sup = out.split("supervised, no generative source:")[2].split("\n\n")[0]
    assert "simclr" not in sup and "moco_sup_mixup" in sup  # label regimes exist for MoCo only


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    assert (
        main(["data", "synth", "--root", str(root), "--scale", "tiny", "--datasets", "imagenet,cifar10"]) == 0
    )
    return root


def _summary(out: str) -> dict[tuple[str, str], list[str]]:
    rows = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0] in ("moco", "moco_mixup") and parts[1].isdigit():
            rows[(parts[0], parts[1])] = parts[2:5]
    return rows


def test_matrix_run_skips_existing_results(
    tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    argv = ["run", "--recipe", "moco,moco_mix*", "--seeds", "0,1", "--tasks", "knn/cifar10",
            "--data-root", str(tiny_root), "--runs-dir", str(runs), *FAST]  # fmt: skip
    assert main(argv) == 0
    summary = _summary(capsys.readouterr().out)
    assert summary == {(r, s): ["trained", "1", "0"] for r in ("moco", "moco_mixup") for s in ("0", "1")}
    files = sorted(runs.glob("*/*/results/knn-cifar10.json"))
    assert len(files) == 4
    created = {f: json.loads(f.read_text())["created"] for f in files}

    assert main(argv) == 0  # every cell exists: nothing is trained or evaluated again
    captured = capsys.readouterr()
    assert _summary(captured.out) == {k: ["reused", "0", "1"] for k in summary}
    assert "its result exists" in captured.err
    assert {f: json.loads(f.read_text())["created"] for f in files} == created

    stale = files[0]  # a result of another task version is not reused
    doc = json.loads(stale.read_text())
    doc["task"]["version"] = 0
    stale.write_text(json.dumps(doc))
    assert main(argv) == 0
    assert sorted(_summary(capsys.readouterr().out).values()) == [["reused", "0", "1"]] * 3 + [
        ["reused", "1", "0"]
    ]
    assert json.loads(stale.read_text())["task"]["version"] >= 1

    assert main([*argv, "--rerun-tasks"]) == 0
    assert _summary(capsys.readouterr().out) == {k: ["reused", "1", "0"] for k in summary}
