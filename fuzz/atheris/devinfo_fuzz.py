#!/usr/bin/env python3
"""Device-info walkers: `devices.devinfo.read_units(read32, spec, bar_size)` on hostile tables.

Input: byte 0 picks the spec (bit 0: the shipped gv100 or gh100 map's), the word unlisted
offsets read (bit 1: 0 or all ones) and the BAR size (bits 2-3: the map's, the table's end,
one word short of it, 1 MiB); the rest are little-endian words: for gh100 the CFG word first,
then the table's rows in order. Documented failure: DeviceInfoError ("a table is device memory,
and device memory is not trusted"). Units that are returned must lie inside the BAR, and units
of the protected (IOCTRL) type must not overlap.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fuzzlib import fuzz, instrumented

with instrumented(__name__ == "__main__"):
    from mmiofilter.devices.devinfo import DeviceInfoError, find_units, read_units
    from mmiofilter.devices.devinfo_encode import words_reader
    from mmiofilter.devices.regmap import DeviceInfoSpec, load_map


def _spec(family: str) -> tuple[DeviceInfoSpec, int]:
    m = load_map(family)
    assert m.device_info is not None
    return m.device_info, m.bar(0).size


SPECS = (_spec("gv100"), _spec("gh100"))


def check(data: bytes) -> None:
    if not data:
        return
    mode, body = data[0], data[1:]
    spec, map_bar = SPECS[mode & 1]
    default = 0xFFFFFFFF if mode & 2 else 0
    bar_size = (map_bar, spec.table_end, spec.table_end - 4, 1 << 20)[(mode >> 2) & 3]
    words = [int.from_bytes(body[i : i + 4], "little") for i in range(0, len(body) - 3, 4)]
    table: dict[int, int] = {}
    if spec.format == "gh100" and words:
        assert spec.config is not None
        table[spec.config] = words.pop(0)
    table.update({spec.base + 4 * i: w for i, w in enumerate(words[: spec.entries])})
    read32 = words_reader(table, default)
    try:
        units = read_units(read32, spec, bar_size)
    except DeviceInfoError:
        return
    for u in units:
        assert 0 <= u.base and u.end <= bar_size, f"unit {u} outside a BAR of {bar_size:#x}"
    ioctrl = sorted((u for u in units if u.type_enum == spec.ioctrl_type), key=lambda u: u.base)
    for a, b in itertools.pairwise(ioctrl):
        assert a.end <= b.base, f"IOCTRL units {a} and {b} overlap"
    assert find_units(read32, spec, bar_size, spec.ioctrl_type) == [
        u for u in units if u.type_enum == spec.ioctrl_type
    ]


if __name__ == "__main__":
    fuzz(check)
