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
    DeviceError,
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
# QEMU's own error when the pread/pwrite of a trapped access fails (hw/vfio/region.c,
# vfio_region_write/_read: error_report("%s(%s:region%d+0x%"HWADDR_PRIx", ...) failed: %m",
# __func__, ...)): the function's name directly followed by "(", and "failed:" after ")".
# After a failed write the trace event follows; a failed read returns all-ones untraced.
_FAILED = re.compile(r"^\([^()]*\)\s*failed:")


def _access_fields(rest: str, is_write: bool) -> tuple[str, str, str, str, str] | None:
    """(device, region, address, value, width) as text, split from the right: the last
    ":region" ends the device's name, which has colons of its own. String splitting, not a
    regex: one with two open-ended fields backtracks quadratically on a long hostile line."""
    s = rest.strip()
    if not s.startswith("("):
        return None
    if is_write:  # (DEV:regionN+0xADDR, 0xVALUE, WIDTH)
        parts = s[1:-1].rsplit(", ", 2) if s.endswith(")") else []
        if len(parts) != 3:
            return None
        head, value, width = parts
    else:  # (DEV:regionN+0xADDR, WIDTH) = 0xVALUE
        inner, sep, value = s[1:].rpartition(") = ")
        parts = inner.rsplit(", ", 1)
        if not sep or len(parts) != 2:
            return None
        head, width = parts
    dev_region, plus, addr = head.rpartition("+")
    dev, sep, region = dev_region.rpartition(":region")
    if not plus or not sep:
        return None
    return dev, region, addr, value, width


def _setup_fields(rest: str) -> tuple[str, str, str] | None:
    """(device, region, size) of `Device DEV, region N "NAME", flags: .., offset: .., size: ..`."""
    s = rest.strip()
    head, sep, size = s.rpartition(", size: ")
    at = head.find(", region ")
    if not s.startswith("Device ") or not sep or at < 0:
        return None
    return head[len("Device ") : at], head[at + len(", region ") :].split(" ", 1)[0], size


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
        if _FAILED.match(rest):
            what = "write" if event == "vfio_region_write" else "read"
            return [DeviceError(line, f"QEMU: the device {what} failed: {event}{rest[:120]}")]
        try:
            return self._access(line, event, rest)
        except LineError as e:
            return [Malformed(line, f"{event}: {e}")]

    def _access(self, line: int, event: str, rest: str) -> list[TraceItem]:
        is_write = event == "vfio_region_write"
        fields = _access_fields(rest, is_write)
        if fields is None:
            shape = (
                "(DEVICE:regionN+0xADDR, 0xVALUE, WIDTH)"
                if is_write
                else "(DEVICE:regionN+0xADDR, WIDTH) = 0xVALUE"
            )
            raise LineError(f"expected {shape}, got {shown(rest.strip(), 60)}")
        dev, region_text, addr_text, value_text, width_text = fields
        region = parse_dec(region_text, "region")
        addr = parse_hex(addr_text, "address")
        width = parse_dec(width_text, "width")
        value = parse_hex(value_text, "value")
        check_access(width, value)
        if region != self.bar:
            return [Skipped(line, f"region {region} of {dev}, not BAR{self.bar}", bar=region)]
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
        fields = _setup_fields(rest)
        if fields is None:
            return []
        dev, region, size_text = fields
        try:
            if parse_dec(region, "region") != self.bar:
                return []
            size = parse_hex(size_text, "size")
        except LineError:
            return []
        if size:
            self._sizes.setdefault(dev, (size, line))
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
