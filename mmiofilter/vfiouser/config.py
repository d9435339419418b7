"""A device's PCI config space as the server presents it: the bytes, and which bits a write
may change.

What is writable follows what Linux's vfio-pci lets a user change of a real device
(drivers/vfio/pci/vfio_pci_config.c, init_pci_cap_basic_perm and the capability tables: the
command register, cache line size, latency timer, the BARs, the interrupt line, MSI's enable
and multiple-message-enable bits, address and data, the PCI Express control registers), with
the BARs under their size masks as a device answers sizing, and treats device-specific space
outside any capability as the device's own. Capability IDs and list pointers, IDs, class,
status and the rest of the header are read-only; BIST reads 0 (a function without BIST, whose
writes the PCI spec has it ignore). The same object is
the `config` target of the BAR0 config-space mirror: a write through the mirror changes exactly
the bits a config cycle could.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..backends import CallbackBackend
from ..devices.pciconfig import CAP_ID_EXP, CAP_ID_MSI, parse_config

# PCI_COMMAND: vfio-pci lets every bit through (ALL_WRITE); the defined ones are bits 10:0
# (I/O, memory, bus master, special cycles, MWI, VGA snoop, parity, (stepping), SERR, fast
# back-to-back, INTx disable); 15:11 are reserved and read 0.
COMMAND_WRITABLE = 0x07FF
_BAR0 = 0x10


class ConfigSpaceError(ValueError):
    pass


def _set_mask(mask: bytearray, offset: int, width: int, bits: int) -> None:
    for i in range(width):
        mask[offset + i] = (bits >> (8 * i)) & 0xFF


class EmulatedConfig:
    """`data` is what reads return; `write` changes only the writable bits. `bar_sizes` maps a
    BAR index to its size (a memory BAR; 0 or absent: not implemented, reads as 0)."""

    def __init__(self, data: bytes, bar_sizes: Mapping[int, int]) -> None:
        cfg = parse_config(data, "<served config space>")
        self.data = bytearray(data)
        self.writes: list[tuple[int, int, int]] = []
        self.mask = bytearray(len(data))
        m = self.mask
        _set_mask(m, 0x04, 2, COMMAND_WRITABLE)
        m[0x0C] = m[0x0D] = 0xFF  # cache line size, latency timer
        m[0x3C] = 0xFF  # interrupt line
        implemented = {b.index: b for b in cfg.bars}
        for i in range(6):
            self.data[_BAR0 + 4 * i : _BAR0 + 4 * i + 4] = bytes(4)
        for index, size in bar_sizes.items():
            bar = implemented.get(index)
            if bar is None or size <= 0:
                continue
            if size & (size - 1):
                raise ConfigSpaceError(f"BAR{index}: size {size:#x} is not a power of two")
            reg = _BAR0 + 4 * index
            self.data[reg : reg + 4] = data[reg : reg + 4]
            _set_mask(m, reg, 4, ~(size - 1) & 0xFFFFFFF0)
            if bar.is_64bit:  # the upper dword holds the high address bits
                self.data[reg + 4 : reg + 8] = data[reg + 4 : reg + 8]
                _set_mask(m, reg + 4, 4, (~(size - 1) >> 32) & 0xFFFFFFFF)
        owned = bytearray(len(data))  # bytes inside the header or a capability
        owned[:0x40] = b"\x01" * 0x40
        caps = sorted(cfg.capabilities, key=lambda c: c.offset)
        for n, c in enumerate(caps):
            limit = 0x100 if not c.extended else len(data)
            later = [x.offset for x in caps[n + 1 :] if x.extended == c.extended]
            end = min(later[0] if later else limit, limit)
            if c.id == CAP_ID_MSI and not c.extended:
                ctrl = int.from_bytes(data[c.offset + 2 : c.offset + 4], "little")
                is64 = bool(ctrl & 0x80)
                end = c.offset + (14 if is64 else 10)
                _set_mask(m, c.offset + 2, 2, 0x0071)  # MSI enable, multiple message enable
                _set_mask(m, c.offset + 4, 4, 0xFFFFFFFC)  # message address
                if is64:
                    _set_mask(m, c.offset + 8, 4, 0xFFFFFFFF)
                data_at = c.offset + (12 if is64 else 8)
                _set_mask(m, data_at, 2, 0xFFFF)
            elif c.id == CAP_ID_EXP and not c.extended:
                end = c.offset + 0x3C
                for ctl in (0x08, 0x10, 0x28, 0x30):  # device, link, device 2, link 2 control
                    _set_mask(m, c.offset + ctl, 2, 0xFFFF)
            else:
                header = 4 if c.extended else 2
                for i in range(c.offset + header, end):
                    m[i] = 0xFF
            owned[c.offset : end] = b"\x01" * (end - c.offset)
        for i in range(0x40, len(data)):
            if not owned[i]:
                m[i] = 0xFF  # device-specific registers outside any capability

    @property
    def size(self) -> int:
        return len(self.data)

    def _check(self, offset: int, count: int) -> None:
        if count < 1 or offset < 0 or offset + count > len(self.data):
            raise ConfigSpaceError(
                f"config access of {count} byte(s) at {offset:#x} is outside the "
                f"{len(self.data)}-byte config space"
            )

    def read_bytes(self, offset: int, count: int) -> bytes:
        self._check(offset, count)
        return bytes(self.data[offset : offset + count])

    def write_bytes(self, offset: int, data: bytes) -> None:
        self._check(offset, len(data))
        for i, b in enumerate(data):
            at = offset + i
            keep = self.data[at] & ~self.mask[at] & 0xFF
            self.data[at] = keep | (b & self.mask[at])
        self.writes.append((offset, len(data), int.from_bytes(data, "little")))

    # the redirect target's interface: exact-width accesses
    def read(self, offset: int, width: int) -> int:
        return int.from_bytes(self.read_bytes(offset, width), "little")

    def write(self, offset: int, width: int, value: int) -> None:
        self.write_bytes(offset, value.to_bytes(width, "little"))

    def backend(self) -> CallbackBackend:
        return CallbackBackend(self.read, self.write)
