"""A trace file: its lines, its format (given or detected) and the items its parser yields."""

from __future__ import annotations

import gzip
import itertools
import os
import sys
import zlib
from collections.abc import Iterable, Iterator

from .items import Note, TraceItem
from .mmiotrace import looks_like_mmiotrace, parse_mmiotrace
from .qemu_vfio import looks_like_qemu_vfio, parse_qemu_vfio

FORMATS = ("mmiotrace", "qemu")
#: Lines auto-detection reads at most: a QEMU log can open with a lot of other output.
DETECT_LINES = 10_000


def detect_format(lines: Iterable[str], limit: int = DETECT_LINES) -> str | None:
    """The format of the first line shaped like either ("mmiotrace", "qemu"), else None."""
    for text in itertools.islice(lines, limit):
        if looks_like_qemu_vfio(text):
            return "qemu"
        if looks_like_mmiotrace(text):
            return "mmiotrace"
    return None


def read_lines(path: str | os.PathLike[str]) -> Iterator[str]:
    """The lines of a file as `grep -n` numbers them (split at '\\n' only), streamed: traces
    run to gigabytes. `-` is standard input; a `.gz` file is decompressed as it is read. Bytes
    that are not UTF-8 become U+FFFD rather than an error."""
    name = os.fspath(path)
    if name == "-":
        yield from _decode(sys.stdin.buffer, "<stdin>")
        return
    opener = gzip.open if name.endswith(".gz") else open
    with opener(name, "rb") as f:
        yield from _decode(f, name)


def _decode(f: Iterable[bytes], name: str) -> Iterator[str]:
    try:
        for raw in f:
            yield raw.removesuffix(b"\n").removesuffix(b"\r").decode("utf-8", "replace")
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        # a truncated or corrupt .gz: say which file, not a traceback
        raise ValueError(f"{name}: not a readable gzip stream ({e})") from None


class TraceSource:
    """The items of one trace, streamed; `lines_read` counts the lines consumed so far."""

    def __init__(
        self,
        lines: Iterable[str],
        *,
        fmt: str = "auto",
        bar: int = 0,
        base: int | None = None,
        device: str | None = None,
    ) -> None:
        it = iter(lines)
        head: list[str] = []
        if fmt == "auto":
            # Keep what detection read, so that parsing starts again from line 1.
            for text in itertools.islice(it, DETECT_LINES):
                head.append(text)
                found = detect_format([text])
                if found is not None:
                    fmt = found
                    break
            else:
                raise ValueError(
                    f"cannot tell the trace format from its first {len(head)} line(s): no "
                    "mmiotrace record and no vfio_region event (give --format)"
                )
        if fmt not in FORMATS:
            raise ValueError(f"trace format {fmt!r} is not one of auto, {', '.join(FORMATS)}")
        self.format = fmt
        self.bar = bar
        self.base = base
        self.device = device
        self.lines_read = 0
        self._lines = itertools.chain(head, it)

    def _counted(self) -> Iterator[str]:
        for text in self._lines:
            self.lines_read += 1
            yield text

    def __iter__(self) -> Iterator[TraceItem]:
        if self.format == "mmiotrace":
            if self.device is not None:
                yield Note(0, "a device name only selects among QEMU trace devices: ignored")
            yield from parse_mmiotrace(self._counted(), bar=self.bar, base=self.base)
        else:
            if self.base is not None:
                yield Note(0, "QEMU traces give offsets in the region: the base is ignored")
            yield from parse_qemu_vfio(self._counted(), bar=self.bar, device=self.device)


def open_trace(
    path: str | os.PathLike[str],
    *,
    fmt: str = "auto",
    bar: int = 0,
    base: int | None = None,
    device: str | None = None,
) -> TraceSource:
    """A trace file, ready to be iterated (once)."""
    return TraceSource(read_lines(path), fmt=fmt, bar=bar, base=base, device=device)
