"""The recipe registry: named recipes resolved from layered YAML into a validated RecipeConfig.

Resolution of recipe ``R`` under profile ``P`` (later layers win; mappings merge, lists replace):

1. the schema defaults of :class:`pretrain.config.RecipeConfig`;
2. ``profiles/P.yaml`` (scale: backbone, data, epochs, batch size, optimiser defaults);
3. ``methods/<method>.yaml`` top level, then its ``profiles: P:`` section;
4. the recipe entry's own layer (augmentation stages, label regime; later issues);
5. a user recipe file's contents (``--recipe path/to/file.yaml``, which names ``extends: <recipe>`` or
   ``extends: <another file>.yaml``, resolved relative to it; chains are merged base-first, cycles fail);
6. ``--set key.path=value`` overrides.

The merged mapping is validated strictly (:func:`core.config.from_dict`): unknown or mistyped keys
fail with their dotted path.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from core.config import apply_overrides, deep_merge, from_dict, load_yaml
from core.errors import ConfigError, UnknownNameError
from core.registry import Registry
from pretrain.config import RecipeConfig
from pretrain.recipes.grid import RecipeEntry, explain_invalid, grid_entries

PROFILES = ("smoke", "paper")


def _yaml(rel: str) -> dict[str, Any]:
    path = Path(str(resources.files("pretrain.recipes").joinpath(rel)))
    return load_yaml(path)


def build_recipe_registry() -> Registry[RecipeEntry]:
    """Every recipe of the grid (see :mod:`pretrain.recipes.grid`), registered explicitly."""
    reg: Registry[RecipeEntry] = Registry("recipe")
    for entry in grid_entries():
        reg.register(entry.name, entry)
    return reg


def get_recipe(name: str) -> RecipeEntry:
    """The registered recipe ``name``; a grammatical but invalid combination says why."""
    if name not in RECIPES:
        reason = explain_invalid(name)
        if reason:
            raise ConfigError(reason)
    return RECIPES.get(name)


RECIPES = build_recipe_registry()


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise UnknownNameError("profile", profile, PROFILES)
    return profile


def _file_layers(name: str) -> tuple[str, str, list[dict[str, Any]]]:
    """``(registered base recipe, recipe name, file layers base-first)`` of a recipe file whose ``extends``
    names a registered recipe or another recipe file (relative to the extending file); cycles fail."""
    chain: list[Path] = []
    layers: list[dict[str, Any]] = []
    recipe_name: str | None = None
    while name.endswith((".yaml", ".yml")):
        path = Path(name) if not chain or Path(name).is_absolute() else chain[-1].parent / name
        path = path.resolve()
        if path in chain:
            loop = " -> ".join(p.name for p in [*chain, path])
            raise ConfigError(f"{chain[0]}: recursive extends ({loop})")
        layer = load_yaml(path)
        base = layer.pop("extends", None)
        if not isinstance(base, str):
            raise ConfigError(f"{path}: a recipe file must name the recipe it extends (extends: moco)")
        file_name = layer.pop("name", path.stem)
        recipe_name = recipe_name or file_name
        chain.append(path)
        layers.insert(0, layer)
        name = base
    return name, recipe_name or name, layers


def recipe_layers(name: str, profile: str) -> tuple[str, list[dict[str, Any]]]:
    """The recipe's name and its YAML layers (without overrides), in merge order."""
    check_profile(profile)
    name, recipe_name, user_layers = _file_layers(name)
    entry = get_recipe(name)
    method = _yaml(f"methods/{entry.method}.yaml")
    method_profiles = method.pop("profiles", {}) or {}
    layers = [
        _yaml(f"profiles/{profile}.yaml"),
        method,
        method_profiles.get(profile, {}) or {},
        entry.layer,
        *user_layers,
    ]
    return recipe_name, layers


def resolve_recipe(name: str, profile: str = "smoke", overrides: Sequence[str] = ()) -> RecipeConfig:
    """The validated :class:`RecipeConfig` for recipe ``name`` (or a recipe file) under ``profile``."""
    recipe_name, layers = recipe_layers(name, profile)
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = deep_merge(merged, layer)
    merged["name"] = recipe_name
    merged = apply_overrides(merged, overrides)
    if merged.get("name") != recipe_name:
        raise ConfigError("the recipe name cannot be overridden with --set (use a recipe file)")
    return from_dict(RecipeConfig, merged, path=recipe_name)
