"""The read-direct group: what mapping read-only the pages that only restrict writes saves.

(a) A guest loop of 32-bit reads, then one of writes, on a read-direct page (NV_PMC_INTR_0 and
NV_PMC_INTR_EN_CLEAR_0 in the page of NV_PMC_ENABLE under the default V100 profile, 4 KiB
pages): the exits each took, and ns per access from the guest's TSC. (b) The driver-like
workload of driver_workload.py under the same profile, at 4 KiB and 64 KiB pages: its exits if
every page with a protected byte traps (page_trap, as vfio and QEMU do), with read-direct
pages (read_direct) and the floor no page-granular scheme can beat (byte_minimum: only the
accesses a protected byte's decision changes), replayed against the layouts the core computes;
then run in a real guest, page_trap and read_direct, to confirm the replay.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable
from typing import Any

from ..backends import MemoryBackend
from ..devices.targets import inert_targets
from ..filter import BarFilter
from ..rules import Policy
from . import driver_workload as dw

BAR_GPA = 0xC0000000
V100_BAR0 = 16 << 20
READ_REG, WRITE_REG = 0x100, 0x180  # NV_PMC_INTR_0, NV_PMC_INTR_EN_CLEAR_0: page 0 is read-direct
KEYS = ("read_direct_read_exits", "read_direct_write_exits", "read_direct_read_ns",
        "read_direct_write_ns", "workload_exits", "workload_exits_guest")  # fmt: skip


def v100_policy() -> Policy:
    """The default nvidia-gv100 profile, as known without a device (IOCTRL units deferred)."""
    from ..devices import profiles

    p = profiles()["nvidia-gv100"]
    return Policy(p.resolve(p.choices({}), None).rules)


def _guest(policy: Policy, page: int, prog: Any, map_read_direct: bool) -> Any:
    from ..kvm import Machine

    fd = os.memfd_create("bench-readdirect")
    os.ftruncate(fd, V100_BAR0)
    buf = mmap.mmap(fd, V100_BAR0)
    try:
        targets = inert_targets(policy, 0)  # the config mirror's: not on the measured pages
        f = BarFilter(V100_BAR0, policy, MemoryBackend(buf), page_size=page, targets=targets)
        m = Machine(map_read_direct=map_read_direct)
        try:
            w = m.add_bar(BAR_GPA, f)
            if map_read_direct and w.read_direct_note:
                raise RuntimeError(w.read_direct_note)
            (res,) = m.run([prog])
        finally:
            m.close()
        del f, m, w
        if res.error:
            raise RuntimeError(res.error)
        return res
    finally:
        buf.close()
        os.close(fd)


def _loops(policy: Policy, n: int) -> dict[str, Any]:
    from .._core import lib
    from ..kvm import Program, parse_transcript

    prog = (Program().loop_read(BAR_GPA + READ_REG, 16).loop_read(BAR_GPA + READ_REG, n)
            .loop_write(BAR_GPA + WRITE_REG, 0, n))  # fmt: skip
    res = _guest(policy, 4096, prog, True)
    t = [ln for ln in parse_transcript(res.transcript) if ln.kind == "T"]
    hz = lib.mf_kvm_tsc_hz()
    # the two loops run in one guest; each loop's exits are counted in a run of its own below
    reads = _guest(policy, 4096, Program().loop_read(BAR_GPA + READ_REG, n), True).mmio_in_c
    writes = _guest(policy, 4096, Program().loop_write(BAR_GPA + WRITE_REG, 0, n), True).mmio_in_c
    return {
        "read_direct_read_exits": reads,
        "read_direct_write_exits": writes,
        "read_direct_read_ns": t[1].value / t[1].count * 1e9 / hz,
        "read_direct_write_ns": t[2].value / t[2].count * 1e9 / hz,
        "read_direct_loop": n,
    }


def _workload_in_guest(policy: Policy) -> dict[str, dict[str, int]]:
    from ..kvm import Program

    prog = Program()
    for s in dw.steps():
        if s.is_write:
            prog.write(BAR_GPA + s.offset, s.value)
        else:
            prog.read(BAR_GPA + s.offset)
    out: dict[str, dict[str, int]] = {}
    for page in dw.PAGE_SIZES:
        out[str(page)] = {
            scheme: _guest(policy, page, prog, scheme == "read_direct").mmio_in_c
            for scheme in ("page_trap", "read_direct")
        }
    return out


def measure_read_direct(loop: int, progress: Callable[[str], None]) -> dict[str, Any]:
    """The figures (None where the guest cannot run), and why any is missing."""
    from .kvm import _unavailable

    out: dict[str, Any] = {k: None for k in KEYS}
    policy = v100_policy()
    progress("replaying the driver workload against the V100 layouts")
    replay = dw.replay(policy, V100_BAR0)
    out["workload_exits"] = {str(p): replay[str(p)] for p in dw.PAGE_SIZES}
    out["workload_gap"] = replay["gap_read_direct_over_byte_minimum"]
    out["workload"] = {k: replay[k] for k in ("accesses", "reads", "ticks")}
    reason = _unavailable()
    if reason is None:
        from ..kvm import Machine

        with Machine() as m:
            if not m.readonly_mem:
                reason = "KVM has no KVM_CAP_READONLY_MEM"
    if reason is not None:
        out["read_direct_note"] = f"read-direct guest figures not taken: {reason}"
        return out
    progress("read-direct page: guest loops of reads, then writes")
    out.update(_loops(policy, loop))
    progress("the driver workload in a real guest (page_trap, read_direct)")
    out["workload_exits_guest"] = guest = _workload_in_guest(policy)
    mismatch = [f"{p} {s}" for p, d in guest.items() for s, n in d.items()
                if n != out["workload_exits"][p][s]]  # fmt: skip
    if mismatch:
        out["read_direct_note"] = f"guest exits differ from the replay: {', '.join(mismatch)}"
    return out
