#!/usr/bin/env python3
"""PCI config-space dumps: `devices.pciconfig.parse_config(data)`, `.capabilities`, `.msix`.

Input: byte 0 picks how the rest becomes a dump (0: as is, any length; 1, 2, 3: padded with
zeros or cut to 64, 256 or 4096 bytes, since only those lengths get past the length check).
Documented failure: ConfigError ("never a hang, never a silently short list"). What parses must
be consistent: MSI-X structures fit their BIR's BAR slot, `msix_regions` agrees with `msix`.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fuzzlib import fuzz, instrumented

with instrumented(__name__ == "__main__"):
    from mmiofilter.devices.pciconfig import (
        ConfigError,
        msix_regions,
        parse_config,
        parse_resource,
    )

SIZES = (64, 256, 4096)


def check(data: bytes) -> None:
    if not data:
        return
    mode, body = data[0] & 3, data[1:]
    if mode == 0:
        try:
            parse_resource(body.decode("utf-8", "replace"))
        except ConfigError:
            pass
    else:
        n = SIZES[mode - 1]
        body = body[:n].ljust(n, b"\0")
    try:
        cfg = parse_config(body)
    except ConfigError:
        return
    for i in range(6):
        cfg.bar(i)
    try:
        caps = cfg.capabilities
        msix = cfg.msix
    except ConfigError:
        assert cfg.header_only, "only a 64-byte dump may refuse to list its capabilities"
        return
    for c in caps:
        assert c.name
    if msix is None:
        return
    assert any(c.id == 0x11 and c.offset == msix.cap_offset for c in caps)
    found = []
    for bar in range(6):
        try:
            found += msix_regions(msix, bar, bar_size=1 << 20)
        except ConfigError:
            found += msix_regions(msix, bar)
    assert sorted(n for n, _, _ in found) == ["msix-pba", "msix-table"], found


if __name__ == "__main__":
    fuzz(check)
