"""A hostile guest against a simulated V100 (and H100) BAR0 under the default profile.

The host has applied the NVLink isolation sequence and the device-info table lists an IOCTRL
unit; the filter is attached (discovery reads that table). The guest then tries to undo every
isolation step and to write the flash path and the config-space mirror, with every width at
every alignment that touches a protected byte. Afterwards the protected bytes are intact and
every attempt was refused or forced, and recorded as an event naming its rule.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import mmiofilter as mf
from mmiofilter.devices import attach, load_policy_file
from mmiofilter.devices.devinfo import DeviceInfoError
from mmiofilter.devices.devinfo_encode import table_words
from mmiofilter.devices.regmap import load_map
from mmiofilter.simulated.gv100 import SimulatedBar, apply_gv100_isolation, simulated_bar0

IOCTRL = 18
IOCTRL_BASE = 0xA00000
GV100_POLICY = 'profile = "nvidia-gv100"\n'
WIDTHS = (1, 2, 4, 8)


@pytest.fixture
def gv100() -> Iterator[SimulatedBar]:
    with simulated_bar0("gv100", [(IOCTRL, IOCTRL_BASE)]) as bar:
        apply_gv100_isolation(bar)
        bar.buf[0x300000:0x300100] = bytes(range(256))  # some VBIOS image in the ROM window
        yield bar


def attempts(start: int, end: int, size: int) -> Iterator[tuple[int, int]]:
    """Every (offset, width) whose bytes touch [start, end)."""
    for w in WIDTHS:
        for off in range(max(0, start - w + 1), end):
            if off + w <= size:
                yield off, w


def protected_bytes(f: mf.BarFilter) -> dict[int, int]:
    """byte offset -> bits the guest must not change (0xFF for readonly/deny bytes)."""
    out: dict[int, int] = {}
    for r in f.policy.rules:
        if r.action in ("readonly", "deny", "emulate"):
            for i in range(min(r.size, 0x400)):  # big windows: their first KiB is plenty
                out[r.start + i] = 0xFF
        elif r.action == "mask":
            for i in range(r.size):
                if r.mask_byte(i):
                    out[r.start + i] = out.get(r.start + i, 0) | r.mask_byte(i)
    return out


def test_attach_discovers_the_nvlink_unit(gv100: SimulatedBar) -> None:
    f, resolved = attach(load_policy_file(GV100_POLICY), mf.MemoryBackend(gv100.buf), gv100.size)
    names = {r.name: r for r in f.policy.rules}
    unit = names[f"ioctrl@{IOCTRL_BASE:#x}"]
    assert (unit.start, unit.action, unit.priority) == (IOCTRL_BASE, "readonly", 1)
    assert resolved.deferred == []


def test_hostile_guest_cannot_undo_isolation_or_write_flash(gv100: SimulatedBar) -> None:
    f, _ = attach(
        load_policy_file(GV100_POLICY), mf.MemoryBackend(gv100.buf), gv100.size,
        page_size=4096, ring_capacity=1 << 20,
    )  # fmt: skip
    guarded = protected_bytes(f)
    before = {off: gv100.buf[off] for off in guarded}
    targets = sorted({off for off in guarded})
    tried = 0
    for lo in targets:
        for off, w in attempts(lo, lo + 1, gv100.size):
            for value in (0, (1 << (8 * w)) - 1, 0x5A5A5A5A5A5A5A5A & ((1 << (8 * w)) - 1)):
                res = f.access(off, w, True, value)
                changes = any(
                    (value >> (8 * i)) & guarded.get(off + i, 0)
                    != before.get(off + i, 0) & guarded.get(off + i, 0)
                    for i in range(w)
                )
                if changes:
                    tried += 1
                    assert res.outcome is not mf.Outcome.PASS, (hex(off), w, hex(value))
                    events = f.drain_events()
                    assert len(events) == 1 and events[0].offset == off, (hex(off), w)
                    assert events[0].rule, "an event names its rule"
                f.drain_events()
    assert tried > 1000
    after = {off: gv100.buf[off] for off in guarded}
    for off, bits in guarded.items():
        assert after[off] & bits == before[off] & bits, f"protected bits changed at {off:#x}"
    assert gv100.read32(0x12004C) == 0x4 and gv100.read32(0x122204) == 0x2
    assert gv100.read32(0x200) & 0x02000000 and gv100.read32(0xA00148) & 0x3F0000 == 0x3F0000
    assert f.dropped_events == 0


def test_config_mirror_is_denied_at_every_width(gv100: SimulatedBar) -> None:
    gv100.buf[0x88000:0x88004] = b"\xde\x10\xb1\x1d"  # the mirror shows the config IDs
    f, _ = attach(load_policy_file(GV100_POLICY), mf.MemoryBackend(gv100.buf), gv100.size,
                  ring_capacity=1 << 16)  # fmt: skip
    for off, w in attempts(0x88000, 0x88010, gv100.size):
        assert f.read(off, w) == (1 << (8 * w)) - 1  # never the real config bytes
        assert f.write(off, w, 0) is mf.Outcome.BLOCKED
    events = f.drain_events()
    assert events and all(e.rule == "NV_PCFG" for e in events)
    assert gv100.buf[0x88000:0x88004] == b"\xde\x10\xb1\x1d"
    readonly = load_policy_file(GV100_POLICY + '[options]\nconfig_mirror = "readonly"\n')
    g, _ = attach(readonly, mf.MemoryBackend(gv100.buf), gv100.size)
    assert g.read(0x88000, 4) == 0x1DB110DE
    assert g.write(0x88000, 4, 0) is mf.Outcome.BLOCKED


def test_allowed_registers_in_trapped_pages_still_work(gv100: SimulatedBar) -> None:
    f, _ = attach(load_policy_file(GV100_POLICY), mf.MemoryBackend(gv100.buf), gv100.size)
    assert f.write(0x204, 4, 0x1234) is mf.Outcome.PASS  # next to NV_PMC_ENABLE
    assert gv100.read32(0x204) == 0x1234
    # the guest driver keeps using NV_PMC_ENABLE; only bit 25 is forced
    assert f.write(0x200, 4, 0x00001100) is mf.Outcome.MASKED
    assert gv100.read32(0x200) == 0x02001100
    assert f.read(0x300010, 4) == 0x13121110  # the VBIOS is readable


def test_options_allow_lift_the_protections(gv100: SimulatedBar) -> None:
    text = GV100_POLICY + '[options]\nnvlink = "allow"\nfirmware_update = "allow"\n'
    f, _ = attach(load_policy_file(text), mf.MemoryBackend(gv100.buf), gv100.size)
    assert {r.name for r in f.policy.rules} == {"NV_PCFG"}
    assert f.write(0x12004C, 4, 0) is mf.Outcome.PASS


GV100_TABLE = load_map("gv100").device_info
assert GV100_TABLE is not None


@pytest.mark.parametrize(
    "words",
    [
        # a chain that never ends: every entry chains into the next
        {GV100_TABLE.base + 4 * i: 0x80000000 | 0x1 for i in range(GV100_TABLE.entries)},
        # two IOCTRL units at one base: which one would the rules describe?
        table_words(GV100_TABLE, [(IOCTRL, IOCTRL_BASE), (IOCTRL, IOCTRL_BASE)]),
    ],
    ids=["endless-chain", "overlapping-units"],
)
def test_hostile_device_info_table_refuses_to_attach(words: dict[int, int]) -> None:
    with simulated_bar0("gv100") as bar:
        for off, w in words.items():
            bar.write32(off, w)
        with pytest.raises(DeviceInfoError, match=r"entry \d+"):
            attach(load_policy_file(GV100_POLICY), mf.MemoryBackend(bar.buf), bar.size)


def test_gh100_config_mirror_and_fsp_guard() -> None:
    with simulated_bar0("gh100", [(IOCTRL, 0x100000)]) as bar:
        pf = load_policy_file('profile = "nvidia-gh100"\n')
        f, resolved = attach(pf, mf.MemoryBackend(bar.buf), bar.size, ring_capacity=64)
        assert not any("FSP" in w for w in resolved.warnings)
        assert f.read(0x92000, 4) == 0xFFFFFFFF
        assert f.read(0x8F0000, 4) == 0  # the FSP range outside the mailbox: audited
        assert f.write(0x8F2C00, 4, 0) is mf.Outcome.BLOCKED  # a doorbell with no packet
        events = f.drain_events()
        assert [e.rule for e in events] == ["NV_EP_PCFGM", "NV_PFSP", "NV_PFSP_MAILBOX_GUARD"]
        assert "no packet" in events[-1].detail
        assert any(r.name.startswith("ioctrl@") for r in f.policy.rules)
        del f  # the filter holds the mapping; it goes before the memfd does
