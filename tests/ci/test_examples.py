"""The CI workflow example parses and every ``bench`` command in it is valid for this CLI."""

import shlex
from pathlib import Path

import yaml

from bench.cli import build_parser

EXAMPLE = Path(__file__).resolve().parents[2] / "ci" / "examples" / "github-actions-smoke.yml"


def test_workflow_example_commands_parse() -> None:
    doc = yaml.safe_load(EXAMPLE.read_text())
    steps = doc["jobs"]["smoke"]["steps"]
    commands = [s["run"] for s in steps if str(s.get("run", "")).startswith("bench ")]
    assert [c.split()[1] for c in commands] == ["run", "ci", "leaderboard"]
    parser = build_parser()
    for command in commands:
        args = parser.parse_args(shlex.split(command)[1:])
        assert args.command in ("run", "ci", "leaderboard")
    run = parser.parse_args(shlex.split(commands[0])[1:])
    baseline = yaml.safe_load((EXAMPLE.parents[1] / "baselines" / "smoke.json").read_text())
    assert set(run.recipe.split(",")) == set(baseline["recipes"])  # the workflow runs what the baseline gates
    assert set(run.tasks.split(",")) == {e["task"] for e in baseline["entries"]}
    for spec in baseline["recipes"].values():  # with the overrides the baseline's configs were measured with
        assert run.overrides == spec["overrides"]
    assert any(s.get("uses", "").startswith("actions/upload-artifact") for s in steps)
