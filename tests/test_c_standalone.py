"""The C core builds on its own, warning-free, and runs under ASan+UBSan and TSan.

A VMM written in C and the fuzzers use csrc/ without Python; tests/c/standalone.c is such a
user. Each compiler that is installed builds it (-Wall -Wextra -Werror); each sanitizer that
compiler supports runs it. Missing ones skip with the reason.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
SOURCES = sorted(str(p) for p in CSRC.glob("*.c"))
FLAGS = ["-std=c11", "-D_POSIX_C_SOURCE=200809L", "-Wall", "-Wextra", "-Werror", "-g", "-O1"]
SANITIZERS = {
    "asan-ubsan": ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"],
    "tsan": ["-fsanitize=thread"],
}


def _supports(cc: str, flags: list[str], tmp: Path) -> bool:
    src = tmp / "probe.c"
    src.write_text("int main(void) { return 0; }\n")
    r = subprocess.run([cc, *flags, str(src), "-o", str(tmp / "probe")], capture_output=True)
    return r.returncode == 0


@pytest.mark.parametrize("sanitizer", sorted(SANITIZERS))
@pytest.mark.parametrize("cc", ["gcc", "clang"])
def test_standalone_core(cc: str, sanitizer: str, tmp_path: Path) -> None:
    if not shutil.which(cc):
        pytest.skip(f"{cc} is not installed")
    flags = SANITIZERS[sanitizer]
    if not _supports(cc, flags, tmp_path):
        pytest.skip(f"{cc} cannot build with {' '.join(flags)} here (runtime missing)")
    exe = tmp_path / "standalone"
    build = subprocess.run(
        [
            cc,
            *FLAGS,
            *flags,
            f"-I{CSRC}",
            str(ROOT / "tests/c/standalone.c"),
            *SOURCES,
            "-lpthread",
            "-o",
            str(exe),
        ],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr
    assert "warning" not in build.stderr, build.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "all checks passed" in run.stdout
    assert "runtime error" not in run.stderr and "WARNING: ThreadSanitizer" not in run.stderr


def test_makefile_builds_the_static_library(tmp_path: Path) -> None:
    if not shutil.which("make") or not shutil.which("cc"):
        pytest.skip("make or cc is not installed")
    out = tmp_path / "build"
    shutil.copytree(CSRC, out)
    r = subprocess.run(["make", "-C", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (out / "libmmiofilter.a").exists()
    assert "warning" not in r.stderr
