"""A hostile guest against a simulated V100 (and H100) BAR0 under the default profile.

The host has applied the NVLink isolation sequence (keeping its links to the CPU) and the
device-info table lists an IOCTRL unit; the filter is attached (discovery reads that table and
the link-disable bits the host set). The guest then tries to undo every isolation step, to
write the flash path, to load code into the NVLink MINION falcon and to reach function 1's
config space, with every width at every alignment that touches a protected byte. Afterwards
the protected bytes are intact and every attempt was refused or forced, and recorded as an
event naming its rule. Under the default `config_mirror = "virtualize"` the function-0 mirror
is the VMM's config space: guest writes land there, never in the device.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import mmiofilter as mf
from mmiofilter.devices import attach, load_policy_file
from mmiofilter.devices.devinfo import DeviceInfoError
from mmiofilter.devices.devinfo_encode import table_words
from mmiofilter.devices.regmap import load_map
from mmiofilter.simulated.gv100 import (
    SimulatedBar,
    SimulatedConfig,
    apply_gv100_isolation,
    simulated_bar0,
)

IOCTRL = 18
IOCTRL_BASE = 0xA00000
KEEP = 0x030000  # the host keeps links 0 and 1 (to the CPU): it sets 0x3C0000
GV100_POLICY = 'profile = "nvidia-gv100"\n'
DENY_MIRROR = '[options]\nconfig_mirror = "deny"\n'
WIDTHS = (1, 2, 4, 8)
MIRROR_CHOICES = ["virtualize", "deny"]


@pytest.fixture
def gv100() -> Iterator[SimulatedBar]:
    with simulated_bar0("gv100", [(IOCTRL, IOCTRL_BASE)]) as bar:
        assert apply_gv100_isolation(bar, keep=KEEP) == 0x3C0000
        bar.buf[0x300000:0x300100] = bytes(range(256))  # some VBIOS image in the ROM window
        bar.buf[0xA06180:0xA06200] = bytes(range(0x80))  # whatever the MINION ports read
        bar.buf[0x8A000:0x8A004] = b"\xde\x10\xff\xff"  # function 1's config, as mirrored
        yield bar


def attach_gv100(
    bar: SimulatedBar, mirror: str, config: SimulatedConfig | None = None, **kw: int
) -> mf.BarFilter:
    """The default profile with config_mirror = `mirror`, the VMM's config space as target."""
    text = GV100_POLICY + f'[options]\nconfig_mirror = "{mirror}"\n'
    targets = {"config": (config or SimulatedConfig()).backend()} if mirror == "virtualize" else {}
    f, _ = attach(load_policy_file(text), mf.MemoryBackend(bar.buf), bar.size, targets=targets,
                  **kw)  # fmt: skip
    return f


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


@pytest.mark.parametrize("mirror", MIRROR_CHOICES)
def test_attach_discovers_the_nvlink_unit_and_the_hosts_link_bits(
    gv100: SimulatedBar, mirror: str
) -> None:
    text = GV100_POLICY + f'[options]\nconfig_mirror = "{mirror}"\n'
    targets = {"config": SimulatedConfig().backend()} if mirror == "virtualize" else {}
    f, resolved = attach(load_policy_file(text), mf.MemoryBackend(gv100.buf), gv100.size,
                         targets=targets)  # fmt: skip
    names = {r.name: r for r in f.policy.rules}
    unit = names[f"ioctrl@{IOCTRL_BASE:#x}"]
    assert (unit.start, unit.action, unit.priority) == (IOCTRL_BASE, "readonly", 1)
    links = names["NVLINK_LINK_DISABLE"]
    assert (links.action, links.mask, links.value) == ("mask", 0x3C0000, 0x3C0000)
    assert resolved.deferred == []


@pytest.mark.parametrize("mirror", MIRROR_CHOICES)
def test_hostile_guest_cannot_undo_isolation_or_write_flash(
    gv100: SimulatedBar, mirror: str
) -> None:
    f = attach_gv100(gv100, mirror, page_size=4096, ring_capacity=1 << 20)
    guarded = protected_bytes(f)
    assert 0xA06180 in guarded and 0x8A000 in guarded  # MINION ports, function 1's mirror
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
    assert gv100.read32(0x200) & 0x02000000 and gv100.read32(0xA00148) & 0x3F0000 == 0x3C0000
    assert f.dropped_events == 0


# The attacker's list: each step of the isolation undone, the flash and ROM paths, MINION code
# load, function 1's config space, the link-disable bits the host set. (what, offset, width,
# value, the bytes that must not change.)
ATTACKS = [
    ("clear NV_PMC_ENABLE_NVLINK (resets the NVLink unit)", 0x200, 4, 0x0, (0x200, 4)),
    ("re-enable the isolated links", 0xA00148, 4, 0x0, (0xA00148, 4)),
    ("re-enable one isolated link, byte write", 0xA00150 - 6, 1, 0x00, (0xA0014A, 1)),
    ("write the VBIOS window", 0x300000, 1, 0xFF, (0x300000, 1)),
    ("write the VBIOS window, 8 bytes", 0x300100 - 8, 8, 0, (0x3000F8, 8)),
    ("SPI controller command", 0xE5A0, 4, 0x1, (0xE5A0, 4)),
    ("SPI data to flash", 0xE4A0, 4, 0xDEADBEEF, (0xE4A0, 4)),
    ("MINION IMEMC: auto-increment write at 0", 0xA06180, 4, 1 << 24, (0xA06180, 4)),
    ("MINION IMEMD: a word of code", 0xA06184, 4, 0xDEADBEEF, (0xA06184, 4)),
    ("MINION IMEMT: a code tag", 0xA06188, 4, 0x1, (0xA06188, 4)),
    ("MINION DMEMC", 0xA061C0, 4, 1 << 24, (0xA061C0, 4)),
    ("MINION DMEMD", 0xA061C4, 4, 0x12345678, (0xA061C4, 4)),
    ("MINION DMATRFBASE: where code is fetched from", 0xA06110, 4, 0x1000, (0xA06110, 4)),
    ("MINION DMATRFCMD: DMA code into IMEM", 0xA06118, 4, 1 << 4, (0xA06118, 4)),
    ("MINION DMATRFBASE1", 0xA06128, 4, 0x1, (0xA06128, 4)),
    ("function 1's command register", 0x8A004, 2, 0x0007, (0x8A004, 2)),
    ("function 1's IDs, 8 bytes", 0x8A000, 8, 0, (0x8A000, 8)),
]


@pytest.mark.parametrize("mirror", MIRROR_CHOICES)
@pytest.mark.parametrize(("what", "off", "width", "value", "kept"), ATTACKS,
                         ids=[a[0] for a in ATTACKS])  # fmt: skip
def test_attackers_list_is_refused(
    gv100: SimulatedBar, mirror: str, what: str, off: int, width: int, value: int,
    kept: tuple[int, int],
) -> None:  # fmt: skip
    f = attach_gv100(gv100, mirror)
    start, n = kept
    before = bytes(gv100.buf[start : start + n])
    res = f.access(off, width, True, value)
    assert res.outcome in (mf.Outcome.BLOCKED, mf.Outcome.MASKED), what
    assert bytes(gv100.buf[start : start + n]) == before, what
    (event,) = f.drain_events()
    assert event.rule and event.offset == off


@pytest.mark.parametrize("mirror", MIRROR_CHOICES)
def test_minion_ports_and_function1_read_as_nothing(gv100: SimulatedBar, mirror: str) -> None:
    f = attach_gv100(gv100, mirror)
    assert f.read(0xA06184, 4) == 0xFFFFFFFF  # IMEMD: no code read back either
    assert f.read(0x8A000, 4) == 0xFFFFFFFF  # function 1 is not this guest's
    assert {e.rule for e in f.drain_events()} == {"NV_PMINION_FALCON_IMEM_PORTS", "NV_PCFG1"}


def test_the_function0_mirror_is_the_vmms_config_space(gv100: SimulatedBar) -> None:
    gv100.buf[0x88000:0x88004] = b"\xde\x10\xb1\x1d"  # what the device's mirror would show
    config = SimulatedConfig()
    config.data[0:4] = b"\xde\x10\xb5\x1d"  # what the VMM presents: another device ID
    f = attach_gv100(gv100, "virtualize", config)
    assert f.read(0x88000, 4) == 0x1DB510DE  # the VMM's view, not the device's
    for off, w in attempts(0x88004, 0x88008, gv100.size):
        if 0x88000 <= off and off + w <= 0x89000:
            assert f.write(off, w, 0) is mf.Outcome.REDIRECTED
    assert config.writes and all(0 <= o < 0x1000 for o, _, _ in config.writes)
    assert gv100.buf[0x88000:0x88010] == b"\xde\x10\xb1\x1d" + bytes(12)  # device untouched
    assert f.drain_events() == []
    # a straddling access (the mirror's last bytes and a byte outside) follows partial = deny
    assert f.write(0x88FFE, 4, 0) is mf.Outcome.BLOCKED


@pytest.mark.parametrize("mirror", ["deny", "readonly"])
def test_config_mirror_deny_and_readonly_at_every_width(gv100: SimulatedBar, mirror: str) -> None:
    gv100.buf[0x88000:0x88004] = b"\xde\x10\xb1\x1d"  # the mirror shows the config IDs
    f = attach_gv100(gv100, mirror, ring_capacity=1 << 16)
    for off, w in attempts(0x88000, 0x88010, gv100.size):
        if mirror == "deny":
            assert f.read(off, w) == (1 << (8 * w)) - 1  # never the real config bytes
        assert f.write(off, w, 0) is mf.Outcome.BLOCKED
    events = f.drain_events()
    assert events and all(e.rule == "NV_PCFG" for e in events)
    assert gv100.buf[0x88000:0x88004] == b"\xde\x10\xb1\x1d"
    if mirror == "readonly":
        assert f.read(0x88000, 4) == 0x1DB110DE


def test_allowed_registers_in_trapped_pages_still_work(gv100: SimulatedBar) -> None:
    f = attach_gv100(gv100, "deny")
    assert f.write(0x204, 4, 0x1234) is mf.Outcome.PASS  # next to NV_PMC_ENABLE
    assert gv100.read32(0x204) == 0x1234
    # the guest driver keeps using NV_PMC_ENABLE; only bit 25 is forced
    assert f.write(0x200, 4, 0x00001100) is mf.Outcome.MASKED
    assert gv100.read32(0x200) == 0x02001100
    assert f.read(0x300010, 4) == 0x13121110  # the VBIOS is readable
    # the ring registers the isolation sequence wrote are the driver's (ring interrupt ack)
    assert f.write(0x12004C, 4, 0x2) is mf.Outcome.PASS
    assert f.write(0x122204, 4, 0x2) is mf.Outcome.PASS
    assert [e.rule for e in f.drain_events()] == ["NV_PMC_ENABLE"]  # the masked write only


def test_link_disable_protects_exactly_the_hosts_bits() -> None:
    # The IOCTRL unit elsewhere, so that the link-disable rule alone decides 0xA00148.
    with simulated_bar0("gv100", [(IOCTRL, 0xA10000)]) as bar:
        apply_gv100_isolation(bar, keep=KEEP)
        f = attach_gv100(bar, "deny")
        assert f.write(0xA00148, 4, 0) is mf.Outcome.MASKED
        assert bar.read32(0xA00148) == 0x3C0000  # the host's bits stay set
        # the links the host kept are the guest's own to disable
        assert f.write(0xA00148, 4, 0x3F0000) is mf.Outcome.PASS
        assert bar.read32(0xA00148) == 0x3F0000
        assert f.write(0xA00148, 4, 0x010000) is mf.Outcome.MASKED
        assert bar.read32(0xA00148) == 0x3D0000
        del f


def test_a_host_that_isolated_nothing_gets_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with simulated_bar0("gv100", [(IOCTRL, 0xA10000)]) as bar:
        assert apply_gv100_isolation(bar, keep=0x3F0000) == 0  # the patch does nothing
        with caplog.at_level("WARNING", logger="mmiofilter"):
            f, resolved = attach(load_policy_file(GV100_POLICY + DENY_MIRROR),
                                 mf.MemoryBackend(bar.buf), bar.size)  # fmt: skip
        assert any("has not isolated" in w for w in resolved.warnings)
        assert any("has not isolated" in r.getMessage() for r in caplog.records)
        assert "NVLINK_LINK_DISABLE" not in {r.name for r in f.policy.rules}
        del f


def test_options_allow_lift_the_protections(gv100: SimulatedBar) -> None:
    text = GV100_POLICY + '[options]\nnvlink = "allow"\nfirmware_update = "allow"\n'
    text += 'config_mirror = "deny"\n'
    f, _ = attach(load_policy_file(text), mf.MemoryBackend(gv100.buf), gv100.size)
    assert {r.name for r in f.policy.rules} == {"NV_PCFG", "NV_PCFG1"}
    assert f.write(0xA06184, 4, 0) is mf.Outcome.PASS
    assert f.write(0x200, 4, 0) is mf.Outcome.PASS


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


@pytest.mark.parametrize("mirror", MIRROR_CHOICES)
def test_gh100_config_mirror_and_fsp_guard(mirror: str) -> None:
    with simulated_bar0("gh100", [(IOCTRL, 0x100000)]) as bar:
        pf = load_policy_file(f'profile = "nvidia-gh100"\n[options]\nconfig_mirror = "{mirror}"\n')
        config = SimulatedConfig()
        targets = {"config": config.backend()} if mirror == "virtualize" else {}
        f, resolved = attach(pf, mf.MemoryBackend(bar.buf), bar.size, ring_capacity=64,
                             targets=targets)  # fmt: skip
        assert not any("FSP" in w for w in resolved.warnings)
        mirrored = int.from_bytes(config.data[0:4], "little")
        assert f.read(0x92000, 4) == (mirrored if mirror == "virtualize" else 0xFFFFFFFF)
        assert f.read(0x8F0000, 4) == 0  # the FSP range outside the mailbox: readonly
        assert f.write(0x8F0100, 4, 0x8) is mf.Outcome.BLOCKED  # FSP CPUCTL: a halt refused
        assert f.write(0x8F2C00, 4, 0) is mf.Outcome.BLOCKED  # a doorbell with no packet
        events = f.drain_events()
        expected = ["NV_PFSP", "NV_PFSP_MAILBOX_GUARD"]
        assert [e.rule for e in events] == (["NV_EP_PCFGM"] if mirror == "deny" else []) + expected
        assert "no packet" in events[-1].detail
        assert any(r.name.startswith("ioctrl@") for r in f.policy.rules)
        del f  # the filter holds the mapping; it goes before the memfd does


# The FSP falcon's own registers around the mailbox (GH100 dev_fsp_pri.h names
# FALCON_COMMON_SCRATCH_GROUP_2 at 0x8F0320; gpu-admin-tools FspFalcon puts CPUCTL at 0x8F0100,
# so IMEMC at 0x8F0180 and DMEMC at 0x8F01C0 in the generic falcon layout). No public driver
# writes them (mmiofilter/devices/maps/gh100.toml, NV_PFSP), so the guest may read, not write.
FSP_END = 0x8F4000
FSP_MAILBOX = [(0x8F2AC0, 0x8F2B00), (0x8F2C00, 0x8F2C40), (0x8F2C80, 0x8F2CC0)]
FSP_FALCON = [
    ("CPUCTL: halt or start the FSP", 0x8F0100),
    ("IMEMC: an IMEM port for code", 0x8F0180),
    ("DMEMC: a DMEM port for data", 0x8F01C0),
    ("FALCON_COMMON_SCRATCH_GROUP_2(0): the FSP's boot status", 0x8F0320),
    ("FALCON_COMMON_SCRATCH_GROUP_2(3)", 0x8F032C),
    ("between the EMEM ports and the queues", 0x8F2B00),
    ("the last dword of NV_PFSP", 0x8F3FFC),
]


@pytest.mark.parametrize(("what", "reg"), FSP_FALCON, ids=[a[0] for a in FSP_FALCON])
def test_gh100_fsp_falcon_registers_are_readonly(what: str, reg: int) -> None:
    with simulated_bar0("gh100", [(IOCTRL, 0x100000)]) as bar:
        bar.buf[reg : reg + 4] = (0x1234ABCD).to_bytes(4, "little")
        pf = load_policy_file('profile = "nvidia-gh100"\n[options]\nconfig_mirror = "deny"\n')
        f, _ = attach(pf, mf.MemoryBackend(bar.buf), bar.size, ring_capacity=1 << 12)
        try:
            before = bytes(bar.buf[reg - 8 : reg + 12])
            tried = 0
            for off, w in attempts(reg, reg + 4, bar.size):
                if off + w > FSP_END or any(off < e and s < off + w for s, e in FSP_MAILBOX):
                    continue  # wholly inside the readonly part: the mailbox is the guard's
                for value in (0, (1 << (8 * w)) - 1):
                    res = f.access(off, w, True, value)
                    assert res.outcome is mf.Outcome.BLOCKED, (hex(off), w)
                    (event,) = f.drain_events()
                    assert (event.rule, event.offset) == ("NV_PFSP", off), (hex(off), w)
                    assert event.outcome is mf.Outcome.BLOCKED and event.is_write
                    tried += 1
            assert tried >= 2 * 4 * len(WIDTHS), what
            assert bytes(bar.buf[reg - 8 : reg + 12]) == before, what
            assert f.read(reg, 4) == 0x1234ABCD  # reads pass (RM reads SCRATCH_GROUP_2)
            assert f.drain_events() == []  # and are not recorded
        finally:
            del f  # the filter holds the mapping; it goes before the memfd does


def test_gh100_fsp_mailbox_stays_the_guards() -> None:
    """The readonly range around it takes no mailbox register from the guard: the driver's
    EMEMC and EMEMD writes pass (open-gpu-kernel-modules _kfspConfigEmemc_GH100,
    _kfspWriteToEmem_GH100; nouveau gp102_flcn_emem_pio)."""
    with simulated_bar0("gh100", [(IOCTRL, 0x100000)]) as bar:
        pf = load_policy_file('profile = "nvidia-gh100"\n[options]\nconfig_mirror = "deny"\n')
        f, _ = attach(pf, mf.MemoryBackend(bar.buf), bar.size)
        try:
            owner = {r.name: r.action for r in f.policy.rules}
            assert owner["NV_PFSP"] == "readonly" and owner["NV_PFSP_MAILBOX_GUARD"] == "guard"
            assert f.write(0x8F2AC0, 4, 1 << 24) is mf.Outcome.PASS  # EMEMC(0), AINCW
            assert f.write(0x8F2AC4, 4, 0x12345678) is mf.Outcome.PASS  # EMEMD(0)
            assert f.drain_events() == []
        finally:
            del f
