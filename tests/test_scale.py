"""Memory that grows with rules, never with the BAR: a 64 GiB BAR is as cheap as a 64 KiB one."""

from __future__ import annotations

import mmiofilter as mf
from mmiofilter import Outcome, Rule

GIB = 1 << 30


def null_backend() -> mf.CallbackBackend:
    return mf.CallbackBackend(lambda o, w: 0, lambda o, w, v: None)


def test_64gib_bar_with_1000_rules_compiles_small() -> None:
    size = 64 * GIB
    rules = [
        Rule(f"r{i}", i * (size // 1000) + 0x10 * (i % 7), 4 + 4 * (i % 3), "deny")
        for i in range(1000)
    ]
    f = mf.BarFilter(size, mf.Policy(rules), null_backend(), page_size=4096)
    assert f.table_footprint() < 256 * 1024  # "well under 1 MiB"
    assert f.layout.trapped_count == 1000
    assert len(f.layout.direct) == 1000  # one area before each trapped page but the first
    assert f.read(size - 8, 8) == 0
    assert f.read(999 * (size // 1000) + 0x10 * (999 % 7), 4) == 0xFFFFFFFF


def test_64gib_bar_wholly_denied_is_one_run() -> None:
    size = 64 * GIB
    f = mf.BarFilter(
        size, mf.Policy([Rule("all", 0, size, "deny")]), null_backend(), page_size=65536
    )
    assert f.table_footprint() < 4096
    assert f.layout.direct == [] and f.layout.trapped_count == size // 65536
    assert f.layout.collateral == 0
    assert f.write(size - 4, 4, 1) is Outcome.BLOCKED


def test_footprint_does_not_depend_on_bar_size() -> None:
    rules = [Rule(f"r{i}", 0x1000 * i + 0x40, 4, "readonly") for i in range(100)]
    sizes = [1 << 20, 1 << 30, 1 << 40]
    feet = [
        mf.BarFilter(s, mf.Policy(rules), null_backend(), page_size=4096).table_footprint()
        for s in sizes
    ]
    assert len(set(feet)) == 1, feet
