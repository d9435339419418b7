"""A driver-like MMIO workload for a V100 (GV100) BAR0: the registers a GPU driver touches all
the time, in the order nouveau touches them on GV100, and the exits it costs under three
mapping schemes.

Each register comes from a public header, and each step from the nouveau function that does it
on GV100 (drivers/gpu/drm/nouveau/nvkm/engine/device/base.c, nv140_chipset: mc gp100, timer
gk20a, privring gm200):
- NV_PTIMER_TIME_1 / TIME_0 (0x9410 / 0x9400; open-gpu-kernel-modules
  src/common/inc/swref/published/volta/gv100/dev_timer.h): nv04_timer_read (nvkm/subdev/timer/
  nv04.c, gk20a's .read) reads TIME_1, TIME_0, TIME_1 again; every nvkm_msec/usec busy-wait
  reads the timer once per iteration.
- NV_PMC_INTR(0..1) (0x100 + 4i), NV_PMC_INTR_EN_SET(0..1) (0x160 + 4i), NV_PMC_INTR_EN_CLEAR
  (0..1) (0x180 + 4i), NV_PMC_ENABLE (0x200) (open-gpu-doc manuals/volta/gv100/
  dev_master.ref.txt): gp100_mc_intr_update (nvkm/subdev/mc/gp100.c) writes EN_CLEAR(i) then
  EN_SET(i) for i = 0, 1 on every unarm and rearm around an interrupt; gf100_mc_intr_stat
  (mc/gf100.c) reads INTR(0) and INTR(1); nvkm_mc_reset (mc/base.c) masks NV_PMC_ENABLE off and
  on (read, write, read, write) and reads it back.
- NV_PFIFO_INTR_EN_0 / INTR_0 (0x2140 / 0x2100; open-gpu-doc manuals/volta/gv100/
  dev_fifo.ref.txt): gk104_fifo_intr (nvkm/engine/fifo/gk104.c) reads EN_0 and INTR_0 and
  acknowledges by writing INTR_0.
- PGRAPH interrupt status 0x400100: gf100_gr_intr (nvkm/engine/gr/gf100.c) reads it and
  acknowledges by writing it back.
- privring 0x120058, 0x12005c, 0x120070..0x120078, 0x12004c: gk104_privring_intr (nvkm/subdev/
  privring/gk104.c, gm200's .intr) reads the two interrupt status words and the hub/rop/gpc
  counts, masks the command register 0x12004c (read, write 0x2) and polls it until done.

One tick of the workload is a busy-wait of four timer reads, then one interrupt (unarm, status,
fifo, graphics, rearm); every 8th tick adds a privring interrupt and every 32nd an engine reset.
Timer and interrupt-status polling dominate, as they do in a GPU driver's MMIO.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..devices.targets import inert_targets
from ..layout import Layout
from ..rules import Policy

#: Register names for the report: what makes up the gap between schemes.
NAMES = {
    0x100: "NV_PMC_INTR_0", 0x104: "NV_PMC_INTR_1",
    0x160: "NV_PMC_INTR_EN_SET_0", 0x164: "NV_PMC_INTR_EN_SET_1",
    0x180: "NV_PMC_INTR_EN_CLEAR_0", 0x184: "NV_PMC_INTR_EN_CLEAR_1",
    0x200: "NV_PMC_ENABLE",
    0x2100: "NV_PFIFO_INTR_0", 0x2140: "NV_PFIFO_INTR_EN_0",
    0x9400: "NV_PTIMER_TIME_0", 0x9410: "NV_PTIMER_TIME_1",
    0x120058: "privring intr status 0", 0x12005C: "privring intr status 1",
    0x120070: "privring hub count", 0x120074: "privring rop count",
    0x120078: "privring gpc count", 0x12004C: "privring command (0x12004c)",
    0x400100: "PGRAPH intr status (0x400100)",
}  # fmt: skip
TICKS = 64
PAGE_SIZES = (4096, 65536)
SCHEMES = ("page_trap", "read_direct", "byte_minimum")


@dataclass(frozen=True)
class Step:
    offset: int
    is_write: bool
    value: int = 0


def _timer_read() -> list[Step]:
    return [Step(0x9410, False), Step(0x9400, False), Step(0x9410, False)]


def _mc_update(enabled: bool) -> list[Step]:
    mask = 0x7FFFFFFF if enabled else 0
    out = []
    for i in range(2):
        out += [Step(0x180 + 4 * i, True, ~mask & 0xFFFFFFFF), Step(0x160 + 4 * i, True, mask)]
    return out


def _interrupt() -> list[Step]:
    return [
        *_mc_update(False),
        Step(0x100, False), Step(0x104, False),
        Step(0x2140, False), Step(0x2100, False), Step(0x2100, True, 0x100),
        Step(0x400100, False), Step(0x400100, True, 0x1),
        *_mc_update(True),
    ]  # fmt: skip


def _privring() -> list[Step]:
    reads = [Step(o, False) for o in (0x120058, 0x12005C, 0x120070, 0x120074, 0x120078)]
    return [*reads, Step(0x12004C, False), Step(0x12004C, True, 0x2), Step(0x12004C, False)]


def _reset() -> list[Step]:
    pmc_bit = 0x100  # PFIFO's bit (dev_master.ref.txt NV_PMC_ENABLE_PFIFO 8:8)
    return [Step(0x200, False), Step(0x200, True, 0), Step(0x200, False),
            Step(0x200, True, pmc_bit), Step(0x200, False)]  # fmt: skip


def steps(ticks: int = TICKS) -> list[Step]:
    """The workload's 32-bit accesses, in order."""
    out: list[Step] = []
    for t in range(ticks):
        for _ in range(4):
            out += _timer_read()
        out += _interrupt()
        if t % 8 == 7:
            out += _privring()
        if t % 32 == 31:
            out += _reset()
    return out


def _in(areas: Sequence[tuple[int, int]], off: int) -> bool:
    return any(a <= off < a + n for a, n in areas)


def exits(step: Step, scheme: str, layout: Layout, read_clean: set[int], allow: set[int]) -> bool:
    """Whether `step` (4 bytes) exits under `scheme`. `read_clean`/`allow`: the offsets of the
    workload's bytes whose reads / reads and writes need no filter."""
    if scheme == "page_trap":  # every page with a protected byte traps
        return not _in(layout.direct, step.offset)
    if scheme == "read_direct":
        if step.is_write:
            return not _in(layout.direct, step.offset)
        return not (_in(layout.direct, step.offset) or _in(layout.read_direct, step.offset))
    # byte_minimum: only an access one of whose bytes the filter must decide
    need = allow if step.is_write else read_clean
    return any(step.offset + i not in need for i in range(4))


def replay(policy: Policy, size: int, ticks: int = TICKS) -> dict[str, Any]:
    """Exits per scheme and page size, by replaying the workload against the layouts the core
    computes; and the registers whose accesses make up read_direct - byte_minimum."""
    from ..backends import CallbackBackend
    from ..filter import BarFilter

    work = steps(ticks)
    out: dict[str, Any] = {"accesses": len(work), "reads": sum(not s.is_write for s in work),
                           "ticks": ticks}  # fmt: skip
    gaps: dict[str, dict[str, int]] = {}
    for page in PAGE_SIZES:
        f = BarFilter(size, policy, CallbackBackend(lambda o, w: 0, lambda o, w, v: None),
                      page_size=page, targets=inert_targets(policy, 0))  # fmt: skip
        read_clean, allow = _byte_classes(f, {s.offset + i for s in work for i in range(4)})
        counts = {sch: sum(exits(s, sch, f.layout, read_clean, allow) for s in work)
                  for sch in SCHEMES}  # fmt: skip
        out[str(page)] = counts
        gap: dict[str, int] = {}
        for s in work:
            if exits(s, "read_direct", f.layout, read_clean, allow) and not exits(
                s, "byte_minimum", f.layout, read_clean, allow
            ):
                key = f"{NAMES[s.offset]} {'write' if s.is_write else 'read'}"
                gap[key] = gap.get(key, 0) + 1
        gaps[str(page)] = gap
    out["gap_read_direct_over_byte_minimum"] = gaps
    return out


def _byte_classes(f: Any, offsets: set[int]) -> tuple[set[int], set[int]]:
    """Of `offsets`, the bytes whose reads need no filter (a 1-byte read passes, unrecorded)
    and those whose writes need none either (writes of 0x00 and 0xFF pass, unrecorded), as the
    core decides them. `f` must sit on a device that ignores writes."""
    from ..results import Outcome

    read_clean, allow = set(), set()
    f.drain_events()
    for off in sorted(offsets):
        read = f.access(off, 1, False).outcome
        if read is not Outcome.PASS or f.drain_events():
            continue
        read_clean.add(off)
        writes = [f.access(off, 1, True, v).outcome for v in (0, 0xFF)]
        if not f.drain_events() and all(w is Outcome.PASS for w in writes):
            allow.add(off)
    return read_clean, allow
