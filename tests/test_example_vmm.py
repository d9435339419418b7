"""examples/vmm.c, the plain-C KVM VMM, builds against the installed library with pkg-config
alone and runs its guest: every KVM_EXIT_MMIO goes through mf_access_mmio, the direct page
costs no exit, and the policy holds (the program checks the device and the guest's view and
exits non-zero otherwise)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"


def _skip_reason() -> str | None:
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "no /dev/kvm (or not readable and writable)"
    missing = [t for t in ("make", "cc", "pkg-config") if not shutil.which(t)]
    if missing:
        return f"needs {', '.join(missing)}"
    return None


REASON = _skip_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")


def _run(*cmd: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, env=env, timeout=120
    )
    assert r.returncode == 0, f"{cmd}:\n{r.stdout}{r.stderr}"
    return r


def test_example_vmm_runs_its_guest_through_the_filter(tmp_path: Path) -> None:
    shutil.copytree(CSRC, tmp_path / "csrc")
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    prefix = tmp_path / "prefix"
    _run("make", "-C", tmp_path / "csrc", "-j2", "install", f"PREFIX={prefix}")
    env = {
        **os.environ,
        "PKG_CONFIG_PATH": str(prefix / "lib/pkgconfig"),
        "LD_LIBRARY_PATH": str(prefix / "lib"),
    }
    build = _run("make", "-C", tmp_path / "examples", "vmm", env=env)
    assert "warning" not in build.stderr, build.stderr
    out = _run(tmp_path / "examples/vmm", env=env).stdout.splitlines()
    assert "direct area [0x2000, +0xe000): mapped, no exits" in out
    assert [line for line in out if line.startswith("exit:")] == [
        "exit: read  0x0000 len 4 -> pass",
        "exit: write 0x0200 len 4 -> masked",
        "exit: read  0x0200 len 4 -> pass",
        "exit: write 0x1000 len 4 -> blocked",
        "exit: read  0x1000 len 4 -> blocked",
    ]
    assert [line for line in out if line.startswith("guest read")] == [
        "guest read 0x140000a1",  # the ID register, through the filter
        "guest read 0x02000000",  # NV_PMC_ENABLE after the guest cleared it: bit 25 held
        "guest read 0xffffffff",  # the denied window reads fill
        "guest read 0x140000a1",  # the direct page, no exit
    ]
    assert out[-1] == "the policy held"
