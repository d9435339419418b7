"""Parse a PCI configuration-space dump: IDs, BARs, capabilities, and where MSI-X lives.

vfio-pci and QEMU trap the MSI-X table and its Pending Bit Array (PBA) on every device, whatever
else the policy says: the guest writes interrupt messages there and the host must rewrite them
(docs/admin-guide.md, the `pci` profile). The MSI-X capability says which BAR holds them and
where, so this parser is where that protection starts.

A dump is untrusted input: a file someone copied, or a device that lies. Every pointer is
checked, and whatever could make this walk disagree with the kernel's, or hide an MSI-X
capability, is a ConfigError naming the offset: never a hang, never a silently short list.

Layouts: PCI Local Bus Specification 3.0 §6.1 (header), §6.2.5.1 (BARs), §6.7 (capability
list), §6.8.2 (MSI-X); PCI Express Base Specification r4.0 §7.6 (extended capabilities).
Constant names follow Linux include/uapi/linux/pci_regs.h.

What a dump cannot tell:
- BAR sizes. Sizing writes all-ones to a BAR and reads back what sticks; this code never writes.
  Sizes come from the sysfs `resource` file (`parse_resource`) or from the admin.
- Capabilities of a 64-byte dump. That is all Linux gives an unprivileged reader of
  /sys/bus/pci/devices/*/config (128 bytes for a CardBus bridge); the list lies beyond it. Such
  a dump parses, but `capabilities` and `msix` raise ConfigError rather than answer "none": an
  unknown MSI-X table must not look like an absent one.
- The IDs of an SR-IOV virtual function: a VF's vendor and device ID registers read 0xFFFF (the
  real ones are in the PF's SR-IOV capability; vfio-pci substitutes them). They parse as 0xFFFF.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

HEADER_SIZE = 64  # PCI_STD_HEADER_SIZEOF
CFG_SIZE = 256  # PCI_CFG_SPACE_SIZE
EXP_CFG_SIZE = 4096  # PCI_CFG_SPACE_EXP_SIZE
DUMP_SIZES: tuple[int, ...] = (HEADER_SIZE, CFG_SIZE, EXP_CFG_SIZE)

_VENDOR_ID, _DEVICE_ID, _STATUS, _REVISION_ID, _HEADER_TYPE = 0x00, 0x02, 0x06, 0x08, 0x0E
_STATUS_CAP_LIST = 0x10
_HEADER_TYPE_MASK = 0x7F
_BASE_ADDRESS_0 = 0x10
_SUBSYSTEM_VENDOR_ID, _SUBSYSTEM_ID = 0x2C, 0x2E
_CAPABILITY_LIST = 0x34
HEADER_NORMAL, HEADER_BRIDGE, HEADER_CARDBUS = 0, 1, 2
_BAR_SLOTS = {HEADER_NORMAL: 6, HEADER_BRIDGE: 2}

CAP_ID_PM = 0x01  # PCI_CAP_ID_*
CAP_ID_MSI = 0x05
CAP_ID_VNDR = 0x09
CAP_ID_SSVID = 0x0D
CAP_ID_EXP = 0x10
CAP_ID_MSIX = 0x11
_SSVID_VENDOR_ID, _SSVID_DEVICE_ID = 4, 6
# MSI-X capability (PCI 3.0 §6.8.2.1-6.8.2.5): Message Control, Table Offset/BIR, PBA
# Offset/BIR. Same offsets and masks as Linux PCI_MSIX_FLAGS/_TABLE/_PBA.
_MSIX_FLAGS, _MSIX_TABLE, _MSIX_PBA, _MSIX_SIZEOF = 2, 4, 8, 12
_MSIX_FLAGS_QSIZE, _MSIX_FLAGS_MASKALL, _MSIX_FLAGS_ENABLE = 0x07FF, 0x4000, 0x8000
_MSIX_BIR = 0x7
MSIX_ENTRY_SIZE = 16  # PCI_MSIX_ENTRY_SIZE
MSIX_MAX_ENTRIES = _MSIX_FLAGS_QSIZE + 1

_CAP_NAMES = {
    CAP_ID_PM: "power-management",
    CAP_ID_MSI: "msi",
    CAP_ID_VNDR: "vendor-specific",
    CAP_ID_SSVID: "bridge-subsystem-id",
    CAP_ID_EXP: "pci-express",
    CAP_ID_MSIX: "msi-x",
}
_EXT_CAP_NAMES = {0x01: "aer", 0x02: "virtual-channel", 0x03: "serial-number", 0x0B: "vendor"}


class ConfigError(ValueError):
    """A config-space dump that cannot be trusted to say where MSI-X lives: the message names
    the dump and the offset of the problem."""


@dataclass(frozen=True)
class Bar:
    """One decoded BAR register (PCI 3.0 §6.2.5.1); a 64-bit BAR also owns slot `index + 1`.

    A register reading 0 decodes as a 32-bit memory BAR at 0: a dump cannot tell that from an
    unimplemented BAR (nor from a VF's BARs, which always read 0). Sizes: see the module doc.
    """

    index: int
    is_io: bool
    is_64bit: bool
    prefetchable: bool
    address: int

    @property
    def register(self) -> int:
        """Config-space offset of the (lower) register."""
        return _BASE_ADDRESS_0 + 4 * self.index


@dataclass(frozen=True)
class Capability:
    """One entry of the standard list (`version` None) or of the extended list (from 0x100)."""

    id: int
    offset: int
    version: int | None = None

    @property
    def extended(self) -> bool:
        return self.version is not None

    @property
    def name(self) -> str:
        names = _EXT_CAP_NAMES if self.extended else _CAP_NAMES
        return names.get(self.id, f"{'ext-' if self.extended else ''}cap-{self.id:#x}")


@dataclass(frozen=True)
class MsixInfo:
    """Where the MSI-X table and PBA lie, and how big they are.

    Equality is the BAR layout only: `cap_offset`, `enabled` and `function_mask` are a snapshot
    of config space that does not move the table, so two dumps of one device compare equal.
    """

    table_bar: int
    table_offset: int
    table_size_bytes: int
    pba_bar: int
    pba_offset: int
    pba_size_bytes: int
    entries: int
    cap_offset: int = field(default=0, compare=False, kw_only=True)
    enabled: bool = field(default=False, compare=False, kw_only=True)
    function_mask: bool = field(default=False, compare=False, kw_only=True)

    def __post_init__(self) -> None:
        # Values built by hand (an admin's override) get the same checks as parsed ones.
        if not 1 <= self.entries <= MSIX_MAX_ENTRIES:
            raise ConfigError(f"MSI-X: {self.entries} entries is outside 1..{MSIX_MAX_ENTRIES}")
        for what, bar, off in (
            ("table", self.table_bar, self.table_offset),
            ("PBA", self.pba_bar, self.pba_offset),
        ):
            if not 0 <= bar <= 5:
                raise ConfigError(f"MSI-X: {what} BAR {bar} is not a BAR index 0..5")
            if not 0 <= off < 2**32 or off % 8:
                raise ConfigError(f"MSI-X: {what} offset {off:#x} is not a 32-bit multiple of 8")
        if self.table_size_bytes != self.entries * MSIX_ENTRY_SIZE:
            raise ConfigError(f"MSI-X: table size must be {self.entries} * {MSIX_ENTRY_SIZE}")
        if self.pba_size_bytes != pba_size(self.entries):
            raise ConfigError(f"MSI-X: PBA size must be {pba_size(self.entries)} bytes")

    @classmethod
    def from_registers(
        cls, ctrl: int, table: int, pba: int, *, cap_offset: int = 0, where: str = "MSI-X"
    ) -> MsixInfo:
        """Decode Message Control (cap+2), Table Offset/BIR (cap+4), PBA Offset/BIR (cap+8)."""
        entries = (ctrl & _MSIX_FLAGS_QSIZE) + 1  # the field holds N - 1
        for what, reg in (("table", table), ("PBA", pba)):
            if reg & _MSIX_BIR > 5:
                # BIR 6 and 7 are reserved (PCI 3.0 §6.8.2.4): no BAR maps the structure.
                raise ConfigError(f"{where}: {what} BIR {reg & _MSIX_BIR} is reserved")
        return cls(
            table_bar=table & _MSIX_BIR,
            table_offset=table & ~_MSIX_BIR,
            table_size_bytes=entries * MSIX_ENTRY_SIZE,
            pba_bar=pba & _MSIX_BIR,
            pba_offset=pba & ~_MSIX_BIR,
            pba_size_bytes=pba_size(entries),
            entries=entries,
            cap_offset=cap_offset,
            enabled=bool(ctrl & _MSIX_FLAGS_ENABLE),
            function_mask=bool(ctrl & _MSIX_FLAGS_MASKALL),
        )


def pba_size(entries: int) -> int:
    """One pending bit per vector, in whole QWORDs (PCI 3.0 §6.8.2.10)."""
    return -(-entries // 64) * 8


@dataclass(frozen=True)
class ConfigSpace:
    """A parsed dump. `header_type` is the layout (bits 6:0): 0 endpoint, 1 bridge.

    Type 1 bridges have BARs 0 and 1 only; their subsystem IDs come from the bridge
    subsystem-ID capability (0x0D) when present, else are None. Other header types do not parse:
    CardBus keeps its list elsewhere, and vfio-pci binds type 0 only (vfio_pci_core).
    """

    vendor: int
    device: int
    revision: int
    class_code: int
    header_type: int
    multifunction: bool
    subsystem_vendor: int | None
    subsystem_device: int | None
    bars: tuple[Bar, ...]
    size: int
    where: str = field(compare=False)
    _capabilities: tuple[Capability, ...] | None = field(repr=False)
    _msix: MsixInfo | None = field(repr=False)

    @property
    def header_only(self) -> bool:
        """A 64-byte dump: the capability list was not in it."""
        return self._capabilities is None

    def _require_caps(self) -> tuple[Capability, ...]:
        if self._capabilities is None:
            raise ConfigError(
                f"{self.where}: a {self.size}-byte dump holds the header only, so its "
                "capabilities (MSI-X among them) are unknown, not absent; Linux returns 64 bytes "
                "of sysfs config to unprivileged readers: read it as root"
            )
        return self._capabilities

    @property
    def capabilities(self) -> tuple[Capability, ...]:
        """Standard capabilities in list order, then extended ones; raises for 64-byte dumps."""
        return self._require_caps()

    @property
    def msix(self) -> MsixInfo | None:
        """The MSI-X layout, or None when the device has none; raises for 64-byte dumps."""
        self._require_caps()
        return self._msix

    def bar(self, index: int) -> Bar | None:
        """The BAR decoded at `index`; None for the upper slot of a 64-bit BAR."""
        return next((b for b in self.bars if b.index == index), None)


def _u16(data: bytes, off: int) -> int:
    return int.from_bytes(data[off : off + 2], "little")


def _u32(data: bytes, off: int) -> int:
    return int.from_bytes(data[off : off + 4], "little")


def _length_error(n: int, where: str) -> ConfigError:
    hint = ""
    if n == 128:
        hint = ": Linux gives unprivileged readers 128 bytes of a CardBus bridge, not parsed here"
    elif n < CFG_SIZE:
        hint = ": a short read? (unprivileged reads of sysfs config return 64 bytes)"
    return ConfigError(f"{where}: a config dump is 64, 256 or 4096 bytes, not {n}{hint}")


def _decode_bars(data: bytes, slots: int, where: str) -> tuple[Bar, ...]:
    bars: list[Bar] = []
    i = 0
    while i < slots:
        reg = _BASE_ADDRESS_0 + 4 * i
        v = _u32(data, reg)
        if v & 1:  # PCI_BASE_ADDRESS_SPACE_IO; bit 1 is reserved
            bars.append(Bar(i, True, False, False, v & ~0x3))
            i += 1
            continue
        mem_type = (v >> 1) & 0x3
        if mem_type == 3:
            # Reserved: whether the next slot is this BAR's upper half would be a guess.
            raise ConfigError(f"{where}: BAR {i} at {reg:#x} has the reserved memory type 3")
        address = v & ~0xF
        if mem_type == 2:  # PCI_BASE_ADDRESS_MEM_TYPE_64
            if i + 1 >= slots:
                raise ConfigError(
                    f"{where}: BAR {i} at {reg:#x} is 64-bit but no slot is left for its upper half"
                )
            address |= _u32(data, reg + 4) << 32
        # Type 1 (below 1 MiB, PCI 2.x) is 32-bit, as Linux treats it.
        bars.append(Bar(i, False, mem_type == 2, bool(v & 0x8), address))
        i += 2 if mem_type == 2 else 1
    return tuple(bars)


def _walk_standard(data: bytes, where: str) -> list[Capability]:
    if not _u16(data, _STATUS) & _STATUS_CAP_LIST:
        return []
    caps: list[Capability] = []
    seen: set[int] = set()
    src = f"capabilities pointer at {_CAPABILITY_LIST:#x}"
    # Bits 1:0 of every pointer are reserved and software must mask them (PCI 3.0 §6.7), as
    # Linux does. Each step must reach a new dword of 0x40..0xFC, so the walk ends within 48
    # steps: more capabilities than fit would have to revisit one, which is the loop error.
    pos = data[_CAPABILITY_LIST] & ~0x3
    while pos:
        if pos < HEADER_SIZE:
            # Linux ends the walk silently here; an MSI-X after it would be invisible to vfio.
            raise ConfigError(f"{where}: {src} points into the header, at {pos:#x}")
        if pos in seen:
            raise ConfigError(f"{where}: {src} loops back to the capability at {pos:#x}")
        seen.add(pos)
        cap_id = data[pos]
        if cap_id == 0xFF:
            # An all-ones read, where Linux stops; nothing after it can be trusted.
            raise ConfigError(f"{where}: capability at {pos:#x} has ID 0xff (an all-ones read)")
        caps.append(Capability(cap_id, pos))
        src = f"next pointer of the capability at {pos:#x}"
        pos = data[pos + 1] & ~0x3
    return caps


def _walk_extended(data: bytes, where: str) -> list[Capability]:
    header = _u32(data, CFG_SIZE)
    # 0 means no extended capabilities (PCIe r4.0 §7.6.3); all-ones is a function without
    # extended config space, which Linux then sizes as 256 bytes.
    if header in (0, 0xFFFFFFFF):
        return []
    caps: list[Capability] = []
    seen: set[int] = set()
    pos, src = CFG_SIZE, ""
    while True:
        if pos in seen:
            raise ConfigError(f"{where}: {src} loops back to the extended capability at {pos:#x}")
        seen.add(pos)
        header = _u32(data, pos)
        caps.append(Capability(header & 0xFFFF, pos, (header >> 16) & 0xF))
        # Next offset is bits 31:20 with bits 1:0 reserved and masked, as PCI_EXT_CAP_NEXT does;
        # so it is at most 0xFFC and a 4-byte header always fits.
        nxt = (header >> 20) & 0xFFC
        if nxt == 0:
            return caps
        src = f"next pointer of the extended capability at {pos:#x}"
        if nxt < CFG_SIZE:
            raise ConfigError(f"{where}: {src} points below 0x100, at {nxt:#x}")
        pos = nxt


def _check_bir(bir: int, what: str, bars: tuple[Bar, ...], slots: int, where: str) -> None:
    if bir >= slots:
        raise ConfigError(f"{where}: {what} BIR {bir}, but this header has BARs 0..{slots - 1}")
    bar = next((b for b in bars if b.index == bir), None)
    if bar is None:
        raise ConfigError(f"{where}: {what} BIR {bir} names the upper half of 64-bit BAR {bir - 1}")
    if bar.is_io:
        # PCI 3.0 §6.8.2: the table and PBA are mapped by a memory BAR.
        raise ConfigError(f"{where}: {what} BIR {bir} names an I/O BAR")


def _find_msix(
    data: bytes, caps: list[Capability], bars: tuple[Bar, ...], slots: int, where: str
) -> MsixInfo | None:
    found = [c.offset for c in caps if not c.extended and c.id == CAP_ID_MSIX]
    if not found:
        return None
    if len(found) > 1:
        # A function has at most one. Linux (so vfio-pci) uses the first; the device may honour
        # another, whose table would then go untrapped.
        offs = ", ".join(f"{o:#x}" for o in found)
        raise ConfigError(f"{where}: more than one MSI-X capability, at {offs}")
    pos = found[0]
    here = f"{where}: MSI-X capability at {pos:#x}"
    if pos + _MSIX_SIZEOF > CFG_SIZE:
        raise ConfigError(f"{here} needs {_MSIX_SIZEOF} bytes and runs past 0xff")
    for c in caps:
        if not c.extended and pos < c.offset < pos + _MSIX_SIZEOF:
            # Its table or PBA register would be another capability's header.
            raise ConfigError(f"{here} overlaps the capability at {c.offset:#x}")
    info = MsixInfo.from_registers(
        _u16(data, pos + _MSIX_FLAGS),
        _u32(data, pos + _MSIX_TABLE),
        _u32(data, pos + _MSIX_PBA),
        cap_offset=pos,
        where=here,
    )
    _check_bir(info.table_bar, "table", bars, slots, here)
    _check_bir(info.pba_bar, "PBA", bars, slots, here)
    return info


def _bridge_subsystem(data: bytes, caps: list[Capability], where: str) -> tuple[int, int] | None:
    for c in caps:
        if not c.extended and c.id == CAP_ID_SSVID:
            if c.offset + 8 > CFG_SIZE:
                raise ConfigError(
                    f"{where}: subsystem-ID capability at {c.offset:#x} runs past 0xff"
                )
            return _u16(data, c.offset + _SSVID_VENDOR_ID), _u16(data, c.offset + _SSVID_DEVICE_ID)
    return None


def parse_config(data: bytes, where: str = "<config>") -> ConfigSpace:
    """Parse a 64-, 256- or 4096-byte config dump; ConfigError names what is wrong and where."""
    data = bytes(data)  # a snapshot: a bytearray changed under the walk could defeat its checks
    if len(data) not in DUMP_SIZES:
        raise _length_error(len(data), where)
    if data[:HEADER_SIZE] == b"\xff" * HEADER_SIZE:
        raise ConfigError(f"{where}: all ones: no device answered (absent, or in D3cold)")
    header_type = data[_HEADER_TYPE] & _HEADER_TYPE_MASK
    slots = _BAR_SLOTS.get(header_type)
    if slots is None:
        raise ConfigError(
            f"{where}: header type {header_type} at {_HEADER_TYPE:#x}: only types 0 (endpoint) "
            "and 1 (bridge) are parsed"
        )
    bars = _decode_bars(data, slots, where)
    caps: list[Capability] | None = None
    msix = None
    subsystem: tuple[int, int] | None = None
    if len(data) > HEADER_SIZE:
        caps = _walk_standard(data, where)
        if len(data) == EXP_CFG_SIZE:
            caps += _walk_extended(data, where)
        msix = _find_msix(data, caps, bars, slots, where)
    if header_type == HEADER_NORMAL:
        subsystem = _u16(data, _SUBSYSTEM_VENDOR_ID), _u16(data, _SUBSYSTEM_ID)
    elif caps is not None:
        subsystem = _bridge_subsystem(data, caps, where)
    return ConfigSpace(
        vendor=_u16(data, _VENDOR_ID),
        device=_u16(data, _DEVICE_ID),
        revision=data[_REVISION_ID],
        class_code=_u32(data, _REVISION_ID) >> 8,
        header_type=header_type,
        multifunction=bool(data[_HEADER_TYPE] & 0x80),
        subsystem_vendor=subsystem[0] if subsystem else None,
        subsystem_device=subsystem[1] if subsystem else None,
        bars=bars,
        size=len(data),
        where=where,
        _capabilities=tuple(caps) if caps is not None else None,
        _msix=msix,
    )


def load_config(path: str | os.PathLike[str]) -> ConfigSpace:
    """Parse a config file, e.g. /sys/bus/pci/devices/0000:01:00.0/config."""
    with open(path, "rb") as f:
        # One byte more than the largest dump, so that a longer file is an error, not cut short.
        return parse_config(f.read(EXP_CFG_SIZE + 1), os.fspath(path))


def msix_regions(
    info: MsixInfo, bar: int, *, bar_size: int | None = None
) -> list[tuple[str, int, int]]:
    """`(name, offset, size)` of the MSI-X structures in `bar`: the table, then the PBA.

    Both may share a BAR and a page, which is common. Overlapping each other breaks PCI 3.0
    §6.8.2 but is returned as is, two entries: rules over the same bytes resolve to the most
    restrictive (contract §2), so no byte is less protected. With `bar_size`, a structure that
    does not fit raises: QEMU refuses such a device too, but for quirks for a few VFs whose PBA
    offset is wrong (vfio_msix_early_setup); the admin, not this code, decides on a fix.
    """
    regions = [
        (name, off, size)
        for name, b, off, size in (
            ("msix-table", info.table_bar, info.table_offset, info.table_size_bytes),
            ("msix-pba", info.pba_bar, info.pba_offset, info.pba_size_bytes),
        )
        if b == bar
    ]
    if bar_size is not None:
        for name, off, size in regions:
            if off + size > bar_size:
                raise ConfigError(
                    f"{name} [{off:#x}, {off + size:#x}) does not fit in BAR {bar} of {bar_size:#x}"
                )
    return regions


def parse_resource(text: str, where: str = "<resource>") -> dict[int, int]:
    """BAR index -> size from a sysfs `resource` file; BARs the kernel left unassigned are absent.

    Each line is "start end flags" in hex (pci-sysfs.c resource_show); lines 0-5 are the BARs.
    """
    sizes: dict[int, int] = {}
    for i, line in enumerate(text.splitlines()[:6]):
        try:
            start, end, _flags = (int(x, 16) for x in line.split())
        except ValueError:
            raise ConfigError(f"{where}:{i + 1}: expected 'start end flags' in hex") from None
        if end > start:
            sizes[i] = end - start + 1
    return sizes
