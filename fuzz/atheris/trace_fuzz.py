#!/usr/bin/env python3
"""Trace files: `replay.detect_format`, `parse_mmiotrace`, `parse_qemu_vfio`, and `replay()`.

The parsers are documented never to raise on their input (replay/items.py: every line is an
access, skipped, a note, a BAR size, malformed, or nothing). `replay()` may raise ValueError
when the trace gives no BAR size, and PolicyError (a ValueError) when the size it gives is one
no filter takes; an AccessError means the replay fed the filter an access it should have
skipped, so it is a finding. Every access item must be one the filter can take.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fuzzlib import fuzz, instrumented

with instrumented(__name__ == "__main__"):
    import mmiofilter as mf
    from mmiofilter.replay import (
        TraceAccess,
        TraceItem,
        detect_format,
        parse_mmiotrace,
        parse_qemu_vfio,
        replay,
    )

# One rule of each action, on the registers the seed traces touch (0x0..0x3fff).
POLICY = mf.Policy(
    [
        mf.Rule("boot-id", 0x0, 4, "emulate", value=0x140000A1),
        mf.Rule("pmc-enable", 0x200, 4, "mask", mask=0x02000000, value=0x02000000),
        mf.Rule("flash", 0x1000, 0x100, "deny"),
        mf.Rule("isolation", 0x2000, 4, "readonly"),
        mf.Rule("doorbell", 0x3100, 4, "audit"),
    ],
    partial="split",
)
PARSERS: dict[str, Callable[[Iterable[str]], Iterator[TraceItem]]] = {
    "mmiotrace": parse_mmiotrace,
    "qemu": parse_qemu_vfio,
}


def check(data: bytes) -> None:
    # As read_lines does: split at '\n' only, undecodable bytes become U+FFFD.
    lines = [ln.removesuffix("\r") for ln in data.decode("utf-8", "replace").split("\n")]
    fmt = detect_format(lines)
    for name, parse in PARSERS.items():
        for it in parse(lines):
            assert 1 <= it.line <= len(lines) or it.line == 0, it
            if isinstance(it, TraceAccess):
                assert it.width in (1, 2, 4, 8) and 0 <= it.value < 1 << (8 * it.width), it
        if fmt is None or name != fmt:
            continue
        try:
            replay(parse(lines), POLICY, page_size=4096, listed=5)
        except mf.AccessError:
            raise
        except ValueError:
            pass


if __name__ == "__main__":
    fuzz(check)
