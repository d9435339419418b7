"""Run-time discovery of a GPU's units (NVLink IOCTRL, engines) through its device-info table.

The table sits in BAR0 and is read through the filter's backend before the guest runs. It is
device memory, so it is treated as hostile input: whatever a compromised device or an earlier
guest left there, the walker either returns units that lie inside the BAR, each with the extent
its type implies and IOCTRL units not overlapping, or raises DeviceInfoError naming the entry
and the fault. It reads each entry once, in order, so it always ends.

Two formats (facts and sources in the maps' `[device_info]`):

- gv100 (NV_PTOP_DEVICE_INFO, open-gpu-doc volta/gv100/dev_top.ref.txt): 32-bit entries; bits
  1:0 say what an entry carries (NOT_VALID, DATA, ENUM, ENGINE_TYPE), bit 31 (CHAIN) that the
  next entry belongs to the same device. ENGINE_TYPE holds TYPE_ENUM in 30:2; DATA holds
  TYPE 30 (0 = ENUM2, the only one defined), INST_ID 29:26 and PRI_BASE 23:12 in place.
- gh100 (NV_PTOP_DEVICE_INFO2, gpu-admin-tools gpu/regs/gh100/top.py): NV_PTOP_DEVICE_INFO_CFG
  gives VERSION 3:0, MAX_DEVICES 15:4, MAX_ROWS_PER_DEVICE 19:16 and NUM_ROWS 31:20. The walker
  reads NUM_ROWS rows, NUM_ROWS bounded by the largest array of this format (353 rows:
  open-gpu-kernel-modules gb100/dev_top.h NV_PTOP_DEVICE_INFO2__SIZE_1). A device is
  a run of rows chained by bit 31 whose fields are numbered across rows: INSTANCE_ID 23:16 and
  TYPE_ENUM 30:24 in row 0, DEVICE_PRI_BASE 57:40 (row 1 bits 25:8, in place) in row 1. A zero
  row outside a chain is empty.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise

from .regmap import DeviceInfoSpec

#: dev_top.ref.txt: a device's register range "is at a minimum 4kB". Units of a type whose
#: extent the map does not give get this size.
MIN_UNIT_SIZE = 0x1000

CHAIN = 1 << 31
# gv100 entry kinds (ENTRY, bits 1:0)
NOT_VALID, DATA, ENUM, ENGINE_TYPE = 0, 1, 2, 3
GV100_TYPE_SHIFT, GV100_TYPE_MASK = 2, (1 << 29) - 1
GV100_DATA_TYPE = 1 << 30
GV100_INST_SHIFT, GV100_INST_MASK = 26, 0xF
GV100_PRI_BASE_MASK = 0x00FFF000
# gh100 row fields
GH100_TYPE_SHIFT, GH100_TYPE_MASK = 24, 0x7F
GH100_INST_SHIFT, GH100_INST_MASK = 16, 0xFF
GH100_PRI_BASE_MASK = 0x03FFFF00

# What a second entry of one kind in a device means.
_DUPLICATE = {
    DATA: "more than one base (a second DATA entry",
    ENGINE_TYPE: "more than one type (a second ENGINE_TYPE entry",
    ENUM: "more than one ENUM entry (a second one",
}


class DeviceInfoError(ValueError):
    """A device-info table that cannot be trusted: the message names the entry and the fault."""


@dataclass(frozen=True)
class Unit:
    """One device of the table: its type, and the BAR0 range its registers occupy."""

    type_enum: int
    base: int
    size: int
    #: Table position of the device's first entry (row).
    index: int
    instance: int = 0

    @property
    def end(self) -> int:
        return self.base + self.size


Read32 = Callable[[int], int]


def read_units(read32: Read32, spec: DeviceInfoSpec, bar_size: int) -> list[Unit]:
    """Every device the table lists, in table order.

    Units of type `spec.ioctrl_type` get `spec.unit_size`, others MIN_UNIT_SIZE. Raises
    DeviceInfoError for a malformed table; nothing is dropped or clipped silently.
    """
    if not isinstance(bar_size, int) or isinstance(bar_size, bool) or bar_size < 1:
        raise ValueError(f"bar_size must be a positive integer, not {bar_size!r}")
    if spec.table_end > bar_size:
        raise DeviceInfoError(
            f"device-info table [{spec.base:#x}, {spec.table_end:#x}) does not fit a BAR0 of "
            f"size {bar_size:#x}"
        )
    rd = _Reader(read32, bar_size)
    raw = _walk_gv100(rd, spec) if spec.format == "gv100" else _walk_gh100(rd, spec)
    label = "entry" if spec.format == "gv100" else "row"
    units = [_place(spec, bar_size, label, *r) for r in raw]
    _check_overlap(label, [u for u in units if u.type_enum == spec.ioctrl_type])
    return units


def find_units(read32: Read32, spec: DeviceInfoSpec, bar_size: int, type_enum: int) -> list[Unit]:
    """The units of one type (e.g. `spec.ioctrl_type`), after validating the whole table."""
    return [u for u in read_units(read32, spec, bar_size) if u.type_enum == type_enum]


# --- reading ---------------------------------------------------------------------------------


class _Reader:
    """read32 with the checks a hostile or broken backend calls for."""

    def __init__(self, read32: Read32, bar_size: int) -> None:
        self.read32 = read32
        self.bar_size = bar_size

    def __call__(self, offset: int, what: str) -> int:
        if offset + 4 > self.bar_size:  # callers check first; this is the last line
            raise DeviceInfoError(f"{what} at {offset:#x} lies outside the BAR")
        try:
            v = self.read32(offset)
        except Exception as exc:  # any backend failure is a failed discovery, not a crash
            raise DeviceInfoError(f"{what} at {offset:#x}: read32 failed: {exc!r}") from exc
        if not isinstance(v, int) or isinstance(v, bool):
            raise DeviceInfoError(
                f"{what} at {offset:#x}: read32 returned a {type(v).__name__}, not an integer"
            )
        if not 0 <= v <= 0xFFFFFFFF:
            shown = f"{v:#x}" if abs(v).bit_length() <= 128 else f"a {v.bit_length()}-bit value"
            raise DeviceInfoError(f"{what} at {offset:#x}: read32 returned {shown}, not 32 bits")
        return int(v)  # a plain int, whatever int subclass the backend hands back


# A device as the walkers see it: (type_enum, base, first index, instance)
_Raw = tuple[int, int, int, int]


def _walk_gv100(rd: _Reader, spec: DeviceInfoSpec) -> list[_Raw]:
    out: list[_Raw] = []
    first = -1  # first entry of the open device; -1: none open
    seen: dict[int, int] = {}  # entry kind -> index, for the open device
    words: dict[int, int] = {}
    for i in range(spec.entries):
        word = rd(spec.base + 4 * i, f"entry {i}")
        kind = word & 3
        if kind == NOT_VALID:
            continue  # "the entry is to be ignored", inside a chain too (as nouveau gk104 does)
        if first < 0:
            first = i
        if kind in seen:
            raise DeviceInfoError(
                f"entry {i}: device starting at entry {first} has {_DUPLICATE[kind]}; "
                f"the first is entry {seen[kind]})"
            )
        seen[kind] = i
        words[kind] = word
        if kind == DATA and word & GV100_DATA_TYPE:
            raise DeviceInfoError(
                f"entry {i}: DATA entry of TYPE 1; only ENUM2 (0) is defined, so its fields "
                "cannot be read"
            )
        if word & CHAIN:
            continue
        if ENGINE_TYPE not in words:
            raise DeviceInfoError(
                f"entry {first}: device (entries {first}..{i}) has no ENGINE_TYPE entry: no type"
            )
        if DATA not in words:
            raise DeviceInfoError(
                f"entry {first}: device (entries {first}..{i}) has no DATA entry: no base"
            )
        type_enum = (words[ENGINE_TYPE] >> GV100_TYPE_SHIFT) & GV100_TYPE_MASK
        data = words[DATA]
        instance = (data >> GV100_INST_SHIFT) & GV100_INST_MASK
        out.append((type_enum, data & GV100_PRI_BASE_MASK, first, instance))
        first, seen, words = -1, {}, {}
    if first >= 0:
        raise DeviceInfoError(
            f"entry {first}: the chain starting here runs past the last entry "
            f"({spec.entries - 1}): the table never ends this device"
        )
    return out


def _walk_gh100(rd: _Reader, spec: DeviceInfoSpec) -> list[_Raw]:
    if spec.config is None:  # DeviceInfoSpec refuses this; a check that survives -O
        raise ValueError("device_info: the gh100 format needs a config offset")
    cfg = rd(spec.config, "NV_PTOP_DEVICE_INFO_CFG")
    version, max_devices = cfg & 0xF, (cfg >> 4) & 0xFFF
    max_rows, num_rows = (cfg >> 16) & 0xF, cfg >> 20
    if spec.version is not None and version != spec.version:
        raise DeviceInfoError(
            f"NV_PTOP_DEVICE_INFO_CFG {cfg:#010x}: VERSION {version}, the map knows version "
            f"{spec.version}: the rows may not mean what the walker reads"
        )
    if num_rows > spec.entries:
        raise DeviceInfoError(
            f"NV_PTOP_DEVICE_INFO_CFG {cfg:#010x}: NUM_ROWS {num_rows} is more rows than the "
            f"table holds ({spec.entries})"
        )
    out: list[_Raw] = []
    rows: list[int] = []
    first = -1
    for i in range(num_rows):
        word = rd(spec.base + 4 * i, f"row {i}")
        if first < 0:
            if word == 0:
                continue  # an empty row between devices
            first = i
        rows.append(word)
        if len(rows) > max_rows:
            raise DeviceInfoError(
                f"row {i}: device starting at row {first} has more than MAX_ROWS_PER_DEVICE "
                f"({max_rows}) rows"
            )
        if word & CHAIN:
            continue
        if len(rows) < 2:
            raise DeviceInfoError(f"row {first}: device has a single row: no base (row 1)")
        if len(out) == max_devices:
            raise DeviceInfoError(
                f"row {first}: one device more than MAX_DEVICES ({max_devices}) allows"
            )
        type_enum = (rows[0] >> GH100_TYPE_SHIFT) & GH100_TYPE_MASK
        instance = (rows[0] >> GH100_INST_SHIFT) & GH100_INST_MASK
        out.append((type_enum, rows[1] & GH100_PRI_BASE_MASK, first, instance))
        first, rows = -1, []
    if first >= 0:
        raise DeviceInfoError(
            f"row {first}: the chain starting here runs past the last row (NUM_ROWS {num_rows})"
        )
    # Rows past NUM_ROWS are outside the table the driver walks: a device hidden there would be
    # missed here and protected by nothing, so they must be empty, up to the array the chip's
    # header documents (GH100: 134 rows; past it lie other registers, not the table).
    for i in range(num_rows, spec.empty_rows_end):
        word = rd(spec.base + 4 * i, f"row {i}")
        if word != 0:
            raise DeviceInfoError(
                f"row {i}: {word:#010x} lies past NUM_ROWS ({num_rows}); rows there must be empty"
            )
    return out


# --- checking --------------------------------------------------------------------------------


def _place(
    spec: DeviceInfoSpec,
    bar_size: int,
    label: str,
    type_enum: int,
    base: int,
    index: int,
    instance: int,
) -> Unit:
    size = spec.unit_size if type_enum == spec.ioctrl_type else MIN_UNIT_SIZE
    if base >= bar_size:
        raise DeviceInfoError(
            f"{label} {index}: type {type_enum} base {base:#x} lies outside the BAR "
            f"(size {bar_size:#x})"
        )
    if base + size > bar_size:
        raise DeviceInfoError(
            f"{label} {index}: type {type_enum} unit [{base:#x}, {base + size:#x}) extends past "
            f"the end of the BAR (size {bar_size:#x})"
        )
    return Unit(type_enum, base, size, index, instance)


def _check_overlap(label: str, units: list[Unit]) -> None:
    # Only units of one protected type are checked against each other: other devices may share
    # a base by design (dev_top.ref.txt: LCEs "share a PRI_BASE across all devices").
    ordered = sorted(units, key=lambda u: (u.base, u.index))
    for a, b in pairwise(ordered):
        if b.base < a.end:
            lo, hi = sorted((a, b), key=lambda u: u.index)
            raise DeviceInfoError(
                f"{label} {lo.index} and {label} {hi.index}: type {a.type_enum} units "
                f"[{lo.base:#x}, {lo.end:#x}) and [{hi.base:#x}, {hi.end:#x}) overlap"
            )
