"""tools/install.py hands pip's configuration to uv: the same indexes, links, constraints and CA bundle."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_install() -> ModuleType:
    spec = importlib.util.spec_from_file_location("install_tool", ROOT / "tools" / "install.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PIP_CONFIG_LIST = """\
:env:.default-timeout='180'
:env:.find-links='/opt/wheels'
global.cert='/etc/ssl/certs/ca.crt'
global.constraint='/etc/xdg/pip/constraints.txt'
global.extra-index-url='file:///opt/pypi/simple file:///opt/pypi-more/simple'
global.find-links='/srv/old-wheels'
global.index-url='https://mirror.example/simple'
install.constraint='/srv/install-constraints.txt'
"""


def test_pip_settings_become_uv_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    install = load_install()

    def fake_run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        assert cmd[1:] == ["-m", "pip", "config", "list"]
        return subprocess.CompletedProcess(cmd, 0, PIP_CONFIG_LIST, "")

    monkeypatch.setattr(install.subprocess, "run", fake_run)
    settings = install.pip_settings("python")
    assert settings["cert"] == ["/etc/ssl/certs/ca.crt"]
    # pip's precedence, whatever the printed order: PIP_* (":env:") > "install" section > "global"
    assert settings["find-links"] == ["/opt/wheels"]
    assert settings["constraint"] == ["/srv/install-constraints.txt"]
    assert "default-timeout" not in settings  # no uv meaning: not passed
    assert install.uv_flags(settings) == [
        "--index-strategy", "unsafe-best-match",
        "--index-url", "https://mirror.example/simple",
        "--extra-index-url", "file:///opt/pypi/simple",
        "--extra-index-url", "file:///opt/pypi-more/simple",
        "--find-links", "/opt/wheels",
        "--constraint", "/srv/install-constraints.txt",
    ]  # fmt: skip


def test_pip_settings_of_this_interpreter_parse() -> None:
    """Against the real ``pip config list`` of this machine: every line it prints for a key we hand on
    is understood (nothing is silently dropped by the pattern)."""
    install = load_install()
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
    ).stdout
    keys = {line.split("=", 1)[0].rsplit(".", 1)[-1] for line in listed.splitlines() if "=" in line}
    wanted = keys & {*install.PIP_TO_UV, "cert"}
    assert set(install.pip_settings(sys.executable)) == wanted


def test_uv_failure_falls_back_to_pip(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    install = load_install()
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    (tmp_path / "venv" / "bin" / "python").touch()
    calls: list[str] = []
    monkeypatch.setattr(install, "install_with_uv", lambda py, reqs: calls.append("uv") or False)
    monkeypatch.setattr(install, "install_with_pip", lambda py, reqs: calls.append("pip") or True)
    assert install.main(["--venv", str(tmp_path / "venv")]) == 0
    assert calls == ["uv", "pip"]
    calls.clear()
    assert install.main(["--venv", str(tmp_path / "venv"), "--installer", "uv"]) == 1
    assert calls == ["uv"]
