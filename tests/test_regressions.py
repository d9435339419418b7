"""Regressions from real bugs in peer VMMs: each test names the bug it guards against."""

from __future__ import annotations

import mmiofilter as mf
from mmiofilter import Outcome, Rule

from .conftest import MakeFilter, touched_bytes

K4, K16, K64 = 0x1000, 0x4000, 0x10000


def test_bar_not_multiple_of_page_traps_partial_page(make_filter: MakeFilter) -> None:
    """crosvm e2d00176e: a BAR whose size is not a multiple of the page size; mapping the
    partial last page would map past the BAR's end. It must be trapped, never direct."""
    f, _ = make_filter(3 * K4 + 0x800, [])
    assert f.layout.direct == [(0, 3 * K4)]
    assert f.layout.trapped_pages == [3]
    assert f.layout.collateral == 0x800
    # a BAR smaller than a page is wholly trapped
    g, _ = make_filter(0x800, [])
    assert g.layout.direct == []
    assert g.layout.trapped_pages == [0]


def test_16k_bar_on_64k_pages_with_two_rules(make_filter: MakeFilter) -> None:
    """cloud-hypervisor PR 7939: a 16 KiB BAR on a 64 KiB-page host with rules at 0x2000 and
    0x3000. The single (partial) page is trapped; both rules and the rest are byte-exact."""
    rules = [Rule("a", 0x2000, 4, "deny"), Rule("b", 0x3000, 4, "readonly")]
    f, dev = make_filter(K16, rules, page_size=K64)
    assert f.layout.direct == []
    assert f.layout.trapped_pages == [0]
    assert f.layout.collateral == K16 - 8
    assert f.read(0x2000, 4) == 0xFFFFFFFF
    assert f.write(0x3000, 4, 0x1234) is Outcome.BLOCKED
    assert f.write(0x3004, 4, 0x1234) is Outcome.PASS
    assert dev.log == [(0x3004, 4, True, 0x1234)]


def test_two_rules_in_one_page_trap_only_that_page(make_filter: MakeFilter) -> None:
    """crosvm 6087a7907 lost every mmap of the BAR when two rules shared a page."""
    rules = [Rule("a", 0x5010, 4, "deny"), Rule("b", 0x5F00, 8, "mask", mask=1)]
    f, _ = make_filter(16 * K4, rules)
    assert f.layout.trapped_pages == [5]
    assert f.layout.direct == [(0, 5 * K4), (6 * K4, 10 * K4)]


def test_bar_wholly_covered_gives_no_zero_length_area(make_filter: MakeFilter) -> None:
    """QEMU 24acf72b: a 4 KiB BAR wholly covered by a rule on 4 KiB pages produced a
    zero-length sparse mmap area."""
    f, _ = make_filter(K4, [Rule("all", 0, K4, "deny")])
    assert f.layout.direct == []
    assert f.layout.collateral == 0
    # the sparse-mmap capability then says "no areas", with no zero-length entry
    assert f.layout.sparse_mmap == bytes.fromhex("0100 0100 00000000 00000000 00000000")


def test_access_starting_before_a_denied_range_is_byte_exact(make_filter: MakeFilter) -> None:
    """crosvm checks only an access's start offset: an 8-byte access starting 4 bytes before a
    denied range reached the device whole. Here the denied half never reaches it."""
    rules = [Rule("secret", 0x104, 4, "deny")]
    f, dev = make_filter(K4, rules, initial=bytes(range(256)) * 16)
    assert f.read(0x100, 8) == 0xFFFF_FFFF_FFFF_FFFF  # partial = deny: fill everywhere
    assert f.write(0x100, 8, 0x1122334455667788) is Outcome.BLOCKED
    assert dev.log == []
    g, gdev = make_filter(K4, rules, initial=bytes(range(256)) * 16, partial="split")
    assert g.read(0x100, 8) == 0xFFFF_FFFF_0302_0100
    assert g.write(0x100, 8, 0x1122334455667788) is Outcome.PARTIAL
    assert gdev.log == [(0x100, 4, False, 0x03020100), (0x100, 4, True, 0x55667788)]
    assert not touched_bytes(gdev.log, writes=False) & {0x104, 0x105, 0x106, 0x107}
    assert not touched_bytes(gdev.log, writes=True) & {0x104, 0x105, 0x106, 0x107}


def test_offset_plus_width_wrapping_is_an_access_error(make_filter: MakeFilter) -> None:
    """libvfio-user issue 624 (found by AFL++): offset + count wrapped past 2^64 and passed the
    bounds check. Rejected in Python and, independently, in the C core."""
    f, dev = make_filter(2**36, [])
    for offset in (2**64 - 4, 2**64 - 1, 2**64 - 8):
        try:
            f.read(offset, 8)
        except mf.AccessError as e:
            assert "outside the BAR" in str(e)
        else:
            raise AssertionError(f"read at {offset:#x} was accepted")
    # the C core alone, bypassing Python's checks
    from mmiofilter._core import ffi, lib

    acc = ffi.new("struct mf_access *", {"offset": 2**64 - 4, "width": 8, "is_write": 1})
    res = ffi.new("struct mf_result *")
    assert lib.mf_access(f._f, acc, res) == lib.MF_ERANGE
    assert dev.log == [] and f.drain_events() == []


def test_rule_crossing_a_page_boundary_traps_both_pages(make_filter: MakeFilter) -> None:
    """kata and cloud-hypervisor computed the hole for a rule from its start page only: a
    rule at 0x1F00 of size 0x200 spans pages 1 and 2, and both must be trapped."""
    f, dev = make_filter(8 * K4, [Rule("x", 0x1F00, 0x200, "deny")])
    assert f.layout.trapped_pages == [1, 2]
    assert f.layout.direct == [(0, K4), (3 * K4, 5 * K4)]
    assert f.read(0x2000, 4) == 0xFFFFFFFF
    assert f.read(0x20FC, 4) == 0xFFFFFFFF
    assert f.read(0x2100, 4) == 0  # first byte past the rule passes
    assert dev.log == [(0x2100, 4, False, 0)]
