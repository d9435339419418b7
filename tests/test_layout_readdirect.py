"""Read-direct pages in the layout (docs/contract-details.md item 15), worked out by hand: which
pages are read-direct, their maximal areas, the read and write collateral; and the driver
workload's exits replayed against the V100 layouts. The differential test compares the same
areas with the reference model on random policies (tests/test_differential.py)."""

from __future__ import annotations

import pytest

import mmiofilter as mf
from mmiofilter import Rule
from mmiofilter.bench import driver_workload as dw
from mmiofilter.bench.readdirect import V100_BAR0, v100_policy

P = 4096


def layout(rules: list[Rule], size: int = 8 * P, page: int = P) -> mf.Layout:
    be = mf.CallbackBackend(lambda o, w: 0, lambda o, w, v: None)
    return mf.BarFilter(size, mf.Policy(rules), be, page_size=page).layout


def test_readonly_and_mask_pages_are_read_direct() -> None:
    lay = layout([Rule("ro", 0x1010, 4, "readonly"), Rule("m", 0x2000, 4, "mask", mask=1)])
    assert lay.read_direct == [(P, 2 * P)]  # adjacent read-direct pages: one maximal area
    assert lay.direct == [(0, P), (3 * P, 5 * P)]
    assert (lay.trapped_count, lay.read_direct_count, lay.fully_trapped_count) == (2, 2, 0)
    assert lay.collateral_write_bytes == lay.collateral == 2 * P - 8
    assert lay.collateral_read_bytes == 0
    assert [lay.page_class(o) for o in (0, P, 2 * P, 3 * P)] == [
        "direct", "read-direct", "read-direct", "direct"]  # fmt: skip


@pytest.mark.parametrize("action", ["deny", "emulate", "audit"])
def test_a_byte_whose_read_needs_the_filter_traps_the_page(action: str) -> None:
    lay = layout([Rule("ro", 0x1000, 8, "readonly"), Rule("x", 0x1FFC, 4, action)])
    assert lay.read_direct == [] and lay.fully_trapped_pages == [1]
    assert lay.collateral_read_bytes == P - 4  # the readonly bytes' reads exit too
    assert lay.collateral_write_bytes == P - 12


def test_a_readonly_run_across_pages_is_read_direct_where_nothing_else_traps() -> None:
    # readonly over pages 1-3, a deny on page 3: pages 1 and 2 read-direct, 3 trapped
    lay = layout([Rule("ro", P, 3 * P, "readonly"), Rule("d", 3 * P + 8, 4, "deny", priority=1)])
    assert lay.read_direct == [(P, 2 * P)]
    assert lay.fully_trapped_pages == [3]
    assert lay.collateral_read_bytes == P - 4
    assert lay.collateral_write_bytes == 0


def test_a_partial_last_page_is_trapped_even_if_only_readonly() -> None:
    lay = layout([Rule("ro", 0, 2 * P + 100, "readonly")], size=2 * P + 100)
    assert lay.read_direct == [(0, 2 * P)]
    assert lay.fully_trapped_pages == [2]
    assert lay.collateral_read_bytes == 100


def test_read_direct_areas_of_a_64_gib_bar_come_from_rules_not_pages() -> None:
    size = 64 << 30
    lay = layout([Rule("ro", 0, size // 2, "readonly"), Rule("m", size - 4, 4, "mask", mask=1)],
                 size=size, page=65536)  # fmt: skip
    assert lay.read_direct == [(0, size // 2), (size - 65536, 65536)]
    assert lay.direct == [(size // 2, size // 2 - 65536)]


def test_sparse_mmap_still_lists_the_direct_areas_only() -> None:
    lay = layout([Rule("ro", 0x1010, 4, "readonly")])
    raw = lay.sparse_mmap
    assert int.from_bytes(raw[8:12], "little") == len(lay.direct) == 2


def test_driver_workload_exits_under_the_v100_profile() -> None:
    """The replay: read-direct pages save every read of NV_PMC_INTR and the timer (at 64 KiB);
    what remains above the floor is the interrupt-enable writes (and, at 64 KiB, the FIFO
    interrupt acknowledge) that share a page with NV_PMC_ENABLE."""
    r = dw.replay(v100_policy(), V100_BAR0)
    for page in ("4096", "65536"):
        d = r[page]
        assert d["page_trap"] > d["read_direct"] > d["byte_minimum"] > 0
    # only the writes of NV_PMC_ENABLE need the filter (two engine resets, a disable and an
    # enable each); the privring command register is the driver's to write (ring-interrupt ack)
    assert r["4096"]["byte_minimum"] == r["65536"]["byte_minimum"] == 2 * 2
    gap = r["gap_read_direct_over_byte_minimum"]
    assert all(k.endswith("write") for g in gap.values() for k in g)
    assert "NV_PFIFO_INTR_0 write" in gap["65536"] and "NV_PFIFO_INTR_0 write" not in gap["4096"]
