"""Linux mmiotrace logs (`echo mmiotrace > current_tracer`, then `trace_pipe` or `trace`).

Records, as kernel/trace/trace_mmiotrace.c prints them (Documentation/trace/mmiotrace.rst,
format version 20070824); numbers printed `0x%...x` are hex, the others decimal:

    R width sec.usec map-id 0xphys 0xvalue 0xpc pid       a read and the value it returned
    W width sec.usec map-id 0xphys 0xvalue 0xpc pid       a write
    MAP sec.usec map-id 0xphys 0xvirt 0xlen 0xpc pid      an ioremap
    UNMAP sec.usec map-id 0xpc pid                        its iounmap
    UNKNOWN sec.usec map-id 0xphys b2,b1,b0 0xpc pid      an access it could not decode
    MARK sec.usec text                                    a marker ("Lost N events." too)
    VERSION 20070824
    PCIDEV bbdf vvvvdddd irq start0..start6 size0..size6 [driver]   (starts/sizes %llx)

`phys` is a bus address; the BAR's base comes from `base=` (the admin's `--base`), else from the
PCIDEV window of BAR `bar` holding the first MAP inside one, else from the first MAP (a driver
usually ioremaps its register BAR first, from its start). The map id ties each access to its
MAP: an access through an id that is not mapped, or outside its map, is malformed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .items import (
    U64_MAX,
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

VERSION = "20070824"
_TIMESTAMP = re.compile(r"[0-9]{1,20}\.[0-9]{1,9}")
_LOST = re.compile(r"Lost ([0-9]+) events")
#: Low bits of a PCIDEV start: resource flags (PCI_REGION_FLAG_MASK); bit 0 marks an I/O BAR.
_FLAG_BITS = 0xF
#: What a line must look like for `looks_like_mmiotrace` to vouch for the format.
_SIGNATURE = re.compile(
    r"(VERSION [0-9]+"
    r"|PCIDEV [0-9a-fA-F]{4} [0-9a-fA-F]{8} "
    r"|MAP [0-9]+\.[0-9]+ [0-9]+ 0x"
    r"|UNMAP [0-9]+\.[0-9]+ [0-9]+ 0x"
    r"|[RW] [0-9] [0-9]+\.[0-9]+ [0-9]+ 0x"
    r"|MARK [0-9]+\.[0-9]+ )"
)


def looks_like_mmiotrace(text: str) -> bool:
    """Whether a line has the shape of an mmiotrace record (for format detection)."""
    return _SIGNATURE.match(text) is not None


@dataclass(frozen=True)
class _Map:
    phys: int
    length: int
    line: int

    def holds(self, phys: int, width: int) -> bool:
        return self.phys <= phys and phys + width <= self.phys + self.length


@dataclass(frozen=True)
class _Window:
    """BAR `bar` of one PCIDEV line."""

    start: int
    size: int
    line: int
    device: str

    def holds(self, m: _Map) -> bool:
        return self.start <= m.phys and m.phys + m.length <= self.start + self.size


def _timestamp(token: str) -> None:
    if not _TIMESTAMP.fullmatch(token):
        raise LineError(f"timestamp {shown(token)} is not sec.usec")


def _fields(tokens: list[str], n: int, shape: str) -> None:
    if len(tokens) != n:
        raise LineError(f"{tokens[0]} record has {len(tokens) - 1} field(s), expected {shape}")


class MmiotraceParser:
    """Reads an mmiotrace log line by line, keeping the maps and the BAR's base."""

    def __init__(self, *, bar: int = 0, base: int | None = None) -> None:
        self.bar = bar
        self.base = base
        self._maps: dict[int, _Map] = {}
        self._windows: list[_Window] = []  # BAR `bar` of each PCIDEV line that has one
        self._pcidev_seen = False
        self._size_told = False

    def feed(self, line: int, text: str) -> list[TraceItem]:
        """The items of one line (numbered from 1)."""
        tokens = text.split()
        if not tokens or tokens[0].startswith("#"):
            return []  # blank, or the `trace` file's header comments
        try:
            return self._record(line, tokens)
        except LineError as e:
            return [Malformed(line, str(e))]

    def _record(self, line: int, t: list[str]) -> list[TraceItem]:
        kw = t[0]
        if kw in ("R", "W"):
            return self._access(line, t)
        if kw == "MAP":
            return self._map(line, t)
        if kw == "UNMAP":
            _fields(t, 5, "sec.usec map-id 0xpc pid")
            _timestamp(t[1])
            map_id = parse_dec(t[2], "map id")
            parse_hex(t[3], "pc")
            parse_dec(t[4], "pid")
            if self._maps.pop(map_id, None) is None:
                raise LineError(f"UNMAP of map id {map_id}, which is not mapped")
            return []
        if kw == "UNKNOWN":
            _fields(t, 7, "sec.usec map-id 0xphys b2,b1,b0 0xpc pid")
            _timestamp(t[1])
            parse_dec(t[2], "map id")
            phys = parse_hex(t[3], "phys")
            return [Skipped(line, f"mmiotrace could not decode the access at {phys:#x}")]
        if kw == "MARK":
            if len(t) < 2:
                raise LineError("MARK record without a timestamp")
            _timestamp(t[1])
            lost = _LOST.search(" ".join(t[2:]))
            if lost:
                return [Note(line, f"mmiotrace lost {lost.group(1)} event(s): trace incomplete")]
            return []
        if kw == "VERSION":
            if t[1:] != [VERSION]:
                seen = " ".join(t[1:])[:40]
                return [Note(line, f"mmiotrace format {seen!r}; this reader knows {VERSION}")]
            return []
        if kw == "PCIDEV":
            return self._pcidev(line, t)
        if kw == "LSPCI":
            return []  # lspci -v text the user-space tools add for readers
        raise LineError(f"unknown mmiotrace record {shown(kw)}")

    def _access(self, line: int, t: list[str]) -> list[TraceItem]:
        _fields(t, 8, "width sec.usec map-id 0xphys 0xvalue 0xpc pid")
        width = parse_dec(t[1], "width")
        _timestamp(t[2])
        map_id = parse_dec(t[3], "map id")
        phys = parse_hex(t[4], "phys")
        value = parse_hex(t[5], "value")
        parse_hex(t[6], "pc")
        parse_dec(t[7], "pid")
        check_access(width, value)
        m = self._maps.get(map_id)
        if m is None:
            raise LineError(f"access through map id {map_id}, which is not mapped")
        if not m.holds(phys, width):
            raise LineError(
                f"{width}-byte access at {phys:#x} is outside map {map_id} "
                f"[{m.phys:#x}, {m.phys + m.length:#x}) of line {m.line}"
            )
        if self.base is None:
            return [Skipped(line, f"no MAP of BAR{self.bar} seen before it (give --base)")]
        return [TraceAccess(line, phys - self.base, width, t[0] == "W", value)]

    def _map(self, line: int, t: list[str]) -> list[TraceItem]:
        _fields(t, 8, "sec.usec map-id 0xphys 0xvirt 0xlen 0xpc pid")
        _timestamp(t[1])
        map_id = parse_dec(t[2], "map id")
        phys = parse_hex(t[3], "phys")
        parse_hex(t[4], "virt")
        length = parse_hex(t[5], "len")
        parse_hex(t[6], "pc")
        parse_dec(t[7], "pid")
        if length == 0 or phys + length - 1 > U64_MAX:
            raise LineError(f"map [{phys:#x}, +{length:#x}) is empty or wraps past 2**64")
        m = _Map(phys, length, line)
        self._maps[map_id] = m  # ids are not reused while mapped; a repeat replaces
        out: list[TraceItem] = []
        if self.base is None:
            out += self._choose_base(m)
        elif not self._size_told and phys == self.base and not self._windows:
            self._size_told = True
            out.append(BarFound(line, length, f"MAP at line {line}"))
        return out

    def _choose_base(self, m: _Map) -> list[TraceItem]:
        if self._pcidev_seen:
            w = next((w for w in self._windows if w.holds(m)), None)
            if w is None:
                return []  # a map of another BAR or device
            self.base = w.start
            self._size_told = True
            return [
                Note(
                    m.line,
                    f"BAR{self.bar} of {w.device} at {w.start:#x} (PCIDEV line {w.line}), "
                    f"first mapped at line {m.line}",
                ),
                BarFound(m.line, w.size, f"PCIDEV line {w.line}"),
            ]
        self.base = m.phys
        self._size_told = True
        return [
            Note(
                m.line,
                f"BAR{self.bar} taken to start at {m.phys:#x}, the first MAP (line {m.line}); "
                "give --base if the driver mapped it from elsewhere",
            ),
            BarFound(m.line, m.length, f"MAP at line {m.line}"),
        ]

    def _pcidev(self, line: int, t: list[str]) -> list[TraceItem]:
        if len(t) < 18:
            raise LineError(f"PCIDEV record has {len(t) - 1} field(s), expected at least 17")
        parse_hex(t[1], "bus/devfn", prefix=False)
        ids = parse_hex(t[2], "vendor/device", prefix=False)
        parse_hex(t[3], "irq", prefix=False)
        starts = [parse_hex(x, "resource start", prefix=False) for x in t[4:11]]
        sizes = [parse_hex(x, "resource size", prefix=False) for x in t[11:18]]
        self._pcidev_seen = True
        start, size = starts[self.bar], sizes[self.bar]
        if size == 0 or start & 1:
            return []  # no such BAR, or an I/O BAR (mmiotrace sees memory only)
        start &= ~_FLAG_BITS
        if start + size - 1 > U64_MAX:
            raise LineError(f"BAR{self.bar} [{start:#x}, +{size:#x}) wraps past 2**64")
        device = f"{t[1]} ({ids >> 16:04x}:{ids & 0xFFFF:04x})"
        self._windows.append(_Window(start, size, line, device))
        if self.base is not None and start == self.base and not self._size_told:
            self._size_told = True
            return [BarFound(line, size, f"PCIDEV line {line}")]
        return []


def parse_mmiotrace(
    lines: Iterable[str], *, bar: int = 0, base: int | None = None
) -> Iterator[TraceItem]:
    """The items of an mmiotrace log, lines numbered from 1."""
    p = MmiotraceParser(bar=bar, base=base)
    for n, text in enumerate(lines, 1):
        yield from p.feed(n, text)
