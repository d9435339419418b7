"""`mmiofilter demo`: a guest against a simulated V100 BAR0 under the default V100 policy.

The host side: a memfd the size of BAR0 holding a device-info table with an NVLink (IOCTRL)
unit, with NVIDIA's isolation sequence applied (the host keeps the links to the CPU); the
filter is attached with the default `nvidia-gv100` profile (plus one demo rule that emulates a
register), and the VMM hands it its config-space emulation as the `config` target. The guest
side: the firmware runs a driver-like sequence — registers on direct pages, registers on
read-direct pages (mapped read-only: reads cost no exit, writes exit and are filtered), what the
public drivers do (ring-interrupt ack, MSI re-arm through the config mirror), then every
protected register it should not touch — and reports what it saw. Without /dev/kvm the same
sequence goes through the Python API, and the demo says so.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass

from ..backends import MemoryBackend
from ..devices import attach, load_policy_file
from ..filter import BarFilter
from ..results import Event
from ..rules import Rule
from ..simulated.gv100 import IOCTRL_BASE, SimulatedBar, SimulatedConfig, isolated_gv100_bar0
from .program import Program, parse_transcript

BAR_GPA = 0xC0000000
LOOP = 1000
POLICY = """
profile = "nvidia-gv100"
[[rule]]                     # the demo's own: a register the VMM answers itself
name = "demo-emulated"
start = 0x1000
size = 4
action = "emulate"
value = 0x5EED5EED
"""


@dataclass(frozen=True)
class Step:
    what: str
    write: bool
    offset: int
    value: int = 0
    width: int = 4


STEPS = (
    Step("read NV_PMC_BOOT_0 (allowed, read-direct page)", False, 0x0),
    Step("read a register on a direct page", False, 0x400000),
    Step("write a register on a direct page", True, 0x400010, 0x1234),
    Step("read NV_PMC_ENABLE", False, 0x200),
    Step("clear NV_PMC_ENABLE (the NVLINK bit must stay set)", True, 0x200, 0),
    Step("read NV_PMC_ENABLE back", False, 0x200),
    Step("ack a ring interrupt (nouveau gk104_privring_intr)", True, 0x12004C, 0x2),
    Step("re-enable the links: clear 0xA00148", True, 0xA00148, 0),
    Step("write inside the NVLink unit found at attach", True, 0xA00200, 0xDEAD),
    Step("load code into the NVLink MINION (IMEMD)", True, 0xA06184, 0xC0DE),
    Step("read the config mirror NV_PCFG (VMM's view)", False, 0x88000),
    Step("re-arm MSI: NV_PCFG + 0x704 (gp100_pci_msi_rearm)", True, 0x88704, 0),
    Step("write function 1's config mirror NV_PCFG1", True, 0x8A004, 0x7),
    Step("read the VBIOS window NV_PROM_DATA", False, 0x300000),
    Step("write the VBIOS window (1 byte)", True, 0x300000, 0xFF, 1),
    Step("write the SPI flash controller", True, 0xE5A0, 1),
    Step("read the emulated register", False, 0x1000),
)

Print = Callable[[str], None]


def _bar() -> SimulatedBar:
    bar = isolated_gv100_bar0()  # links 2..5 disabled (0x3C0000), a chip ID to read
    bar.buf[0x300000:0x300004] = b"\x55\xaa\x40\xe9"  # an option-ROM signature in the VBIOS
    bar.write32(0x88000, 0x1DB110DE)  # the device's own mirror shows the config IDs
    return bar


def _intact(
    bar: SimulatedBar, config: SimulatedConfig, snapshot: dict[str, bytes]
) -> list[tuple[str, bool]]:
    return [
        ("NV_PMC_ENABLE bit 25 (NVLINK) set", bool(bar.read32(0x200) & 0x02000000)),
        ("0xA00148: the link-disable bits the host set (0x3c0000) set",
         bar.read32(0xA00148) & 0x3F0000 == 0x3C0000),
        ("the guest's ring-interrupt ack reached 0x12004C", bar.read32(0x12004C) & 0x3F == 0x2),
        ("MSI re-arm landed in the VMM's config space at 0x704", (0x704, 4, 0) in config.writes),
        *((f"{name} unchanged", bytes(bar.buf[a : a + n]) == snapshot[name])
          for name, (a, n) in REGIONS.items()),
    ]  # fmt: skip


REGIONS = {
    "NVLink unit": (IOCTRL_BASE, 0x1000),
    "MINION code-load ports": (0xA06180, 0x80),
    "device's NV_PCFG (the guest sees the VMM's)": (0x88000, 0x1000),
    "NV_PCFG1": (0x8A000, 0x1000),
    "VBIOS window": (0x300000, 0x1000),
    "SPI flash controller": (0xE4A0, 0x114),
}


def _redirect(f: BarFilter, offset: int) -> Rule | None:
    for r in f.policy.rules:
        if r.action == "redirect" and r.start <= offset < r.end:
            return r
    return None


def _outcomes(f: BarFilter, events: list[Event]) -> list[str]:
    """Each step's decision: direct (no exit), or the event it left, or a plain pass."""
    pending = list(events)
    out = []
    for s in STEPS:
        page = f.layout.page_class(s.offset)
        if page == "direct" or (page == "read-direct" and not s.write):
            out.append(f"{page}, no exit")
            continue
        redirect = _redirect(f, s.offset)
        if pending and pending[0].offset == s.offset and pending[0].is_write == s.write:
            e = pending.pop(0)
            out.append(f"{e.outcome.value} ({e.rule})")
        elif redirect is not None:  # counted, not an event
            out.append(f"redirected ({redirect.name} -> {getattr(redirect, 'target', '?')})")
        else:
            out.append("pass")
    return out


def _run_guest(f: BarFilter, say: Print) -> tuple[list[int | None], int, int] | None:
    """The steps in a real guest: values seen, guest MMIO accesses, MMIO exits. None when KVM
    cannot run here."""
    from . import FirmwareError, KvmUnavailable, Machine

    prog = Program()
    for s in STEPS:
        if s.write:
            prog.write(BAR_GPA + s.offset, s.value, s.width)
        else:
            prog.read(BAR_GPA + s.offset, s.width)
    # a direct page, a read-direct one (NV_PMC_BOOT_0's), and the trapped page of the demo's
    # emulated register (an allowed register next to it)
    prog.loop_read(BAR_GPA + 0x400000, LOOP).loop_read(BAR_GPA + 0x0, LOOP)
    prog.loop_read(BAR_GPA + 0x1004, LOOP)
    try:
        with Machine() as m:
            m.add_bar(BAR_GPA, f)
            (res,) = m.run([prog])
    except (KvmUnavailable, FirmwareError) as e:
        say(f"No KVM guest here ({e}): replaying the same sequence through the Python API.")
        return None
    if res.error:
        raise RuntimeError(f"the guest failed: {res.error}")
    lines = [ln for ln in parse_transcript(res.transcript) if ln.kind in "RW"]
    seen = [None if s.write else ln.value for s, ln in zip(STEPS, lines, strict=True)]
    return seen, len(STEPS) + 3 * LOOP, res.mmio_in_c


def run_demo(say: Print = print) -> bool:
    """Run the demo; True when every protection held."""
    bar = _bar()
    config = SimulatedConfig()  # the VMM's config-space emulation
    snapshot = {name: bytes(bar.buf[a : a + n]) for name, (a, n) in REGIONS.items()}
    # KVM maps the direct pages from the BAR's memory: plain memory here, so the ring
    # command register keeps the ack the guest wrote rather than completing it.
    f, resolved = attach(load_policy_file(POLICY), MemoryBackend(bar.buf), bar.size, page_size=4096,
                         ring_capacity=4096, targets={"config": config.backend()})  # fmt: skip
    say("mmiofilter demo: a guest driver against a simulated Tesla V100 BAR0 (16 MiB)")
    lay = f.layout
    say(f"policy: nvidia-gv100 defaults + 1 demo rule -> {len(f.policy.rules)} rules, "
        f"{len(lay.direct)} direct areas, {lay.read_direct_count} read-direct and "
        f"{lay.fully_trapped_count} trapped 4 KiB pages")  # fmt: skip
    if resolved.warnings:
        say(f"  {len(resolved.warnings)} warning(s) about register facts the rules rely on: "
            "`mmiofilter check nvidia-gv100` lists them")  # fmt: skip
    guest = _run_guest(f, say)
    if guest is None:
        results = [f.access(s.offset, s.width, s.write, s.value) for s in STEPS]
        seen = [None if s.write else r.value for s, r in zip(STEPS, results, strict=True)]
        accesses, exits = len(STEPS), None
    else:
        seen, accesses, exits = guest
    outcomes = _outcomes(f, f.drain_events())
    say("")
    say(f"{'the guest':<52} {'saw':>10}  the filter")
    for s, value, outcome in zip(STEPS, seen, outcomes, strict=True):
        shown = f"{value:#0{2 + 2 * s.width}x}" if value is not None else f"<- {s.value:#x}"
        say(f"{s.what:<52} {shown:>10}  {outcome}")
    say("")
    if exits is None:
        say(f"guest accesses: {accesses} (Python API, no exits to count)")
    else:
        say(f"guest MMIO accesses: {accesses:,}; MMIO exits: {exits:,} ({LOOP:,} reads of a "
            f"direct page and {LOOP:,} of a read-direct one took no exit, {LOOP:,} of a trapped "
            f"one took {LOOP:,})")  # fmt: skip
    checks = _intact(bar, config, snapshot)
    say("after the guest:")
    for what, ok in checks:
        say(f"  {'ok ' if ok else 'BROKEN'} {what}")
    del f
    gc.collect()
    bar.close()
    return all(ok for _, ok in checks)
