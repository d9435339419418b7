"""End to end: an unmodified QEMU with vfio-user-pci boots the project's PCI guest
(mmiofilter/vfiouser/guest.asm) against the served, filtered simulated V100.

QEMU is found through MMIOFILTER_QEMU or in the cache tools/build-qemu-vfio-user.sh builds
into; without one the tests skip saying so. The guest finds the device by configuration cycles,
places BAR0 and runs its program; the test checks what the guest saw, what reached the device,
and that the direct pages produced no message at all.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from mmiofilter.kvm.program import Program
from mmiofilter.vfiouser import guest
from tests.vfiouser_fixtures import (
    ISOLATED_LINKS,
    LINK_DISABLE,
    LINK_FIELD,
    NV_PMC_ENABLE,
    NVLINK_BIT,
    Served,
    serve,
)

BAR_GPA = 0xC0000000  # below 4 GiB, 16 MiB aligned, above the guest's 64 MiB of RAM
DIRECT = 0x400010  # a register on a page the default profile leaves direct
CHIP_ID = 0x140000A1
VENDOR, DEVICE = 0x10DE, 0x1DB1


def _cache_qemu() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mmiofilter" / "qemu" / "bin" / "qemu-system-x86_64"


@cache
def find_qemu() -> tuple[str | None, str]:
    """(path, "") or (None, why not)."""
    env = os.environ.get("MMIOFILTER_QEMU")
    candidates = [env] if env else [str(_cache_qemu()), shutil.which("qemu-system-x86_64")]
    tried = []
    for c in candidates:
        if not c or not os.access(c, os.X_OK):
            continue
        try:
            out = subprocess.run([c, "-device", "help"], capture_output=True, text=True,
                                 timeout=30).stdout  # fmt: skip
        except (OSError, subprocess.TimeoutExpired):
            continue
        if '"vfio-user-pci"' in out:
            return c, ""
        tried.append(c)
    where = f"{', '.join(tried)} lacks it; " if tried else ""
    return None, (
        f"no QEMU with vfio-user-pci ({where}set MMIOFILTER_QEMU, or build one with "
        "tools/build-qemu-vfio-user.sh into ~/.cache/mmiofilter/qemu)"
    )


def _qemu_or_skip() -> str:
    qemu, why = find_qemu()
    if qemu is None:
        pytest.skip(why)
    if shutil.which("nasm") is None:
        pytest.skip("the PCI guest needs nasm")
    return qemu


def program() -> Program:
    p = Program()
    p.read(BAR_GPA + 0x0)  # NV_PMC_BOOT_0: allowed, on a trapped page
    p.write(BAR_GPA + DIRECT, 0x1234)  # a direct page: no message
    p.read(BAR_GPA + DIRECT)
    p.write(BAR_GPA + NV_PMC_ENABLE, 0)  # clearing NV_PMC_ENABLE_NVLINK: masked
    p.read(BAR_GPA + NV_PMC_ENABLE)
    p.write(BAR_GPA + LINK_DISABLE, 0)  # re-enabling the links: held
    p.read(BAR_GPA + LINK_DISABLE)
    p.read(BAR_GPA + 0x88000)  # the config mirror: the served config space
    return p


def run_qemu(qemu: str, socket_path: str, tmp: Path, timeout: float = 90) -> guest.PciTranscript:
    bios = tmp / "guest.bin"
    bios.write_bytes(guest.image())
    prog = tmp / "program.bin"
    prog.write_bytes(guest.program_bytes(program(), VENDOR, DEVICE, BAR_GPA))
    out = tmp / "debugcon.txt"
    accel = "kvm" if os.access("/dev/kvm", os.R_OK | os.W_OK) else "tcg"
    dev = json.dumps({"driver": "vfio-user-pci", "socket": {"type": "unix", "path": socket_path}})
    cmd = [
        qemu, "-nodefaults", "-display", "none", "-accel", accel,
        "-bios", str(bios), "-m", "64",
        "-object", "memory-backend-memfd,id=mem,size=64M,share=on",
        "-machine", "pc,memory-backend=mem",
        "-device", f"loader,file={prog},addr=0x10000,force-raw=on",
        "-chardev", f"file,id=dbg,path={out}",
        "-device", "isa-debugcon,iobase=0xe9,chardev=dbg",
        "-device", "isa-debug-exit,iobase=0xf4,iosize=1",
        "-device", dev,
    ]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    text = out.read_text() if out.exists() else ""
    # isa-debug-exit: QEMU exits with (value << 1) | 1, and the guest writes 0
    assert r.returncode == 1, f"QEMU exited {r.returncode}: {r.stderr}\nguest: {text}"
    assert text.rstrip().endswith("E"), f"guest did not finish: {text!r}\n{r.stderr}"
    return guest.parse(text)


def check_transcript(t: guest.PciTranscript) -> dict[int, int]:
    assert t.found is not None and t.found[1] == VENDOR | DEVICE << 16
    assert t.bar0 == BAR_GPA
    reads = {ln.address - BAR_GPA: ln.value for ln in t.lines if ln.kind == "R"}
    assert reads[0x0] == CHIP_ID
    assert reads[DIRECT] == 0x1234
    assert reads[NV_PMC_ENABLE] & NVLINK_BIT
    assert reads[LINK_DISABLE] & LINK_FIELD == ISOLATED_LINKS
    assert reads[0x88000] == VENDOR | DEVICE << 16
    return reads


@pytest.fixture
def served() -> Iterator[Served]:
    yield from serve()


def test_qemu_guest_against_the_filtered_device(served: Served, tmp_path: Path) -> None:
    qemu = _qemu_or_skip()
    t = run_qemu(qemu, served.path, tmp_path)
    check_transcript(t)
    direct = served.device.filters[0].layout.direct
    assert any(o <= DIRECT < o + n for o, n in direct)
    # the direct page's accesses never became messages: the device saw the store through the
    # client's mapping, and nothing of that page through the filter
    assert served.source.bar.read32(DIRECT) == 0x1234
    for offset, _width, _, _ in served.source.log:
        assert not any(o <= offset < o + n for o, n in direct), hex(offset)
    seen = {(off, is_write) for off, _, is_write, _ in served.source.log}
    assert (0x0, False) in seen and (NV_PMC_ENABLE, True) in seen
    assert served.isolation_holds()
    f = served.device.filters[0]
    counters = f.counters()
    assert counters["NV_PMC_ENABLE"] >= 2
    owners = [r.name for r in f.policy.rules if r.start <= LINK_DISABLE < r.start + r.size]
    assert sum(counters[name] for name in owners) >= 2  # the IOCTRL unit's rule decides it


def test_operator_commands_with_qemu(tmp_path: Path) -> None:
    """The two commands of docs/vfio-user.md: `mmiofilter serve`, then QEMU; SIGTERM ends the
    server cleanly."""
    qemu = _qemu_or_skip()
    sock = str(Path(tempfile.mkdtemp(prefix="vfu-")) / "gpu.sock")
    args = [sys.executable, "-m", "mmiofilter.cli", "serve", "--simulate", "nvidia-gv100",
            "--socket", sock]  # fmt: skip
    server = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(200):
            if os.path.exists(sock) or server.poll() is not None:
                break
            subprocess.run(["sleep", "0.05"])
        assert os.path.exists(sock), server.stderr.read() if server.stderr else ""
        check_transcript(run_qemu(qemu, sock, tmp_path))
    finally:
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=20)
    assert server.returncode == 0, err
    assert "masked by rule NV_PMC_ENABLE" in err
    assert not os.path.exists(sock)
