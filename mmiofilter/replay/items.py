"""What the trace parsers yield, one line at a time, and the number parsing they share.

A parser never raises on its input: every line is an access, something that is not one
(skipped, a note, what the trace says about the BAR), a malformed line with its reason, or
nothing (blank lines, comments, other trace events).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

WIDTHS = (1, 2, 4, 8)
U64_MAX = 2**64 - 1


@dataclass(frozen=True)
class TraceAccess:
    """One MMIO access the driver made, as the trace recorded it.

    `offset` is relative to the BAR's base and may lie outside the BAR (the replay skips
    those); `value` is what the driver wrote, or what its read returned.
    """

    line: int
    offset: int
    width: int
    is_write: bool
    value: int


@dataclass(frozen=True)
class Skipped:
    """A well-formed access that is not replayed: another BAR or device, or undecodable."""

    line: int
    reason: str
    #: The BAR (VFIO region) the access went to, when the trace says and it is not the one
    #: replayed: counted per BAR so that a replay of the wrong BAR says which one to give.
    bar: int | None = None


@dataclass(frozen=True)
class DeviceError:
    """The VMM reporting that an access failed at the device, e.g. QEMU's
    `vfio_region_write(...) failed: ...` (an error message, not a trace event)."""

    line: int
    text: str


@dataclass(frozen=True)
class Malformed:
    """A line the parser could not read as a record of its format."""

    line: int
    reason: str


@dataclass(frozen=True)
class Note:
    """Something the admin should know about the trace: where the BAR was found, lost events."""

    line: int
    text: str


@dataclass(frozen=True)
class BarFound:
    """The size of the BAR as the trace states it (PCIDEV, MAP or vfio_region_setup line)."""

    line: int
    size: int
    source: str


TraceItem = TraceAccess | Skipped | Malformed | Note | BarFound | DeviceError


class LineError(ValueError):
    """Why a line is malformed; parsers turn it into a `Malformed` item."""


def shown(token: str, limit: int = 40) -> str:
    """A token quoted for a message, shortened: a hostile trace line can be megabytes long."""
    return repr(token if len(token) <= limit else token[:limit] + "...")


_HEX_DIGITS = re.compile(r"[0-9a-fA-F]+")
_DEC_DIGITS = re.compile(r"[0-9]+")


def parse_hex(token: str, what: str, *, prefix: bool = True) -> int:
    """A 64-bit unsigned hex number as printf's `0x%llx` (or `%llx`) prints it."""
    digits = token
    if prefix:
        if not token.startswith(("0x", "0X")):
            raise LineError(f"{what} {shown(token)} is not a 0x-prefixed hex number")
        digits = token[2:]
    # fullmatch on a plain digit class: int(x, 16) would also take '-', '+', '_' and spaces.
    if not _HEX_DIGITS.fullmatch(digits):
        raise LineError(f"{what} {shown(token)} is not a hex number")
    if len(digits.lstrip("0")) > 16:
        raise LineError(f"{what} {shown(token)} does not fit in 64 bits")
    return int(digits, 16)


def parse_dec(token: str, what: str) -> int:
    """A non-negative decimal number of at most 20 digits (printf `%d`, `%u`, `%lu`)."""
    # The length check first: int() of a 5,000-digit string raises a ValueError of its own.
    if len(token) > 20 or not _DEC_DIGITS.fullmatch(token):
        raise LineError(f"{what} {shown(token)} is not a non-negative decimal number")
    return int(token)


def check_access(width: int, value: int) -> None:
    """An access the filter can replay: a valid width and a value that fits in it."""
    if width not in WIDTHS:
        raise LineError(f"width {width} is not 1, 2, 4 or 8")
    if value >> (8 * width):
        raise LineError(f"value {value:#x} does not fit in a {width}-byte access")
