"""CLI behaviour: listing, showing, and one-line errors with exit status 2."""

import subprocess
import sys

import pytest

from bench.cli import main


def test_ls_and_show(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ls", "recipes"]) == 0
    assert "moco" in capsys.readouterr().out
    assert main(["ls", "tasks"]) == 0
    out = capsys.readouterr().out
    assert "linear/cifar10" in out and "cifar10 = linear/cifar10" in out
    assert main(["ls", "backbones"]) == 0
    assert "narrow_resnet18" in capsys.readouterr().out
    assert main(["show", "recipe", "moco", "--profile", "paper", "--set", "train.epochs=7"]) == 0
    out = capsys.readouterr().out
    assert "epochs: 7" in out and "queue_size: 65536" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["show", "recipe", "mocco"], "unknown recipe 'mocco'; did you mean 'moco' or"),
        (["show", "recipe", "moco", "--profile", "smok"], "unknown profile 'smok'; did you mean 'smoke'?"),
        (["show", "recipe", "moco", "--set", "train.epocs=1"], "unknown key 'epocs'; did you mean 'epochs'?"),
        (["run", "--recipe", "moco", "--tasks", "cifar1O"], "unknown task 'cifar1O'; did you mean"),
        (["run", "--recipe", "mocco", "--tasks", "cifar10"], "did you mean 'moco'"),
        (["data", "verify", "cifar10"], "no data root given"),
    ],
)
def test_user_errors_are_one_line_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_missing_real_dataset_says_where_and_how(
    tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["run", "--recipe", "moco", "--tasks", "cifar10", "--data-root", str(tmp_path), "--no-progress"]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "bench data" in err


def test_console_script_entry_point() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.cli", "show", "recipe", "nope"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("bench: error: unknown recipe 'nope'")
