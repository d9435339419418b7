"""The PCI guest of the vfio-user end-to-end test (guest.asm), assembled with nasm on first
use and cached by the KVM firmware's assembler (mmiofilter/kvm/firmware.py), and its program
format."""

from __future__ import annotations

from ..kvm.firmware import SIZE, FirmwareError, assemble, load
from ..kvm.program import MAGIC, Line, Program, parse_transcript

__all__ = ["FirmwareError", "PciTranscript", "image", "parse", "program_bytes"]


def image() -> bytes:
    return assemble(load(__package__, "guest.asm"), "pci-guest", SIZE)


def program_bytes(program: Program, vendor: int, device: int, bar0: int) -> bytes:
    """`program` for the PCI guest: the device to find and where to place BAR0 ride in the
    header words firmware.asm leaves zero."""
    raw = bytearray(program.encode())
    assert int.from_bytes(raw[0:4], "little") == MAGIC
    raw[8:12] = (vendor | device << 16).to_bytes(4, "little")
    raw[12:16] = bar0.to_bytes(4, "little")
    return bytes(raw)


class PciTranscript:
    """The guest's output: the device it found, BAR0 as read back, the operations' lines."""

    def __init__(self, text: str) -> None:
        self.found: tuple[int, int] | None = None
        self.bar0: int | None = None
        rest = []
        for raw in text.splitlines():
            parts = raw.split()
            if parts and parts[0] == "P" and len(parts) == 3:
                self.found = (int(parts[1], 16), int(parts[2], 16))
            elif parts and parts[0] == "B" and len(parts) == 2:
                self.bar0 = int(parts[1], 16)
            else:
                rest.append(raw)
        self.lines: list[Line] = parse_transcript("\n".join(rest))


def parse(text: str) -> PciTranscript:
    return PciTranscript(text)
