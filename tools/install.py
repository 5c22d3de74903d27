"""Create (or complete) the project's virtual environment: torch, torchvision, augbench with ``[dev]``, and
the detectron2 wheels found in ``--wheels`` (detectron2 is not on the package index).

``make setup`` runs this with the system Python (standard library only).  It installs with uv when uv can
be installed into the venv, else with pip; both resolve the same requirements.  uv is used for speed: the
CUDA build of torch with its ``nvidia-*`` wheels is ~5.5 GB unpacked, which pip unpacks and byte-compiles
serially (~2.5 min on 2 cores) and uv in parallel (~75 s; BENCHMARKS.md).  Both byte-compile at install
time: where ``PYTHONDONTWRITEBYTECODE`` is set (as on our machines) nothing is compiled later, and every
process would pay ~9 s more to import torch, detectron2 and mmseg from source.

uv does not read pip's configuration, so the machine's pip settings (config files and ``PIP_*``
variables: index-url, extra-index-url, find-links, constraint, cert) are handed to it as flags: a package
mirror or a version cap configured for pip applies to both.  ``--index-strategy unsafe-best-match`` gives
pip's rule (the best version across all indexes).  Any uv failure falls back to pip.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import venv
from pathlib import Path

#: The releases these machines carry (see ../shared/notes/stack-facts.md); "setuptools<81" keeps
#: ``pkg_resources`` for the detection/segmentation stacks.
PINNED = ("torch==2.14.1", "torchvision==0.29.1", "setuptools<81")
#: pip settings that have a uv flag of the same meaning; a multi-valued setting gives one flag per value.
PIP_TO_UV = {
    "index-url": "--index-url",
    "extra-index-url": "--extra-index-url",
    "find-links": "--find-links",
    "constraint": "--constraint",
}


#: pip's precedence of the sections ``pip config list`` prints (it prints them sorted by name): a
#: ``PIP_*`` variable (``:env:``) beats the command's section (``install``), which beats ``global``.
SECTION_RANK = {"global": 0, "install": 1, ":env:": 2}


def pip_settings(python: str) -> dict[str, list[str]]:
    """pip's effective settings for the keys of :data:`PIP_TO_UV` plus ``cert``, from ``pip config list``
    (config files merged by pip, and ``PIP_*`` variables); where several sections set a key, the one pip
    obeys (:data:`SECTION_RANK`) wins.  Values are split on whitespace (multi-valued settings)."""
    out = subprocess.run(
        [python, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
    ).stdout
    ranked: dict[str, tuple[int, list[str]]] = {}
    for line in out.splitlines():
        m = re.fullmatch(r"(:env:|[a-z]+)\.([a-z-]+)='(.*)'", line.strip())
        if not m or m[1] not in SECTION_RANK or not (m[2] in PIP_TO_UV or m[2] == "cert"):
            continue
        rank = SECTION_RANK[m[1]]
        if m[2] not in ranked or rank >= ranked[m[2]][0]:
            ranked[m[2]] = (rank, m[3].split())
    return {key: values for key, (_, values) in ranked.items()}


def uv_flags(settings: dict[str, list[str]]) -> list[str]:
    """uv flags with the meaning of pip's ``settings``."""
    flags = ["--index-strategy", "unsafe-best-match"]
    for key, flag in PIP_TO_UV.items():
        for value in settings.get(key, []):
            flags += [flag, value]
    return flags


def run(cmd: list[str], env: dict[str, str] | None = None) -> bool:
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, env=env, check=False).returncode == 0


def install_with_uv(py: str, requirements: list[str]) -> bool:
    if not run([py, "-m", "pip", "install", "-q", "uv"]):
        return False
    uv = str(Path(py).parent / "uv")
    settings = pip_settings(py)
    env = dict(os.environ)
    if settings.get("cert"):  # the CA bundle pip trusts (a proxy's or a mirror's certificate)
        env.setdefault("SSL_CERT_FILE", settings["cert"][0])
    uv_install = [uv, "pip", "install", "-q", "--compile-bytecode", "--python", py]
    return run([*uv_install, *uv_flags(settings), *requirements], env)


def install_with_pip(py: str, requirements: list[str]) -> bool:
    pip = [py, "-m", "pip", "install", "-q"]
    pinned = [r for r in requirements if r in PINNED]
    rest = [r for r in requirements if r not in PINNED]
    return run([*pip, "--upgrade", "pip"]) and run([*pip, *pinned]) and run([*pip, *rest])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, required=True)
    parser.add_argument("--wheels", type=Path, help="folder of detectron2-*.whl to install when present")
    parser.add_argument("--installer", choices=("auto", "uv", "pip"), default="auto")
    args = parser.parse_args(argv)
    py = str(args.venv / "bin" / "python")
    if not Path(py).exists():
        venv.create(args.venv, with_pip=True)
    wheels = sorted(args.wheels.glob("detectron2-*.whl")) if args.wheels and args.wheels.is_dir() else []
    requirements = [*PINNED, "-e", ".[dev]", *map(str, wheels)]
    if args.installer != "pip" and install_with_uv(py, requirements):
        return 0
    if args.installer == "uv":
        return 1
    if args.installer == "auto":
        print("uv was not usable here; installing with pip", flush=True)
    return 0 if install_with_pip(py, requirements) else 1


if __name__ == "__main__":
    sys.exit(main())
