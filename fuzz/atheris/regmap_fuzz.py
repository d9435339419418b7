#!/usr/bin/env python3
"""Register maps: `devices.regmap.parse_map(text, "<fuzz>")` and the accessors of what it returns.

Documented failure: MapError ("every error names the file, the entry and the field"), for any
text. A map that loads must answer its own questions: every region it lists is found by name,
lies inside a declared BAR, and every category selects without error.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fuzzlib import fuzz, instrumented

with instrumented(__name__ == "__main__"):
    from mmiofilter.devices.regmap import CATEGORIES, MapError, parse_map


def check(data: bytes) -> None:
    try:
        m = parse_map(data.decode("utf-8", "replace"), "<fuzz>")
    except MapError:
        return
    sizes = {b.index: b.size for b in m.bars}
    for r in m.regions:
        assert m.find(r.name) is not None
        assert r.bar in sizes and r.end <= sizes[r.bar], f"{r.name} outside its BAR"
        for f in r.fields:
            assert r.field(f.name).mask >> (8 * r.size) == 0, f"{r.name}.{f.name} too wide"
        for name, _ in r.values:
            r.value(name)
    for c in CATEGORIES:
        m.regions_in(c)
    for b in m.bars:
        m.bar(b.index)
    for d in m.devices:
        assert m.matches(d.vendor, d.device)
    m.unconfirmed()
    if m.device_info is not None:
        m.device_info.table_end  # noqa: B018 - a property that must compute for a loaded spec


if __name__ == "__main__":
    fuzz(check)
