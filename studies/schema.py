"""The study file schema (typed frozen dataclasses, validated strictly by :func:`core.config.from_dict`).

::

    name: "2310.18850"                 # registry name (the file name without .yaml)
    title: ...                         # one line
    source: arXiv 2310.18850 ...       # the paper
    claims: ...                        # what the paper reports (quoted in docs/studies.md)
    data: imagenet100                  # pretraining dataset (sets data.dataset of every recipe)
    layouts: [paper:2310.18850, families]
    unknowns: ...                      # hyper-parameters the paper does not state, and the defaults used
    profiles:
      paper: {seeds: [0, 1, 2], set: [...], note: ..., blocks: [{recipes: [...], tasks: [...]}, ...]}
      smoke: {...}                     # the reduced CPU version: what is left out is said in `note`

A *block* is recipes x the profile's seeds x tasks; ``max_seeds: N`` limits a block to the first N of the
seeds (the profile's, or ``--seeds``), e.g. costly dense tasks on one seed.  Cells with the same task list
and seeds become one ``bench run`` call.  ``set`` holds recipe overrides (``key=value``, as
``bench run --set``) applied to every cell of the profile.  Names are checked against the registries by
:func:`validate_study`.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import BenchError, ConfigError


@dataclass(frozen=True)
class Block:
    """Recipes evaluated on the same tasks, for every seed or (``max_seeds``) the first few."""

    recipes: tuple[str, ...]
    tasks: tuple[str, ...]
    max_seeds: int | None = None

    def __post_init__(self) -> None:
        if not self.recipes or not self.tasks:
            raise ValueError("a block needs at least one recipe and one task")
        if self.max_seeds is not None and self.max_seeds < 1:
            raise ValueError("max_seeds must be at least 1")

    def seeds(self, seeds: tuple[int, ...] | list[int]) -> list[int]:
        """The seeds this block runs out of the study's ``seeds``."""
        return list(seeds if self.max_seeds is None else seeds[: self.max_seeds])


@dataclass(frozen=True)
class StudyProfile:
    """The study under one profile (``smoke`` or ``paper``)."""

    seeds: tuple[int, ...]
    blocks: tuple[Block, ...]
    set: tuple[str, ...] = ()
    note: str = ""

    def __post_init__(self) -> None:
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds must be a non-empty list of distinct integers")
        if not self.blocks:
            raise ValueError("blocks must list at least one block")


@dataclass(frozen=True)
class StudyProfiles:
    smoke: StudyProfile | None = None
    paper: StudyProfile | None = None


@dataclass(frozen=True)
class StudyConfig:
    """A declared study (see the module docstring)."""

    name: str
    title: str
    source: str
    profiles: StudyProfiles
    claims: str = ""
    data: str = "imagenet"
    layouts: tuple[str, ...] = ("families",)
    unknowns: str = ""

    def profile(self, name: str) -> StudyProfile:
        """The study under profile ``name``; a profile the study does not declare fails."""
        from pretrain.recipes import check_profile

        prof = getattr(self.profiles, check_profile(name))
        if prof is None:
            declared = [p for p in ("smoke", "paper") if getattr(self.profiles, p) is not None]
            raise ConfigError(
                f"study {self.name!r} has no {name!r} profile (declared: {', '.join(declared)})"
            )
        assert isinstance(prof, StudyProfile)
        return prof

    def overrides(self, profile: str) -> list[str]:
        """Recipe overrides of every cell under ``profile``: the pretraining dataset, then ``set``."""
        return [f"data.dataset={self.data}", *self.profile(profile).set]


def validate_study(study: StudyConfig, where: str) -> None:
    """Check every name of ``study`` against its registry (recipes, tasks, layouts, datasets) and resolve
    every recipe under each declared profile with the study's overrides; errors name the study file and the
    field, with the registry's "did you mean"."""
    from leaderboard.layouts import check_layout
    from pretrain.recipes import get_recipe, resolve_recipe
    from tasks.datasets.registry import DATASETS
    from tasks.registry import resolve_tasks

    def check(field: str, fn: object, *args: object) -> None:
        try:
            fn(*args)  # type: ignore[operator]
        except BenchError as exc:
            raise ConfigError(f"{where}: {field}: {exc}") from None

    for i, layout in enumerate(study.layouts):
        check(f"layouts[{i}]", check_layout, layout)
    check("data", DATASETS.get, study.data)
    if DATASETS.get(study.data).loader is None:
        raise ConfigError(f"{where}: data: {study.data!r} is not an image-classification dataset")
    for pname in ("smoke", "paper"):
        prof = getattr(study.profiles, pname)
        if prof is None:
            continue
        for b, block in enumerate(prof.blocks):
            field = f"profiles.{pname}.blocks[{b}]"
            for r, recipe in enumerate(block.recipes):
                check(f"{field}.recipes[{r}]", get_recipe, recipe)
                check(f"{field}.recipes[{r}]", resolve_recipe, recipe, pname, study.overrides(pname))
            for t, task in enumerate(block.tasks):
                check(f"{field}.tasks[{t}]", resolve_tasks, task)
    if study.profiles.smoke is None and study.profiles.paper is None:
        raise ConfigError(f"{where}: profiles: declare at least one of smoke, paper")
