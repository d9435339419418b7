"""PCI config-space parsing: IDs, BARs, capability walks, MSI-X, and hostile dumps."""

from __future__ import annotations

import contextlib
import glob
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmiofilter.devices.pciconfig import (
    Bar,
    Capability,
    ConfigError,
    ConfigSpace,
    MsixInfo,
    load_config,
    msix_regions,
    parse_config,
    parse_resource,
    pba_size,
)
from mmiofilter.devices.pciconfig_build import (
    Cap,
    ExtCap,
    build_config,
    io_bar,
    mem_bar,
    msi_cap,
    msix_cap,
    pcie_cap,
    pm_cap,
    ssvid_cap,
    vendor_cap,
)

# --- an NVIDIA-like 3D controller -----------------------------------------------------------
# Class 0x0302 as Tesla parts are: QEMU's BAR0 config-mirror quirk covers VGA (0x0300) only.
# Capability offsets, BARs and the MSI-X placement are plausible for such a board (lspci of
# Tesla GPUs shows PM, MSI, PCIe and MSI-X in this order with the table high in BAR0); they are
# not claimed to be one specific board's.
V100_BARS = (
    *mem_bar(0x9100_0000),
    *mem_bar(0x380F_C000_0000, is_64bit=True, prefetchable=True),
    *mem_bar(0x380F_F000_0000, is_64bit=True, prefetchable=True),
)
V100_CAPS = (
    pm_cap(offset=0x60),
    msi_cap(offset=0x68),
    pcie_cap(offset=0x78),
    msix_cap(6, table_offset=0xB9_0000, pba_offset=0xBA_0000, offset=0xC8),
)
V100_EXT = (ExtCap(0x02, 1, bytes(0x24)), ExtCap(0x04, 1, bytes(0x0C), 0x128), ExtCap(0x01, 2))
V100_MSIX = MsixInfo(
    table_bar=0,
    table_offset=0xB9_0000,
    table_size_bytes=96,
    pba_bar=0,
    pba_offset=0xBA_0000,
    pba_size_bytes=8,
    entries=6,
)


def v100(size: int = 4096) -> bytes:
    return build_config(
        0x10DE,
        0x1DB1,
        class_code=0x030200,
        subsystem_vendor=0x10DE,
        subsystem_device=0x1212,
        bars=V100_BARS,
        caps=V100_CAPS,
        ext_caps=V100_EXT if size == 4096 else (),
        size=size,
    )


def patched(data: bytes, **at: int) -> bytes:
    """`data` with bytes replaced: patched(d, x34=0x20) writes 0x20 at offset 0x34."""
    d = bytearray(data)
    for key, value in at.items():
        d[int(key[1:], 16)] = value
    return bytes(d)


def test_v100_like_endpoint() -> None:
    cs = parse_config(v100(), "v100")
    assert (cs.vendor, cs.device, cs.revision, cs.class_code) == (0x10DE, 0x1DB1, 0xA1, 0x030200)
    assert (cs.header_type, cs.multifunction, cs.size) == (0, False, 4096)
    assert (cs.subsystem_vendor, cs.subsystem_device) == (0x10DE, 0x1212)
    assert cs.bars == (
        Bar(0, False, False, False, 0x9100_0000),
        Bar(1, False, True, True, 0x380F_C000_0000),
        Bar(3, False, True, True, 0x380F_F000_0000),
        Bar(5, False, False, False, 0),
    )
    assert [(c.id, c.offset, c.version) for c in cs.capabilities] == [
        (0x01, 0x60, None),
        (0x05, 0x68, None),
        (0x10, 0x78, None),
        (0x11, 0xC8, None),
        (0x02, 0x100, 1),
        (0x04, 0x128, 1),
        (0x01, 0x138, 2),
    ]
    assert cs.msix == V100_MSIX
    assert cs.msix is not None and cs.msix.cap_offset == 0xC8 and not cs.msix.enabled
    assert msix_regions(cs.msix, 0, bar_size=16 << 20) == [
        ("msix-table", 0xB9_0000, 96),
        ("msix-pba", 0xBA_0000, 8),
    ]
    assert msix_regions(cs.msix, 1) == []
    # The 256-byte dump of the same device has the same standard list and MSI-X.
    cs256 = parse_config(v100(256))
    assert cs256.capabilities == cs.capabilities[:4]
    assert cs256.msix == V100_MSIX


# A virtio-balloon (1af4:1045) of a cloud-hypervisor guest, read as root from
# /sys/bus/pci/devices/0000:00:01.0/config on the machine these tests were written on: five
# vendor-specific capabilities, then MSI-X (enabled, 5 vectors) in 64-bit BAR0.
VIRTIO_BALLOON = bytes.fromhex(
    "f41a4510060410000100ffff0000000004000000400000000000000000000000"
    "000000000000000000000000f41a451000000000400000000000000000000000"
    "0950100100000000000000003800000009601003000000000020000001000000"
    "0970100400000000004000000010000009841402000000000060000000100000"
    "0400000009981405000000000000000000000000000000001100048000800000"
    "00800400"
).ljust(256, b"\0")


def test_real_virtio_dump() -> None:
    cs = parse_config(VIRTIO_BALLOON)
    assert (cs.vendor, cs.device, cs.class_code) == (0x1AF4, 0x1045, 0xFFFF00)
    assert cs.bars[0] == Bar(0, False, True, False, 0x40_0000_0000)
    assert cs.bar(1) is None  # the upper half of BAR 0
    assert [(c.id, c.offset) for c in cs.capabilities] == [
        (0x09, 0x40),
        (0x09, 0x50),
        (0x09, 0x60),
        (0x09, 0x70),
        (0x09, 0x84),
        (0x11, 0x98),
    ]
    assert cs.msix == MsixInfo(0, 0x8000, 80, 0, 0x48000, 8, 5)
    assert cs.msix is not None and cs.msix.enabled and not cs.msix.function_mask
    # Its sysfs resource file gives BAR 0 as 512 KiB: both structures fit.
    assert msix_regions(cs.msix, 0, bar_size=0x80000)[1] == ("msix-pba", 0x48000, 8)


# --- lengths and header-only dumps --------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 63, 65, 128, 255, 257, 1024, 4095, 4097])
def test_other_lengths_are_refused(n: int) -> None:
    with pytest.raises(ConfigError, match=f"not {n}"):
        parse_config(bytes(n), "dump")


def test_128_bytes_hint_cardbus() -> None:
    with pytest.raises(ConfigError, match="CardBus"):
        parse_config(v100(256)[:128])


def test_header_only_dump_parses_but_caps_are_unknown() -> None:
    cs = parse_config(v100()[:64], "user-read")
    assert cs.header_only and (cs.vendor, cs.device) == (0x10DE, 0x1DB1)
    assert cs.bars == parse_config(v100()).bars
    # Unknown, not absent: a None here would read as "no MSI-X table to trap".
    with pytest.raises(ConfigError, match=r"user-read: a 64-byte dump .* unknown"):
        _ = cs.msix
    with pytest.raises(ConfigError, match="root"):
        _ = cs.capabilities


def test_all_ones_is_no_device() -> None:
    with pytest.raises(ConfigError, match="no device answered"):
        parse_config(b"\xff" * 256)


def test_vf_ids_read_all_ones_but_parse() -> None:
    # SR-IOV VFs read 0xFFFF in their ID registers; the rest of the header is real.
    cs = parse_config(patched(v100(256), x00=0xFF, x01=0xFF, x02=0xFF, x03=0xFF))
    assert (cs.vendor, cs.device) == (0xFFFF, 0xFFFF)
    assert cs.msix == V100_MSIX


# --- header types and BARs -----------------------------------------------------------------------


def test_bar_decoding() -> None:
    regs = (*io_bar(0xE000), 0x0000_0002 | 0xC000_0000, *mem_bar(0x1_0000_0000, is_64bit=True))
    cs = parse_config(build_config(1, 2, bars=(*regs, 0xF000_0008), class_code=0x020000))
    assert cs.bars == (
        Bar(0, True, False, False, 0xE000),
        Bar(1, False, False, False, 0xC000_0000),  # type 1 (below 1 MiB) decodes as 32-bit
        Bar(2, False, True, False, 0x1_0000_0000),
        Bar(4, False, False, True, 0xF000_0000),
        Bar(5, False, False, False, 0),
    )
    assert cs.bars[0].register == 0x10 and cs.bars[3].register == 0x20
    # I/O bit 1 is reserved, so it is not an address bit.
    assert parse_config(build_config(1, 2, bars=(0xE003,))).bars[0].address == 0xE000


def test_reserved_memory_type_and_dangling_64bit_bar() -> None:
    with pytest.raises(ConfigError, match="BAR 2 at 0x18 has the reserved memory type 3"):
        parse_config(build_config(1, 2, bars=(0, 0, 0x6)))
    with pytest.raises(ConfigError, match="BAR 5 at 0x24 is 64-bit"):
        parse_config(build_config(1, 2, bars=(0, 0, 0, 0, 0, 0x4)))


def test_bridge_header() -> None:
    d = build_config(
        0x8086,
        0x1234,
        header_type=1,
        class_code=0x060400,
        bars=mem_bar(0xFE00_0000),
        caps=[pcie_cap(port_type=4), ssvid_cap(0x8086, 0x7270)],
    )
    cs = parse_config(d)
    assert cs.header_type == 1 and len(cs.bars) == 2
    assert (cs.subsystem_vendor, cs.subsystem_device) == (0x8086, 0x7270)
    cs = parse_config(build_config(0x8086, 0x1234, header_type=1))
    assert (cs.subsystem_vendor, cs.subsystem_device) == (None, None)
    assert parse_config(d[:64]).subsystem_vendor is None  # its capability is past the header
    with pytest.raises(ConfigError, match="BAR 1 at 0x14 is 64-bit"):
        parse_config(build_config(1, 2, header_type=1, bars=(0, 0x4)))
    # A bridge has BARs 0 and 1 only: MSI-X cannot live in BAR 2.
    with pytest.raises(ConfigError, match="MSI-X capability at 0x40: table BIR 2"):
        parse_config(build_config(1, 2, header_type=1, caps=[msix_cap(1, table_bar=2)]))


@pytest.mark.parametrize("htype", [2, 3, 0x7F, 0x82])
def test_other_header_types_refused(htype: int) -> None:
    with pytest.raises(ConfigError, match=f"header type {htype & 0x7F} at 0xe"):
        parse_config(patched(v100(256), x0e=htype))


def test_multifunction_bit() -> None:
    cs = parse_config(patched(v100(256), x0e=0x80))
    assert cs.multifunction and cs.header_type == 0 and cs.msix == V100_MSIX


# --- capability walks ----------------------------------------------------------------------------


def test_status_bit_clear_means_no_list() -> None:
    # Linux reads 0x34 only when the status register says there is a list.
    cs = parse_config(patched(v100(256), x06=0))
    assert cs.capabilities == () and cs.msix is None


def test_reserved_pointer_bits_are_masked() -> None:
    d = patched(v100(256), x34=0x63, x61=0x68 | 0x3)
    assert parse_config(d).capabilities == parse_config(v100(256)).capabilities


def test_as_many_capabilities_as_fit_then_a_loop() -> None:
    # 48 four-byte capabilities fill 0x40..0xFF: the most a list can hold without a loop.
    d = build_config(1, 2, caps=[Cap(0x09, bytes([4, 0]))] * 48)
    assert [c.offset for c in parse_config(d).capabilities] == list(range(0x40, 0x100, 4))
    with pytest.raises(
        ConfigError, match="capability at 0xfc loops back to the capability at 0x40"
    ):
        parse_config(patched(d, xfd=0x40))


def test_ext_all_ones_means_no_extended_space() -> None:
    d = bytearray(v100())
    d[0x100:0x104] = b"\xff" * 4
    assert all(not c.extended for c in parse_config(bytes(d)).capabilities)


HOSTILE = {
    # name: (patches on the 4096-byte V100 dump, message that must name the offset)
    "loop": ({"x79": 0x60}, "capability at 0x78 loops back to the capability at 0x60"),
    "self-loop": ({"x69": 0x68}, "capability at 0x68 loops back to the capability at 0x68"),
    "first pointer into header": ({"x34": 0x20}, "pointer at 0x34 points into the header, at 0x20"),
    "next pointer into header": ({"x69": 0x3C}, "capability at 0x68 points into the header"),
    # The PCIe capability's next pointer skips the real MSI-X for one too close to the end.
    "MSI-X past 0xff": ({"x79": 0xF8, "xf8": 0x11}, "MSI-X capability at 0xf8 needs 12 bytes"),
    "MSI-X at 0xfc": ({"x79": 0xFC, "xfc": 0x11}, "MSI-X capability at 0xfc needs 12 bytes"),
    "two MSI-X": ({"xc9": 0xE0, "xe0": 0x11}, "more than one MSI-X capability, at 0xc8, 0xe0"),
    "table BIR 6": ({"xcc": 0x06}, "MSI-X capability at 0xc8: table BIR 6 is reserved"),
    "PBA BIR 7": ({"xd0": 0x07}, "MSI-X capability at 0xc8: PBA BIR 7 is reserved"),
    "BIR upper half": ({"xcc": 0x02}, "at 0xc8: table BIR 2 names the upper half of 64-bit BAR 1"),
    "capability in MSI-X": ({"xc9": 0xCC}, "MSI-X capability at 0xc8 overlaps the capability at"),
    "ID 0xff": ({"x78": 0xFF}, "capability at 0x78 has ID 0xff"),
    # Extended next pointers are bits 31:20 of the header: bytes +3 and the high nibble of +2.
    "ext loop": ({"x12b": 0x10, "x12a": 0x01}, "at 0x128 loops back to the extended cap.* 0x100"),
    "ext self-loop": ({"x102": 0x01, "x103": 0x10}, "at 0x100 loops back to the extended cap"),
    "ext below 0x100": ({"x12b": 0x08, "x12a": 0x01}, "at 0x128 points below 0x100, at 0x80"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_dumps(name: str) -> None:
    patches, message = HOSTILE[name]
    with pytest.raises(ConfigError, match=f"^hostile: .*{message}"):
        parse_config(patched(v100(), **patches), "hostile")


def test_msix_in_io_bar_refused() -> None:
    d = build_config(1, 2, bars=io_bar(0xE000), caps=[msix_cap(4)])
    with pytest.raises(ConfigError, match="MSI-X capability at 0x40: table BIR 0 names an I/O BAR"):
        parse_config(d)


# --- MsixInfo and regions ------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "pba"), [(1, 8), (63, 8), (64, 8), (65, 16), (128, 16), (2048, 256)])
def test_sizes(n: int, pba: int) -> None:
    info = parse_config(build_config(1, 2, caps=[msix_cap(n, pba_bar=2, pba_offset=0)])).msix
    assert info == MsixInfo(0, 0, n * 16, 2, 0, pba, n)
    assert pba_size(n) == pba


def test_from_registers_and_equality() -> None:
    a = MsixInfo.from_registers(0xC005, 0x0000_2003, 0x0000_3003, cap_offset=0xB0)
    assert a == MsixInfo(3, 0x2000, 96, 3, 0x3000, 8, 6)
    assert (a.enabled, a.function_mask, a.cap_offset) == (True, True, 0xB0)
    with pytest.raises(ConfigError, match="table BIR 6"):
        MsixInfo.from_registers(0, 6, 0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"entries": 0, "table_size_bytes": 0, "pba_size_bytes": 0},
        {"table_bar": 6},
        {"pba_offset": 4},
        {"table_offset": 2**32},
        {"table_size_bytes": 32},
        {"pba_size_bytes": 16},
    ],
)
def test_msixinfo_checks_hand_made_values(kwargs: dict[str, int]) -> None:
    base: dict[str, Any] = {"table_bar": 0, "table_offset": 0, "table_size_bytes": 16}
    base["pba_bar"] = 0
    base |= {"pba_offset": 16, "pba_size_bytes": 8, "entries": 1}
    with pytest.raises(ConfigError):
        MsixInfo(**(base | kwargs))


def test_regions_in_different_bars_and_overlapping() -> None:
    info = MsixInfo(2, 0x0, 0x800, 4, 0x0, 16, 128)
    assert msix_regions(info, 2) == [("msix-table", 0, 0x800)]
    assert msix_regions(info, 4) == [("msix-pba", 0, 16)]
    assert msix_regions(info, 0) == []
    # Overlap breaks the spec; both come back, and the rules built over them just overlap.
    bad = MsixInfo(0, 0x1000, 0x40, 0, 0x1030, 8, 4)
    assert msix_regions(bad, 0) == [("msix-table", 0x1000, 0x40), ("msix-pba", 0x1030, 8)]
    assert msix_regions(bad, 0, bar_size=0x1040) == msix_regions(bad, 0)
    with pytest.raises(ConfigError, match=r"msix-table \[0x1000, 0x1040\) does not fit in BAR 0"):
        msix_regions(bad, 0, bar_size=0x103F)
    # A PBA offset past the BAR, as some VFs report (QEMU carries quirks for them).
    with pytest.raises(ConfigError, match=r"msix-pba \[0x8000, 0x8008\) does not fit"):
        msix_regions(MsixInfo(0, 0, 0x40, 0, 0x8000, 8, 4), 0, bar_size=0x2000)


def test_parse_resource() -> None:
    text = (
        "0x0000004000000000 0x000000400007ffff 0x0000000000140204\n"
        + "0x0000000000000000 0x0000000000000000 0x0000000000000000\n" * 2
        + "0x00000000f0000000 0x00000000f0ffffff 0x0000000000040200\n"
        + "0x0000000000000000 0x0000000000000000 0x0000000000000000\n" * 6
    )
    assert parse_resource(text) == {0: 0x80000, 3: 16 << 20}
    with pytest.raises(ConfigError, match="res:2: expected"):
        parse_resource("0x0 0x0 0x0\nnonsense\n", "res")


def test_builder_places_in_list_order() -> None:
    d = build_config(1, 2, caps=[vendor_cap(b"\x01\x02"), msix_cap(1, table_bar=5)])
    assert d[0x42] == 5  # the vendor capability's length byte covers its header
    cs = parse_config(d)
    assert [(c.id, c.offset) for c in cs.capabilities] == [(0x09, 0x40), (0x11, 0x48)]
    assert cs.msix == MsixInfo(5, 0, 16, 5, 16, 8, 1)


def test_builder_refuses_what_does_not_fit() -> None:
    with pytest.raises(ValueError, match="overlaps"):
        build_config(1, 2, caps=[pm_cap(offset=0x40), msi_cap(offset=0x44)])
    with pytest.raises(ValueError, match="4096"):
        build_config(1, 2, ext_caps=[ExtCap(1)])
    with pytest.raises(ValueError, match="0x100"):
        build_config(1, 2, ext_caps=[ExtCap(1, offset=0x200)], size=4096)
    with pytest.raises(ValueError, match="not aligned"):
        build_config(1, 2, caps=[Cap(9, bytes(8), offset=0xFC)])


# --- properties ----------------------------------------------------------------------------------


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Turn a hang into a failure. Generous on purpose: this is no timing assertion, a parse
    takes microseconds; the walk's termination is structural (every step visits a new dword)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError("parse_config did not terminate")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def parses_or_config_error(data: bytes) -> None:
    with deadline(5.0):
        try:
            cs = parse_config(data)
        except ConfigError:
            return
    assert isinstance(cs, ConfigSpace)
    if not cs.header_only:
        assert len({c.offset for c in cs.capabilities}) == len(cs.capabilities)
        assert sum(c.id == 0x11 and not c.extended for c in cs.capabilities) == (
            cs.msix is not None
        )


@st.composite
def headerish(draw: st.DrawFn, size: int) -> bytes:
    """Random bytes whose header mostly passes, so that the walks are what gets exercised."""
    d = bytearray(draw(st.binary(min_size=size, max_size=size)))
    d[0x0E] = draw(st.sampled_from((0, 0, 1, 0x80, d[0x0E])))
    d[0x06] |= draw(st.sampled_from((0x10, 0x10, 0)))
    d[0x10:0x28] = bytes(24) if draw(st.booleans()) else d[0x10:0x28]
    for _ in range(draw(st.integers(0, 3))):  # MSI-X IDs where a walk may land
        d[4 * draw(st.integers(0x10, 0x3F))] = 0x11
    return bytes(d)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(min_size=256, max_size=256),
        st.binary(min_size=64, max_size=64),
        headerish(256),
        headerish(4096),
    )
)
def test_arbitrary_blobs_parse_or_raise_config_error(data: bytes) -> None:
    parses_or_config_error(data)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_real_dumps(data: st.DataObject) -> None:
    d = bytearray(data.draw(st.sampled_from((v100(), v100(256), VIRTIO_BALLOON))))
    for _ in range(data.draw(st.integers(1, 6))):
        # Aim at where the structure is: the header and the capability bodies.
        pos = data.draw(st.integers(0, min(len(d), 0x140) - 1))
        d[pos] = data.draw(st.integers(0, 255))
    parses_or_config_error(bytes(d))


# Any ID but MSI-X (drawn on its own) and 0xff (an all-ones read, refused).
_GENERIC_IDS = st.sampled_from((0x01, 0x03, 0x05, 0x09, 0x10, 0x12, 0x00, 0x14))
_FEW = st.integers(0, 8)
_SMALL = st.integers(0, 64)


@st.composite
def chains(draw: st.DrawFn) -> tuple[list[Cap], list[ExtCap], MsixInfo | None]:
    """Capabilities with random IDs, sizes, gaps and chain order (not address order)."""
    caps = [Cap(draw(_GENERIC_IDS), bytes(draw(st.integers(2, 20)))) for _ in range(draw(_FEW))]
    msix = None
    if draw(st.booleans()):
        n = draw(st.integers(1, 2048))
        tb, pb = draw(st.integers(0, 5)), draw(st.integers(0, 5))
        to, po = (draw(st.integers(0, 2**29 - 1)) * 8 for _ in range(2))
        msix = MsixInfo(tb, to, n * 16, pb, po, pba_size(n), n)
        cap = msix_cap(n, table_bar=tb, table_offset=to, pba_bar=pb, pba_offset=po)
        caps.insert(draw(st.integers(0, len(caps))), cap)
    # Lay the capabilities out in one random order with gaps (those that fit), chain them in
    # another: list order.
    offsets: dict[int, int] = {}
    pos = 0x40
    for i in draw(st.permutations(range(len(caps)))):
        pos += 4 * draw(st.integers(0, 3))
        if pos + caps[i].size > 0x100:
            break
        offsets[i] = pos
        pos = (pos + caps[i].size + 3) & ~3
    if msix is not None and not any(caps[i].id == 0x11 for i in offsets):
        msix = None
    placed = [Cap(c.id, c.body, offsets[i]) for i, c in enumerate(caps) if i in offsets]
    ext = [
        ExtCap(draw(st.integers(1, 0xFFFF)), draw(st.integers(0, 15)), bytes(draw(_SMALL)))
        for _ in range(draw(_FEW))
    ]
    return placed, ext, msix


@settings(max_examples=300, deadline=None)
@given(chains(), st.sampled_from((256, 4096)))
def test_built_chains_round_trip(
    chain: tuple[list[Cap], list[ExtCap], MsixInfo | None], size: int
) -> None:
    caps, ext, msix = chain
    ext = ext if size == 4096 else []
    # Every BAR a 32-bit memory BAR, so that any BIR 0..5 is a valid place for the table.
    cs = parse_config(
        build_config(0x10DE, 0x2330, bars=(0,) * 6, caps=caps, ext_caps=ext, size=size)
    )
    got = list(cs.capabilities)
    assert got[: len(caps)] == [Capability(c.id, c.offset or 0) for c in caps]
    assert [(c.id, c.version) for c in got[len(caps) :]] == [(x.id, x.version) for x in ext]
    assert cs.msix == msix


# --- this machine's devices ----------------------------------------------------------------------


def _sysfs_configs() -> list[str]:
    return [p for p in sorted(glob.glob("/sys/bus/pci/devices/*/config")) if os.access(p, os.R_OK)]


@pytest.mark.skipif(not _sysfs_configs(), reason="no readable /sys/bus/pci/devices/*/config here")
def test_every_sysfs_config_on_this_machine() -> None:
    for path in _sysfs_configs():
        try:
            cs = load_config(path)
        except ConfigError:
            continue
        if cs.header_only:  # not root: the kernel gave 64 bytes
            continue
        res = os.path.join(os.path.dirname(path), "resource")
        if cs.msix is not None and os.access(res, os.R_OK):
            with open(res) as f:
                sizes = parse_resource(f.read(), res)
            for bar in {cs.msix.table_bar, cs.msix.pba_bar}:
                if bar in sizes:
                    try:
                        msix_regions(cs.msix, bar, bar_size=sizes[bar])
                    except ConfigError:
                        pass  # a device with a broken PBA offset (QEMU has quirks for some)
