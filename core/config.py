"""Strict conversion between YAML/dicts and typed frozen dataclasses.

The schema is the dataclass itself: :func:`from_dict` accepts exactly the dataclass' fields (unknown keys
fail with their dotted path and a "did you mean"), checks every value against its annotation
(``int``, ``float``, ``str``, ``bool``, ``Literal``, ``Optional``, ``tuple[...]``, nested dataclasses and
tagged unions of dataclasses that carry a ``kind: Literal[...]`` field), and fills omitted fields from
the dataclass defaults.  ``--set key=value`` overrides are applied to the raw mapping before validation
with :func:`apply_overrides`, so they are validated by the same rules.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from core.errors import ConfigError

C = TypeVar("C")


def load_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping; a syntax error or a non-mapping document is a :class:`ConfigError`."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where} invalid YAML ({getattr(exc, 'problem', exc)})") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at top level, got {type(data).__name__}")
    return data


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge ``update`` into a copy of ``base`` (mappings merge, everything else replaces)."""
    out: dict[str, Any] = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``"a.b.c=value"`` into its key path and a YAML-parsed value."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not of the form key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        raise ConfigError(f"override {text!r}: value is not valid YAML") from None
    return key.strip().split("."), value


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides to a nested mapping (list items addressed by index)."""
    out = json.loads(json.dumps(data))  # deep copy of plain data
    for text in overrides:
        path, value = parse_override(text)
        node: Any = out
        for i, part in enumerate(path[:-1]):
            where = ".".join(path[: i + 1])
            if isinstance(node, list):
                node = node[_index(part, node, where, text)]
            else:
                nxt = node.get(part)
                if nxt is None:
                    nxt = node[part] = {}
                elif not isinstance(nxt, dict | list):
                    raise ConfigError(f"override {text!r}: {where} is a value, not a section")
                node = nxt
        last = path[-1]
        if isinstance(node, list):
            node[_index(last, node, ".".join(path), text)] = value
        else:
            node[last] = value
    return out


def flatten(doc: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists are leaves): the key paths of
    :func:`apply_overrides`."""
    if not isinstance(doc, dict):
        return {prefix: doc}
    out: dict[str, Any] = {}
    for k, v in doc.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _index(part: str, node: list[Any], where: str, text: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"override {text!r}: {where} is not a valid index (list of {len(node)})")
    return int(part)


def from_dict(cls: type[C], data: Any, path: str = "") -> C:
    """Build dataclass ``cls`` from ``data`` strictly (see module docstring)."""
    return typing.cast(C, _convert(cls, data, path or cls.__name__))


def to_dict(obj: Any) -> Any:
    """Plain (JSON/YAML-ready) data for a config dataclass; tuples become lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def config_hash(obj: Any, length: int = 10) -> str:
    """A stable short hash of a config's content."""
    blob = json.dumps(to_dict(obj), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return _convert_dataclass(typing.cast(type, tp), value, path)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{path}: {value!r} is not one of {', '.join(repr(a) for a in args)}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if all(dataclasses.is_dataclass(a) for a in options) and len(options) > 1:
            return _convert_tagged(options, value, path)
        errors = []
        for option in options:
            try:
                return _convert(option, value, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{path}: {value!r} matches no allowed type")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{path}: expected a list, got {type(value).__name__} {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{path}: expected {len(args)} items, got {len(value)}")
        return tuple(_convert(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {_type_name(tp)} at {path}")


def _convert_dataclass(cls: type, value: Any, path: str) -> Any:
    if dataclasses.is_dataclass(value) and isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(f"{path}: expected a mapping, got {type(value).__name__} {value!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in value:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else f"; allowed: {', '.join(fields)}"
            raise ConfigError(f"{path}: unknown key {key!r}{hint}")
    kwargs: dict[str, Any] = {}
    for name, field in fields.items():
        sub = f"{path}.{name}"
        if name in value:
            kwargs[name] = _convert(hints[name], value[name], sub)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{sub}: required key is missing")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:  # __post_init__ validation
        raise ConfigError(f"{path}: {exc}") from None


def _convert_tagged(options: list[Any], value: Any, path: str) -> Any:
    by_kind: dict[str, Any] = {}
    for option in options:
        kind_type = typing.get_type_hints(option).get("kind")
        if typing.get_origin(kind_type) is not typing.Literal:
            raise TypeError(f"{option.__name__} needs a `kind: Literal[...]` field to be in a tagged union")
        for tag in typing.get_args(kind_type):
            by_kind[tag] = option
    if not isinstance(value, Mapping) or "kind" not in value:
        raise ConfigError(f"{path}: expected a mapping with a 'kind' key (one of {', '.join(by_kind)})")
    kind = value["kind"]
    if kind not in by_kind:
        close = difflib.get_close_matches(str(kind), list(by_kind), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else f"; allowed: {', '.join(by_kind)}"
        raise ConfigError(f"{path}.kind: unknown kind {kind!r}{hint}")
    return _convert_dataclass(by_kind[kind], value, path)
