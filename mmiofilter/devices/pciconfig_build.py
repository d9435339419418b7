"""Build PCI config-space dumps for tests: valid by construction, easy to make hostile after.

`build_config` lays out a header, BAR registers and capability chains in list order; a test that
wants a hostile dump builds a valid one and then patches bytes of the result. The layouts are
those `pciconfig` parses (see its sources); capability bodies are the registers after the
2-byte (standard) or 4-byte (extended) header.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .pciconfig import (
    CAP_ID_EXP,
    CAP_ID_MSI,
    CAP_ID_MSIX,
    CAP_ID_PM,
    CAP_ID_SSVID,
    CAP_ID_VNDR,
    CFG_SIZE,
    EXP_CFG_SIZE,
    HEADER_BRIDGE,
    HEADER_NORMAL,
    HEADER_SIZE,
    MSIX_ENTRY_SIZE,
    MSIX_MAX_ENTRIES,
)


@dataclass(frozen=True)
class Cap:
    """A standard capability; `offset` None places it at the next free dword."""

    id: int
    body: bytes = b""
    offset: int | None = None

    @property
    def size(self) -> int:
        return 2 + len(self.body)


@dataclass(frozen=True)
class ExtCap:
    """A PCIe extended capability; the first of a chain sits at 0x100."""

    id: int
    version: int = 1
    body: bytes = b""
    offset: int | None = None

    @property
    def size(self) -> int:
        return 4 + len(self.body)


def _le(value: int, n: int) -> bytes:
    return value.to_bytes(n, "little")


def mem_bar(address: int, *, is_64bit: bool = False, prefetchable: bool = False) -> tuple[int, ...]:
    """Register value(s) of a memory BAR: two slots when 64-bit."""
    if address % 16 or address >> (64 if is_64bit else 32):
        raise ValueError(f"memory BAR address {address:#x} is not 16-aligned or too wide")
    low = (address & 0xFFFFFFF0) | (0x4 if is_64bit else 0) | (0x8 if prefetchable else 0)
    return (low, address >> 32) if is_64bit else (low,)


def io_bar(address: int) -> tuple[int, ...]:
    """Register value of an I/O BAR."""
    if address % 4 or address >> 32:
        raise ValueError(f"I/O BAR address {address:#x} is not 4-aligned or too wide")
    return (address | 0x1,)


def pm_cap(*, offset: int | None = None) -> Cap:
    """Power management, version 3 (PMC), D0 (PMCSR): 8 bytes."""
    return Cap(CAP_ID_PM, _le(0x0003, 2) + _le(0, 4), offset)


def msi_cap(*, is_64bit: bool = True, offset: int | None = None) -> Cap:
    """MSI with one vector; 14 bytes when 64-bit, 10 bytes when not."""
    ctrl = 0x0080 if is_64bit else 0
    regs = _le(ctrl, 2) + _le(0, 4) + (_le(0, 4) if is_64bit else b"") + _le(0, 2)
    return Cap(CAP_ID_MSI, regs, offset)


def pcie_cap(*, port_type: int = 0, offset: int | None = None) -> Cap:
    """PCI Express capability version 2 (0x3C bytes), endpoint unless `port_type` says."""
    return Cap(CAP_ID_EXP, _le(0x2 | (port_type & 0xF) << 4, 2) + bytes(0x3C - 4), offset)


def vendor_cap(data: bytes = b"", *, offset: int | None = None) -> Cap:
    """Vendor-specific: byte 2 is the length of the whole capability."""
    return Cap(CAP_ID_VNDR, bytes([3 + len(data)]) + data, offset)


def ssvid_cap(vendor: int, device: int, *, offset: int | None = None) -> Cap:
    """Bridge subsystem vendor/device ID (how type 1 headers carry them): 8 bytes."""
    return Cap(CAP_ID_SSVID, bytes(2) + _le(vendor, 2) + _le(device, 2), offset)


def msix_cap(
    entries: int,
    *,
    table_bar: int = 0,
    table_offset: int = 0,
    pba_bar: int | None = None,
    pba_offset: int | None = None,
    enabled: bool = False,
    function_mask: bool = False,
    offset: int | None = None,
) -> Cap:
    """MSI-X, 12 bytes. The PBA defaults to the same BAR, right after the table."""
    if not 1 <= entries <= MSIX_MAX_ENTRIES:
        raise ValueError(f"MSI-X entries {entries} is outside 1..{MSIX_MAX_ENTRIES}")
    if pba_bar is None:
        pba_bar = table_bar
    if pba_offset is None:
        pba_offset = table_offset + entries * MSIX_ENTRY_SIZE
    for bir, off in ((table_bar, table_offset), (pba_bar, pba_offset)):
        # BIR 6 and 7 are allowed here so that tests can build the reserved values.
        if not 0 <= bir <= 7 or off % 8 or not 0 <= off < 2**32:
            raise ValueError(f"MSI-X BIR {bir} / offset {off:#x}: need 0..7 / 32-bit, 8-aligned")
    ctrl = (entries - 1) | (0x8000 if enabled else 0) | (0x4000 if function_mask else 0)
    return Cap(
        CAP_ID_MSIX,
        _le(ctrl, 2) + _le(table_offset | table_bar, 4) + _le(pba_offset | pba_bar, 4),
        offset,
    )


def _place(
    sizes: Sequence[int], offsets: Sequence[int | None], lo: int, hi: int, what: str
) -> list[int]:
    """Offsets for structures laid in [lo, hi), dword-aligned and not overlapping."""
    placed: list[int] = []
    taken: list[tuple[int, int]] = []
    cursor = lo
    for i, (size, want) in enumerate(zip(sizes, offsets, strict=True)):
        off = cursor if want is None else want
        end = off + size
        if off % 4 or off < lo or end > hi:
            raise ValueError(
                f"{what} #{i} at {off:#x} (+{size}) is not aligned inside [{lo:#x}, {hi:#x})"
            )
        if any(off < e and s < end for s, e in taken):
            raise ValueError(f"{what} #{i} at {off:#x} overlaps another")
        taken.append((off, end))
        placed.append(off)
        cursor = max(cursor, (end + 3) & ~3)
    return placed


def build_config(
    vendor: int,
    device: int,
    *,
    revision: int = 0xA1,
    class_code: int = 0x030200,
    header_type: int = HEADER_NORMAL,
    multifunction: bool = False,
    subsystem_vendor: int = 0,
    subsystem_device: int = 0,
    bars: Sequence[int] = (),
    caps: Sequence[Cap] = (),
    ext_caps: Sequence[ExtCap] = (),
    size: int = CFG_SIZE,
    command: int = 0x0006,
) -> bytes:
    """A config dump of `size` (256 or 4096) bytes. `bars` are raw register values from slot 0
    (see `mem_bar`, `io_bar`); capabilities chain in list order. ValueError on what does not fit.
    """
    if size not in (CFG_SIZE, EXP_CFG_SIZE):
        raise ValueError(f"size must be {CFG_SIZE} or {EXP_CFG_SIZE}, not {size}")
    if ext_caps and size != EXP_CFG_SIZE:
        raise ValueError("extended capabilities need a 4096-byte dump")
    slots = {HEADER_NORMAL: 6, HEADER_BRIDGE: 2}.get(header_type)
    if slots is None:
        raise ValueError(f"header type {header_type}: only 0 and 1 are built")
    if len(bars) > slots:
        raise ValueError(f"{len(bars)} BAR registers, but header type {header_type} has {slots}")
    if header_type == HEADER_BRIDGE and (subsystem_vendor or subsystem_device):
        raise ValueError("a type 1 header has no subsystem ID registers: use ssvid_cap()")
    d = bytearray(size)
    d[0:4] = _le(vendor, 2) + _le(device, 2)
    d[4:6] = _le(command, 2)
    d[6:8] = _le(0x0010 if caps else 0, 2)  # status: capabilities list
    d[8:12] = _le(revision | class_code << 8, 4)
    d[0x0E] = header_type | (0x80 if multifunction else 0)
    for i, reg in enumerate(bars):
        d[0x10 + 4 * i : 0x14 + 4 * i] = _le(reg, 4)
    if header_type == HEADER_NORMAL:
        d[0x2C:0x30] = _le(subsystem_vendor, 2) + _le(subsystem_device, 2)
    offs = _place([c.size for c in caps], [c.offset for c in caps], HEADER_SIZE, CFG_SIZE, "cap")
    d[0x34] = offs[0] if offs else 0
    for i, (c, off) in enumerate(zip(caps, offs, strict=True)):
        nxt = offs[i + 1] if i + 1 < len(offs) else 0
        d[off : off + c.size] = bytes([c.id, nxt]) + c.body
    xoffs = _place(
        [c.size for c in ext_caps], [c.offset for c in ext_caps], CFG_SIZE, size, "ext cap"
    )
    if xoffs and xoffs[0] != CFG_SIZE:
        raise ValueError(f"the first extended capability must sit at 0x100, not {xoffs[0]:#x}")
    for i, (x, off) in enumerate(zip(ext_caps, xoffs, strict=True)):
        nxt = xoffs[i + 1] if i + 1 < len(xoffs) else 0
        d[off : off + x.size] = _le(x.id | (x.version & 0xF) << 16 | nxt << 20, 4) + x.body
    return bytes(d)
