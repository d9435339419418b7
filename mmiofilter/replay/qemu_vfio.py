"""QEMU vfio trace events (`-trace 'vfio_region_*'`), from any of QEMU's text trace backends.

The events, as hw/vfio/trace-events declares them (QEMU; the value and the width swap places
between the two):

    vfio_region_write(name, index, addr, data, size)  " (%s:region%d+0x%"PRIx64", 0x%"PRIx64 ", %d)"
    vfio_region_read(name, index, addr, size, data)   " (%s:region%d+0x%"PRIx64", %d) = 0x%"PRIx64
    vfio_region_setup(dev, index, name, flags, offset, size)
        "Device %s, region %d \"%s\", flags: 0x%lx, offset: 0x%lx, size: 0x%lx"

`name` is the device's name (`0000:65:00.0`, which has colons of its own), `index` the VFIO
region: 0..5 are the BARs of a vfio-pci device. A backend prints the event's name, a space and
the format, with its own prefix before: none or `PID@SEC.USEC:` (log backend), the kernel's
`... tracing_mark_write: ` (ftrace), syslog's. So an event is found by its name anywhere in a
line; lines naming no vfio_region event are other output and ignored.

QEMU traces only the accesses that trap: run the device with `x-no-mmap=on` to see them all.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from .items import (
    BarFound,
    LineError,
    Malformed,
    Note,
    Skipped,
    TraceAccess,
    TraceItem,
    check_access,
    parse_dec,
    parse_hex,
    shown,
)

_EVENT = re.compile(r"(?:^|[\s:])(vfio_region_(?:read|write|setup))(?!\w)")
# Loose on purpose: each field is then checked on its own, so a malformed line says which.
# `.*` before ":region" is greedy, so the last ":region" ends the device's name.
_WRITE = re.compile(
    r"\s*\((?P<dev>.*):region(?P<idx>[^+]*)\+(?P<addr>[^,]*), (?P<val>[^,]*), (?P<size>[^)]*)\)\s*"
)
_READ = re.compile(
    r"\s*\((?P<dev>.*):region(?P<idx>[^+]*)\+(?P<addr>[^,]*), (?P<size>[^)]*)\) = (?P<val>\S*)\s*"
)
_SETUP = re.compile(
    r'\s*Device (?P<dev>.*), region (?P<idx>[0-9]{1,9}) ".*", flags: 0x[0-9a-fA-F]+, '
    r"offset: 0x[0-9a-fA-F]+, size: (?P<size>0x[0-9a-fA-F]+)\s*"
)


def looks_like_qemu_vfio(text: str) -> bool:
    """Whether a line holds a vfio_region event (for format detection)."""
    return _EVENT.search(text) is not None


class QemuVfioParser:
    """Reads QEMU vfio trace output line by line, keeping which device is replayed."""

    def __init__(self, *, bar: int = 0, device: str | None = None) -> None:
        self.bar = bar
        self.device = device
        self._sizes: dict[str, tuple[int, int]] = {}  # device -> (BAR size, line)
        self._size_told = False

    def feed(self, line: int, text: str) -> list[TraceItem]:
        """The items of one line (numbered from 1)."""
        m = _EVENT.search(text)
        if m is None:
            return []
        event, rest = m.group(1), text[m.end() :]
        if event == "vfio_region_setup":
            return self._setup(line, rest)
        try:
            return self._access(line, event, rest)
        except LineError as e:
            return [Malformed(line, f"{event}: {e}")]

    def _access(self, line: int, event: str, rest: str) -> list[TraceItem]:
        is_write = event == "vfio_region_write"
        fields = (_WRITE if is_write else _READ).fullmatch(rest)
        if fields is None:
            shape = (
                "(DEVICE:regionN+0xADDR, 0xVALUE, WIDTH)"
                if is_write
                else "(DEVICE:regionN+0xADDR, WIDTH) = 0xVALUE"
            )
            raise LineError(f"expected {shape}, got {shown(rest.strip(), 60)}")
        region = parse_dec(fields["idx"], "region")
        addr = parse_hex(fields["addr"], "address")
        width = parse_dec(fields["size"], "width")
        value = parse_hex(fields["val"], "value")
        check_access(width, value)
        dev: str = fields["dev"]
        if region != self.bar:
            return [Skipped(line, f"region {region} of {dev}, not BAR{self.bar}")]
        out: list[TraceItem] = []
        if self.device is None:
            self.device = dev
            out.append(Note(line, f"replaying device {dev}, the first to access BAR{self.bar}"))
        if dev != self.device:
            return [Skipped(line, f"device {dev}, not {self.device}")]
        out += self._tell_size()
        out.append(TraceAccess(line, addr, width, is_write, value))
        return out

    def _setup(self, line: int, rest: str) -> list[TraceItem]:
        # Only a hint for the BAR's size: a line QEMU printed differently is not an error.
        m = _SETUP.fullmatch(rest)
        if m is None or int(m["idx"]) != self.bar:
            return []
        try:
            size = parse_hex(m["size"], "size")
        except LineError:
            return []
        if size:
            self._sizes.setdefault(m["dev"], (size, line))
        return self._tell_size() if self.device is not None else []

    def _tell_size(self) -> list[TraceItem]:
        if self._size_told or self.device not in self._sizes:
            return []
        self._size_told = True
        size, line = self._sizes[self.device]
        return [BarFound(line, size, f"vfio_region_setup at line {line}")]


def parse_qemu_vfio(
    lines: Iterable[str], *, bar: int = 0, device: str | None = None
) -> Iterator[TraceItem]:
    """The items of QEMU vfio trace output, lines numbered from 1."""
    p = QemuVfioParser(bar=bar, device=device)
    for n, text in enumerate(lines, 1):
        yield from p.feed(n, text)
