import pytest

from core.errors import UnknownNameError
from core.registry import Registry


def test_register_and_get() -> None:
    reg: Registry[int] = Registry("thing")
    reg.register("alpha", 1)
    reg.register("beta", 2)
    assert reg.get("beta") == 2
    assert reg.names() == ["alpha", "beta"]
    assert "alpha" in reg and "gamma" not in reg
    assert len(reg) == 2


def test_duplicate_raises() -> None:
    reg: Registry[int] = Registry("thing")
    reg.register("alpha", 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("alpha", 2)


def test_unknown_suggests_nearest() -> None:
    reg: Registry[int] = Registry("recipe")
    for n in ("moco", "simclr", "byol"):
        reg.register(n, 0)
    with pytest.raises(UnknownNameError) as exc:
        reg.get("mocoo")
    assert str(exc.value) == "unknown recipe 'mocoo'; did you mean 'moco'?"
    assert exc.value.suggestions == ["moco"]


def test_unknown_without_close_match_lists_known() -> None:
    reg: Registry[int] = Registry("task")
    reg.register("linear/cifar10", 0)
    with pytest.raises(UnknownNameError, match="known tasks: linear/cifar10"):
        reg.get("zzzz")


def test_invalid_name() -> None:
    with pytest.raises(ValueError):
        Registry[int]("x").register(" spaced ", 1)
