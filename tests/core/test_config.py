from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from core.config import apply_overrides, config_hash, from_dict, load_yaml, to_dict
from core.errors import ConfigError
from pretrain.recipes import resolve_recipe


@dataclass(frozen=True)
class Inner:
    lr: float = 0.1
    steps: int = 3
    mode: Literal["a", "b"] = "a"
    pair: tuple[float, float] = (0.0, 1.0)


@dataclass(frozen=True)
class KindA:
    kind: Literal["a"] = "a"
    x: int = 1


@dataclass(frozen=True)
class KindB:
    kind: Literal["b"] = "b"
    y: str = "hi"


@dataclass(frozen=True)
class Outer:
    name: str
    inner: Inner = field(default_factory=Inner)
    flag: bool = False
    limit: int | None = None
    stage: KindA | KindB = field(default_factory=KindA)
    stages: tuple[KindA | KindB, ...] = ()


def test_defaults_and_nested() -> None:
    cfg = from_dict(Outer, {"name": "r", "inner": {"lr": 1}})
    assert cfg.inner == Inner(lr=1.0)
    assert isinstance(cfg.inner.lr, float)
    assert cfg.limit is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "r", "inner": {"lrr": 1}}, "Outer.inner: unknown key 'lrr'; did you mean 'lr'?"),
        ({"name": "r", "inner": {"steps": 1.5}}, "Outer.inner.steps: expected an integer, got 1.5"),
        ({"name": "r", "inner": {"steps": True}}, "Outer.inner.steps: expected an integer"),
        ({"name": "r", "flag": "yes"}, "Outer.flag: expected true/false"),
        ({"name": "r", "inner": {"mode": "c"}}, "Outer.inner.mode: 'c' is not one of 'a', 'b'"),
        ({"name": "r", "inner": {"pair": [1.0]}}, "Outer.inner.pair: expected 2 items"),
        ({"inner": {}}, "Outer.name: required key is missing"),
        ({"name": "r", "inner": 3}, "Outer.inner: expected a mapping"),
        ({"name": "r", "stage": {"kind": "c"}}, "Outer.stage.kind: unknown kind 'c'"),
        ({"name": "r", "stage": {"kind": "b", "x": 1}}, "Outer.stage: unknown key 'x'"),
    ],
)
def test_strict_errors_name_the_key(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        from_dict(Outer, data)
    assert message in str(exc.value)


def test_tagged_union_dispatch() -> None:
    cfg = from_dict(Outer, {"name": "r", "stages": [{"kind": "b", "y": "z"}, {"kind": "a"}]})
    assert cfg.stages == (KindB(y="z"), KindA())


def test_overrides_are_yaml_parsed_and_validated() -> None:
    data = apply_overrides(
        {"name": "r", "stages": [{"kind": "a"}]}, ["inner.lr=0.5", "flag=true", "stages.0.x=7"]
    )
    cfg = from_dict(Outer, data)
    assert cfg.inner.lr == 0.5 and cfg.flag is True and cfg.stages[0] == KindA(x=7)
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["novalue"])
    with pytest.raises(ConfigError, match="not a valid index"):
        apply_overrides({"stages": []}, ["stages.3.x=1"])


def test_round_trip_and_hash() -> None:
    cfg = from_dict(Outer, {"name": "r", "stages": [{"kind": "b"}]})
    assert from_dict(Outer, to_dict(cfg)) == cfg
    assert config_hash(cfg) == config_hash(from_dict(Outer, to_dict(cfg)))
    assert config_hash(cfg) != config_hash(from_dict(Outer, {"name": "r"}))


def test_load_yaml_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_yaml(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_yaml(lst)


def test_recipe_resolution_and_overrides() -> None:
    smoke = resolve_recipe("moco", "smoke")
    paper = resolve_recipe("moco", "paper")
    assert smoke.backbone.name == "narrow_resnet18" and paper.backbone.name == "resnet50"
    assert paper.method.queue_size == 65536 and paper.method.momentum == 0.999
    assert paper.optim.name == "sgd" and paper.optim.lr == 0.03 and paper.train.epochs == 200
    assert paper.augment.views[0].size == 224 and paper.augment.views[0].blur_sigma == (0.1, 2.0)
    over = resolve_recipe("moco", "smoke", ["train.epochs=2", "method.temperature=0.5"])
    assert over.train.epochs == 2 and over.method.temperature == 0.5
    with pytest.raises(ConfigError, match="moco.method: temperature must be positive"):
        resolve_recipe("moco", "smoke", ["method.temperature=0"])
    with pytest.raises(ConfigError, match="did you mean 'batch_size'"):
        resolve_recipe("moco", "smoke", ["train.batchsize=3"])


def test_recipe_file_extends(tmp_path: Path) -> None:
    f = tmp_path / "my_moco.yaml"
    f.write_text("extends: moco\nmethod: {temperature: 0.1}\n")
    r = resolve_recipe(str(f), "smoke")
    assert r.name == "my_moco" and r.method.temperature == 0.1
    f.write_text("method: {temperature: 0.1}\n")
    with pytest.raises(ConfigError, match="extends"):
        resolve_recipe(str(f), "smoke")
    f.write_text("extends: moco\nmethod: {temprature: 0.1}\n")
    with pytest.raises(ConfigError, match="did you mean 'temperature'"):
        resolve_recipe(str(f), "smoke")
