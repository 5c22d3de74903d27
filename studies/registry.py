"""The study registry: shipped study files (``studies/files/<name>.yaml``), listed explicitly.

``bench study NAME`` also accepts the path of a study file (``*.yaml``), validated by the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from core.config import from_dict, load_yaml
from core.errors import ConfigError
from core.registry import Registry
from studies.schema import StudyConfig, validate_study


@dataclass(frozen=True)
class StudyEntry:
    """A shipped study: its file under ``studies/files`` and one line for listings."""

    file: str
    description: str

    def path(self) -> Path:
        return Path(str(resources.files("studies").joinpath("files", self.file)))


def build_study_registry() -> Registry[StudyEntry]:
    reg: Registry[StudyEntry] = Registry("study")
    reg.register(
        "2310.18850",
        StudyEntry(
            "2310.18850.yaml",
            "MoCo v2 x {none, erasing, cutout, cutmix, mixup} x {self, semi 50%, sup} on ImageNet-100",
        ),
    )
    reg.register(
        "2403.05966",
        StudyEntry(
            "2403.05966.yaml",
            "SimCLR, SimSiam, BYOL, Barlow Twins, MoCo x {baseline, +IC-GAN, +SD} on ImageNet; six probes",
        ),
    )
    return reg


STUDIES = build_study_registry()


def study_path(name: str) -> Path:
    """The file of study ``name`` (a registered name, or a path ending in .yaml)."""
    if name.endswith((".yaml", ".yml")):
        return Path(name).expanduser()
    return STUDIES.get(name).path()


def load_study(name: str) -> StudyConfig:
    """The validated study ``name`` (registered name or study file); see :mod:`studies.schema`."""
    path = study_path(name)
    raw = load_yaml(path)
    study = from_dict(StudyConfig, raw, path=str(path))
    if name in STUDIES and study.name != name:
        raise ConfigError(f"{path}: name {study.name!r} differs from its registry entry {name!r}")
    validate_study(study, str(path))
    return study
