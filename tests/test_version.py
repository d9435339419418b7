"""One version: MF_VERSION_MAJOR/MINOR/PATCH in csrc/mmiofilter.h. The library's
mf_version(), MF_VERSION_STRING, mmiofilter.__version__, the installed distribution's version
(pyproject's `dynamic = ["version"]`, filled by setup.py from the header), `mmiofilter
--version`, `python -m mmiofilter --version` and the Makefile's version must all say it."""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from mmiofilter._core import ffi, lib

import mmiofilter

ROOT = Path(__file__).resolve().parent.parent


def _header_version() -> str:
    text = (ROOT / "csrc/mmiofilter.h").read_text()
    parts = [re.search(rf"^#define MF_VERSION_{p} (\d+)$", text, re.M) for p in ("MAJOR", "MINOR", "PATCH")]  # noqa: E501
    assert all(parts)
    return ".".join(m.group(1) for m in parts if m)


def test_c_and_python_agree() -> None:
    v = _header_version()
    assert ffi.string(lib.mf_version()).decode() == v
    assert f"{lib.MF_VERSION_MAJOR}.{lib.MF_VERSION_MINOR}.{lib.MF_VERSION_PATCH}" == v
    assert mmiofilter.__version__ == v
    assert importlib.metadata.version("mmiofilter") == v


def test_pyproject_takes_the_version_from_the_header() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project
    assert "version" in project["dynamic"]


@pytest.mark.parametrize(
    "cmd", [["mmiofilter", "--version"], [sys.executable, "-m", "mmiofilter", "--version"]]
)
def test_version_option(cmd: list[str]) -> None:
    if cmd[0] == "mmiofilter":
        exe = shutil.which("mmiofilter", path=str(Path(sys.executable).parent))
        if exe is None:
            pytest.skip("the mmiofilter script is not installed next to this Python")
        cmd = [exe, *cmd[1:]]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"mmiofilter {_header_version()}\n"


def test_python_m_runs_the_command() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "mmiofilter", "profiles"], capture_output=True, text=True, cwd=ROOT
    )
    assert r.returncode == 0, r.stderr
    assert "nvidia-gv100" in r.stdout


@pytest.mark.skipif(not shutil.which("make"), reason="make is not installed")
def test_makefile_version() -> None:
    out = subprocess.run(
        ["make", "-s", "-C", str(ROOT / "csrc"), "print-build"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert f"version: {_header_version()}" in out.splitlines()
