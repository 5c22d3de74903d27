import json
import os
from pathlib import Path

import pytest

from core.results import atomic_write_text, iter_results, validate, write_result
from tests.conftest import make_result


def test_write_and_read_back(tmp_path: Path) -> None:
    p = make_result(tmp_path, "moco", "linear/cifar10", 0, 55.0)
    (res,) = list(iter_results(tmp_path))
    assert res.path == p and res.recipe == "moco" and res.primary == 55.0 and res.higher_is_better


def test_invalid_documents_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="schema"):
        write_result(tmp_path / "r.json", {"schema": "other"})
    doc = json.loads(make_result(tmp_path, "moco", "linear/cifar10", 0, 1.0).read_text())
    del doc["provenance"]
    with pytest.raises(ValueError, match="provenance"):
        validate(doc)


def test_iter_results_skips_corrupt_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_result(tmp_path, "moco", "linear/cifar10", 0, 1.0)
    bad = tmp_path / "moco" / "x" / "results" / "bad.json"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"schema": "augbench-result/1", "trunc')
    assert len(list(iter_results(tmp_path))) == 1
    assert "skipping" in capsys.readouterr().err


def test_atomic_write_never_leaves_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.json"
    atomic_write_text(target, "old")

    def boom(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_text(target, "new content")
    assert target.read_text() == "old"  # the previous file is intact


def test_metric_direction_and_descriptive_metrics(tmp_path: Path) -> None:
    from core.results import metric_direction

    doc = json.loads(make_result(tmp_path, "moco", "linear/cifar10", 0, 55.0).read_text())
    doc["higher_is_better"] = {"top1": True, "top5": False, "spread": None}
    assert [metric_direction(doc, m) for m in ("top1", "top5", "spread")] == [
        "higher",
        "lower",
        "descriptive",
    ]
    # files written before null existed stored true for invariance / CKA: their families are descriptive
    doc["task"]["family"] = "invariance"
    assert metric_direction(doc, "top1") == "descriptive"
    (res,) = iter_results(tmp_path)
    assert res.direction("top1") == "higher" and res.higher_is_better is True
