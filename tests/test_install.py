"""`make -C csrc install` gives a C program everything it needs: the shared library (soname,
version, only the public API exported), the static library, the headers and mmiofilter.pc.

The install goes into a temporary prefix from a copy of csrc/, and a C program is then built
with nothing but `pkg-config --cflags --libs mmiofilter` (tests/c/pkgconfig_user.c).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from mmiofilter._core import lib

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("make", "cc", "pkg-config", "nm", "readelf")),
    reason="needs make, cc, pkg-config, nm and readelf",
)


def _run(*cmd: str | Path, **kw: Any) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert r.returncode == 0, f"{cmd}: {r.stdout}{r.stderr}"
    return r


@pytest.fixture(scope="module")
def prefix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The library installed into a fresh prefix, built from a copy of csrc/."""
    tmp = tmp_path_factory.mktemp("install")
    shutil.copytree(CSRC, tmp / "csrc")
    build = _run("make", "-C", tmp / "csrc", "-j2")
    assert "warning" not in build.stderr, build.stderr
    _run("make", "-C", tmp / "csrc", "install", f"PREFIX={tmp / 'prefix'}")
    return tmp / "prefix"


def _version() -> str:
    return ".".join(
        str(getattr(lib, f"MF_VERSION_{p}")) for p in ("MAJOR", "MINOR", "PATCH")
    )


def test_install_lays_out_the_library(prefix: Path) -> None:
    v = _version()
    major = v.split(".")[0]
    libdir = prefix / "lib"
    assert (libdir / f"libmmiofilter.so.{v}").is_file()
    assert os.readlink(libdir / f"libmmiofilter.so.{major}") == f"libmmiofilter.so.{v}"
    assert os.readlink(libdir / "libmmiofilter.so") == f"libmmiofilter.so.{major}"
    assert (libdir / "libmmiofilter.a").is_file()
    assert (prefix / "include/mmiofilter.h").is_file()
    assert (prefix / "include/mmiofilter_kvm.h").is_file()
    dyn = _run("readelf", "-d", libdir / f"libmmiofilter.so.{v}").stdout
    assert f"Library soname: [libmmiofilter.so.{major}]" in dyn


def test_shared_library_exports_exactly_the_public_api(prefix: Path) -> None:
    """Every function the public headers declare (as cffi parsed them) is exported, and
    nothing else: no internal helper, no guard global."""
    out = _run("nm", "-D", "--defined-only", prefix / "lib/libmmiofilter.so").stdout
    exported = {line.split()[-1] for line in out.splitlines() if line.strip()}
    public = {
        n for n in dir(lib) if n.startswith("mf_") and not n.startswith("mf_py_")
        and callable(getattr(lib, n))
    }  # fmt: skip
    assert exported == public


def test_pkg_config_alone_builds_a_program(prefix: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PKG_CONFIG_PATH": str(prefix / "lib/pkgconfig")}
    assert _run("pkg-config", "--modversion", "mmiofilter", env=env).stdout.strip() == _version()
    flags = _run("pkg-config", "--cflags", "--libs", "mmiofilter", env=env).stdout.split()
    exe = tmp_path / "user"
    build = _run(
        "cc", "-std=c11", "-Wall", "-Wextra", "-Werror", ROOT / "tests/c/pkgconfig_user.c",
        "-o", exe, *flags,
    )  # fmt: skip
    assert "warning" not in build.stderr
    assert "libmmiofilter.so" in _run("ldd", exe).stdout  # the shared library, not the archive
    run = _run(exe, env={**env, "LD_LIBRARY_PATH": str(prefix / "lib")})
    assert run.stdout.strip() == (
        f"header {_version()} library {_version()} blocked 1 filled 1 passed 1"
    )
    # and statically, with the private libraries pkg-config adds for that
    static = _run("pkg-config", "--static", "--libs", "mmiofilter", env=env).stdout.split()
    exe_static = tmp_path / "user-static"
    _run(
        "cc", "-std=c11", ROOT / "tests/c/pkgconfig_user.c", "-o", exe_static,
        f"-I{prefix / 'include'}", f"{prefix / 'lib/libmmiofilter.a'}",
        *[f for f in static if not f.startswith(("-L", "-lmmiofilter"))],
    )  # fmt: skip
    assert _run(exe_static).returncode == 0


def test_destdir_stages_and_uninstall_removes(tmp_path: Path) -> None:
    shutil.copytree(CSRC, tmp_path / "csrc")
    stage, prefix = tmp_path / "stage", "/opt/mmiofilter"
    _run("make", "-C", tmp_path / "csrc", "-j2", "install", f"PREFIX={prefix}", f"DESTDIR={stage}")
    pc = (stage / "opt/mmiofilter/lib/pkgconfig/mmiofilter.pc").read_text()
    assert "prefix=/opt/mmiofilter\n" in pc  # the final prefix, not the staging area
    assert str(stage) not in pc
    installed = [p for p in stage.rglob("*") if not p.is_dir()]
    assert len(installed) == 7  # .so, its two links, .a, two headers, .pc
    _run("make", "-C", tmp_path / "csrc", "uninstall", f"PREFIX={prefix}", f"DESTDIR={stage}")
    assert [p for p in stage.rglob("*") if not p.is_dir()] == []
