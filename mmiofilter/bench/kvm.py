"""The KVM group: one guest loop of N 32-bit MMIO reads, timed by the guest's TSC, six ways.

(a) a direct page (mapped into the guest: no exit at all); (b) an allowed register in a trapped
page, answered by the C vCPU loop through the filter; (c) the same answered by a Python loop
(`BarFilter.access` per exit); (d) a blocked register (deny), C loop; (e) the floor: the C loop
answering every exit with a constant, no filter; (f) QEMU, when installed, running the same
firmware image under `-accel kvm -bios`, reading the HPET main counter (0xFED000F0), which QEMU
emulates in userspace. Every figure is ns per read; ratios are taken within one run.
"""

from __future__ import annotations

import mmap
import os
import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._core import lib
from ..backends import MemoryBackend
from ..filter import BarFilter
from ..rules import Policy, Rule

BAR_GPA = 0xC0000000
BAR_SIZE = 1 << 20
ALLOWED = 0x1008  # an allowed register in the trapped page 1
DENIED = 0x1000  # the denied register that traps page 1
DIRECT = 0x8000  # a page no rule touches
HPET_COUNTER = 0xFED000F0
KEYS = ("direct_ns", "trapped_c_ns", "trapped_py_ns", "blocked_ns", "floor_ns", "qemu_ns")


def _unavailable() -> str | None:
    try:
        from ..kvm import kvm_available
    except ImportError as e:
        return str(e)
    reason = kvm_available()
    if reason is None and shutil.which("nasm") is None:
        reason = "nasm is not installed (it assembles the guest firmware)"
    return reason


def _ns_per_read(transcript: str, tsc_hz: int) -> float:
    from ..kvm import parse_transcript

    loops = [ln for ln in parse_transcript(transcript) if ln.kind == "T"]
    if not loops or not loops[-1].count:
        raise RuntimeError(f"the guest reported no timed loop: {transcript!r}")
    return loops[-1].value / loops[-1].count * 1e9 / tsc_hz


def _one(variant: str, n: int) -> tuple[float, int, int]:
    """(ns per read, MMIO exits answered in C, MMIO exits answered in Python)."""
    from ..kvm import Machine, Program

    fd = os.memfd_create("bench-bar")
    os.ftruncate(fd, BAR_SIZE)
    buf = mmap.mmap(fd, BAR_SIZE)
    try:
        policy = Policy([Rule("denied", DENIED, 4, "deny")])
        f = BarFilter(BAR_SIZE, policy, MemoryBackend(buf), page_size=4096)
        m = Machine()
        if variant == "floor":
            m.add_floor(BAR_GPA, BAR_SIZE, 0x12345678)
        else:
            m.add_bar(BAR_GPA, f)
        offset = {"direct": DIRECT, "blocked": DENIED}.get(variant, ALLOWED)
        # a short warm-up loop first: the measured loop is the last one reported
        prog = Program().loop_read(BAR_GPA + offset, 16).loop_read(BAR_GPA + offset, n)
        (res,) = m.run([prog], in_c=variant != "trapped_py")
        m.close()
        del f, m
        if res.error:
            raise RuntimeError(f"{variant}: {res.error}")
        return _ns_per_read(res.transcript, lib.mf_kvm_tsc_hz()), res.mmio_in_c, res.mmio_in_python
    finally:
        buf.close()
        os.close(fd)


def _qemu(n: int) -> tuple[float | None, str | None]:
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        return None, "qemu-system-x86_64 is not installed"
    from ..kvm import Program, firmware

    with tempfile.TemporaryDirectory() as tmp:
        fw, prog, out = Path(tmp) / "fw.bin", Path(tmp) / "prog.bin", Path(tmp) / "out.txt"
        fw.write_bytes(firmware.image())
        prog.write_bytes(Program().loop_read(HPET_COUNTER, 16).loop_read(HPET_COUNTER, n).encode())
        cmd = [
            qemu, "-accel", "kvm", "-bios", str(fw), "-m", "16", "-display", "none",
            "-monitor", "none", "-serial", "none", "-debugcon", f"file:{out}",
            "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
            "-device", f"loader,file={prog},addr=0x10000,force-raw=on",
        ]  # fmt: skip
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            return None, "QEMU did not finish in 300 s"
        if not out.exists():
            return None, f"QEMU produced no output: {r.stderr.strip()[:200]}"
        return _ns_per_read(out.read_text(), lib.mf_kvm_tsc_hz()), None


def measure_kvm(reads: int, repeats: int, progress: Callable[[str], None]) -> dict[str, Any]:
    """The six figures (None where one cannot be taken) and why any is missing."""
    out: dict[str, Any] = {k: None for k in KEYS}
    out["direct_exits"] = None
    reason = _unavailable()
    if reason is not None:
        out["kvm_note"] = f"KVM figures not taken: {reason}"
        return out
    progress("timing guest MMIO loops under KVM")
    variants = {
        "direct_ns": ("direct", reads),
        "trapped_c_ns": ("trapped_c", reads),
        "trapped_py_ns": ("trapped_py", max(reads // 4, 100)),
        "blocked_ns": ("blocked", reads),
        "floor_ns": ("floor", reads),
    }
    samples: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(repeats):  # round-robin, so drift hits every variant alike
        for key, (variant, n) in variants.items():
            ns, in_c, in_py = _one(variant, n)
            samples[key].append(ns)
            if variant == "direct":
                out["direct_exits"] = in_c + in_py
    for key, vals in samples.items():
        out[key] = statistics.median(vals)
    progress("timing QEMU")
    qemu_vals: list[float] = []
    for _ in range(repeats):
        qns, why = _qemu(reads)
        if qns is None:
            out["qemu_note"] = why
            break
        qemu_vals.append(qns)
    out["qemu_ns"] = statistics.median(qemu_vals) if qemu_vals else None
    out["kvm_reads"] = reads
    if out["floor_ns"]:
        out["trapped_c_over_floor"] = out["trapped_c_ns"] / out["floor_ns"]
    if out["qemu_ns"]:
        out["trapped_c_over_qemu"] = out["trapped_c_ns"] / out["qemu_ns"]
    return out
