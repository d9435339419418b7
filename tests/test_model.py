"""The reference model against examples computed by hand from docs/contract.md and
docs/contract-details.md, and properties of the model alone.

The model is the oracle for the C core, so these tests pin it to the contract text: every
expected value below is worked out from the contract, not from running the model.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmiofilter.errors import AccessError, PolicyError
from mmiofilter.results import Event, Outcome, Result
from mmiofilter.rules import ACTIONS, Policy, Rule
from mmiofilter.testing import (
    UNALIGNED_RULE,
    ModelDevice,
    ModelFilter,
    accesses,
    bar_sizes,
    chunks,
    invalid_accesses,
    owner,
    page_sizes,
    policies,
)

P = 4096
FF4 = 0xFFFFFFFF
# contract-details 1, restated here so the properties do not reuse the model's own tables.
READ_PASSES = {"allow", "audit", "readonly", "mask"}
WRITE_PASSES = {"allow", "audit", "mask"}


#: Where the rules `rule()` makes redirect their first byte in the "config" target.
TARGET_AT = 0x200


def rule(name: str, start: int, size: int, action: str, **kw: int) -> Rule:
    """A rule of any action; a redirect rule goes to the "config" target at TARGET_AT."""
    if action == "redirect":
        return Rule(name, start, size, action, target="config", target_offset=TARGET_AT, **kw)
    return Rule(name, start, size, action, **kw)


def make(
    rules: list[Rule],
    *,
    size: int = P,
    partial: str = "deny",
    unaligned: str = "allow",
    fill: int = 0xFF,
    bar: int = 0,
    page_size: int = P,
    ring_capacity: int = 1024,
) -> ModelFilter:
    """A filter over a device whose byte at offset o is o & 0xFF (first 4 KiB), with a
    "config" target whose byte at offset o is 0xFF - (o & 0xFF) (first 4 KiB)."""
    policy = Policy(rules, fill=fill, partial=partial, unaligned=unaligned)
    device = ModelDevice(bytes(range(256)) * 16)
    config = ModelDevice(bytes(range(255, -1, -1)) * 16)
    return ModelFilter(
        size,
        policy,
        device,
        bar=bar,
        page_size=page_size,
        ring_capacity=ring_capacity,
        targets={"config": config},
    )


def log(f: ModelFilter) -> list[tuple[int, int, bool, int]]:
    assert isinstance(f.device, ModelDevice)
    return f.device.log


def target_log(f: ModelFilter) -> list[tuple[int, int, bool, int]]:
    config = f.targets["config"]
    assert isinstance(config, ModelDevice)
    return config.log


# -- contract §2: each action, read and write -------------------------------------------------

# Rule "r" over [0x10, 0x14), value 0xAABBCCDD, mask 0xF0 (the high nibble of byte 0x10).
READS = {
    "allow": (Outcome.PASS, 0x13121110, True, False),
    "audit": (Outcome.PASS, 0x13121110, True, True),
    "readonly": (Outcome.PASS, 0x13121110, True, False),
    "mask": (Outcome.PASS, 0x13121110, True, False),
    "emulate": (Outcome.EMULATED, 0xAABBCCDD, False, True),
    "deny": (Outcome.BLOCKED, FF4, False, True),
    # the target's bytes at 0x200..0x203: 0xFF, 0xFE, 0xFD, 0xFC; counted, not an event
    "redirect": (Outcome.REDIRECTED, 0xFCFDFEFF, False, False),
}
# Writing 0x01020304: mask forces the high nibble of byte 0 to 0xD (from 0xDD): 0x04 -> 0xD4.
WRITES = {
    "allow": (Outcome.PASS, 0x01020304, True, False),
    "audit": (Outcome.PASS, 0x01020304, True, True),
    "readonly": (Outcome.BLOCKED, 0, False, True),
    "mask": (Outcome.MASKED, 0x010203D4, True, True),
    "emulate": (Outcome.BLOCKED, 0, False, True),
    "deny": (Outcome.BLOCKED, 0, False, True),
    "redirect": (Outcome.REDIRECTED, 0x01020304, False, False),
}


@pytest.mark.parametrize("action", ACTIONS)
def test_read_of_each_action(action: str) -> None:
    outcome, value, touches, evented = READS[action]
    f = make([rule("r", 0x10, 4, action, value=0xAABBCCDD, mask=0xF0)])
    result = f.access(0x10, 4, False)
    assert (result.outcome, result.value) == (outcome, value)
    assert log(f) == ([(0x10, 4, False, 0x13121110)] if touches else [])
    expected = [Event(0, 0, 0x10, 4, False, value, outcome, "r")] if evented else []
    assert f.drain_events() == expected


@pytest.mark.parametrize("action", ACTIONS)
def test_write_of_each_action(action: str) -> None:
    outcome, value, touches, evented = WRITES[action]
    f = make([rule("r", 0x10, 4, action, value=0xAABBCCDD, mask=0xF0)])
    result = f.access(0x10, 4, True, 0x01020304)
    assert (result.outcome, result.value) == (outcome, value)
    assert log(f) == ([(0x10, 4, True, value)] if touches else [])
    # The event carries the value the guest wrote, before masks.
    expected = [Event(0, 0, 0x10, 4, True, 0x01020304, outcome, "r")] if evented else []
    assert f.drain_events() == expected


def test_deny_returns_the_policy_fill() -> None:
    f = make([Rule("d", 0, 4, "deny")], fill=0x00)
    assert f.read(0, 4) == 0
    f = make([Rule("d", 0, 4, "deny")], fill=0xA5)
    assert f.read(0, 2) == 0xA5A5


def test_emulate_lays_its_value_little_endian_over_the_rule() -> None:
    f = make([Rule("e", 0x100, 4, "emulate", value=0x11223344)])
    assert f.read(0x100, 4) == 0x11223344
    assert f.read(0x102, 2) == 0x1122
    assert f.read(0x101, 1) == 0x33
    assert f.read(0x101, 2) == 0x2233
    assert log(f) == []


def test_no_passing_byte_mixing_emulate_and_deny_is_blocked_with_both_bytes() -> None:
    # Not a mixed access (no byte passes): each byte is its emulated byte or the fill.
    f = make([Rule("e", 0x20, 1, "emulate", value=0x5A), Rule("d", 0x21, 1, "deny")])
    result = f.access(0x20, 2, False)
    assert (result.outcome, result.value) == (Outcome.BLOCKED, 0xFF5A)
    assert f.drain_events()[0].rule == "e"


# -- contract §2: which rule owns a byte ---------------------------------------------------


def test_owner_of_uncovered_byte_is_none_and_end_is_exclusive() -> None:
    r = Rule("r", 8, 4, "deny")
    assert owner([r], 7) is None
    assert owner([r], 8) is r
    assert owner([r], 11) is r
    assert owner([r], 12) is None
    assert owner([], 0) is None


def test_higher_priority_wins_over_restrictiveness_and_order() -> None:
    deny = Rule("deny", 0, 8, "deny")
    allow = Rule("allow", 0, 8, "allow", priority=1)
    assert owner([allow, deny], 0) is allow
    assert owner([deny, allow], 0) is allow
    f = make([allow, deny])
    assert f.access(0, 4, False).outcome is Outcome.PASS


def test_negative_priority_still_owns_bytes_no_other_rule_covers() -> None:
    f = make([Rule("d", 0, 4, "deny", priority=-1)])
    assert f.access(0, 4, False).outcome is Outcome.BLOCKED


def test_emulated_register_inside_a_denied_block() -> None:
    # contract §2's intended exception: emulate one status register at a higher priority.
    f = make(
        [
            Rule("block", 0x100, 0x100, "deny"),
            Rule("status", 0x180, 4, "emulate", value=0x600D, priority=1),
        ]
    )
    assert f.read(0x180, 4) == 0x600D
    assert f.read(0x184, 4) == FF4


@pytest.mark.parametrize(("weaker", "stronger"), list(itertools.combinations(ACTIONS, 2)))
def test_tie_goes_to_the_more_restrictive_action(weaker: str, stronger: str) -> None:
    a = rule("a", 0, 4, weaker)
    b = rule("b", 2, 4, stronger)
    assert owner([a, b], 2) is b
    assert owner([b, a], 2) is b
    assert owner([b, a], 0) is a


def test_full_tie_goes_to_the_rule_listed_last() -> None:
    first = Rule("first", 0, 4, "emulate", value=0x11111111)
    last = Rule("last", 0, 4, "emulate", value=0x22222222)
    assert make([first, last]).read(0, 4) == 0x22222222
    assert make([last, first]).read(0, 4) == 0x11111111
    f = make([Rule("d1", 0, 4, "deny"), Rule("d2", 2, 4, "deny")])
    f.read(2, 2)
    assert [e.rule for e in f.drain_events()] == ["d2"]


# -- contract §3 step 5 and contract-details 3: partial accesses ----------------------------


def test_chunks_are_naturally_aligned_at_absolute_offsets() -> None:
    assert chunks(0, 3) == [(0, 2), (2, 1)]
    assert chunks(4, 8) == [(4, 4)]
    assert chunks(1, 6) == [(1, 1), (2, 2), (4, 2)]
    assert chunks(1, 16) == [(1, 1), (2, 2), (4, 4), (8, 8)]
    assert chunks(0x1003, 0x1010) == [(0x1003, 1), (0x1004, 4), (0x1008, 8)]
    assert chunks(5, 5) == []


def test_mixed_read_with_partial_deny_touches_nothing() -> None:
    f = make([Rule("d", 3, 1, "deny")])
    result = f.access(0, 8, False)
    assert (result.outcome, result.value) == (Outcome.BLOCKED, 0xFF_FF_FF_FF_FF_FF_FF_FF)
    assert log(f) == []
    assert f.drain_events()[0].rule == "d"


def test_mixed_read_with_partial_deny_fills_emulated_bytes_too() -> None:
    f = make([Rule("e", 0, 2, "emulate", value=0x1234)])
    assert f.access(0, 4, False).value == FF4


def test_mixed_read_split_around_one_denied_byte() -> None:
    f = make([Rule("d", 3, 1, "deny")], partial="split")
    result = f.access(0, 8, False)
    # Bytes 0 1 2 | ff | 4 5 6 7: the run [0, 3) is 2 + 1 bytes, [4, 8) one 4-byte read.
    assert (result.outcome, result.value) == (Outcome.PARTIAL, 0x07060504_FF020100)
    assert log(f) == [(0, 2, False, 0x0100), (2, 1, False, 0x02), (4, 4, False, 0x07060504)]
    assert f.drain_events() == [Event(0, 0, 0, 8, False, result.value, Outcome.PARTIAL, "d")]


def test_unaligned_8_byte_read_split_before_a_deny() -> None:
    # An 8-byte read at offset 4 with a deny from 8: only [4, 8) passes, one 4-byte chunk.
    f = make([Rule("d", 8, 8, "deny")], partial="split")
    result = f.access(4, 8, False)
    assert (result.outcome, result.value) == (Outcome.PARTIAL, 0xFFFFFFFF_07060504)
    assert log(f) == [(4, 4, False, 0x07060504)]


def test_unaligned_read_split_around_an_emulated_byte() -> None:
    f = make([Rule("e", 6, 1, "emulate", value=0xEE)], partial="split")
    result = f.access(1, 8, False)
    # Runs [1, 6) -> 1, 2, 2 bytes; [7, 9) -> 1, 1 (7 is odd, 8 + 2 would pass the run's end).
    assert log(f) == [
        (1, 1, False, 0x01),
        (2, 2, False, 0x0302),
        (4, 2, False, 0x0504),
        (7, 1, False, 0x07),
        (8, 1, False, 0x08),
    ]
    assert (result.outcome, result.value) == (Outcome.PARTIAL, 0x0807EE05_04030201)


def test_mixed_write_split_skips_blocked_bytes_and_applies_masks() -> None:
    rules = [
        Rule("ro", 2, 1, "readonly"),
        Rule("m", 4, 2, "mask", mask=0xFF00, value=0xAB00),  # forces byte 5 to 0xAB
    ]
    f = make(rules, partial="split")
    result = f.access(0, 8, True, 0x88776655_44332211)
    assert log(f) == [(0, 2, True, 0x2211), (3, 1, True, 0x44), (4, 4, True, 0x8877AB55)]
    # Result.value: what reached the device, 0 in the byte that was not written.
    assert (result.outcome, result.value) == (Outcome.PARTIAL, 0x8877AB55_44002211)
    assert f.drain_events() == [Event(0, 0, 0, 8, True, 0x88776655_44332211, Outcome.PARTIAL, "ro")]
    assert f.device.read(0, 8) == 0x8877AB55_44022211  # byte 2 kept its old value


def test_mixed_write_with_partial_deny_is_dropped() -> None:
    f = make([Rule("ro", 2, 1, "readonly")])
    result = f.access(0, 8, True, 0x88776655_44332211)
    assert (result.outcome, result.value) == (Outcome.BLOCKED, 0)
    assert log(f) == []


# -- contract §3 step 2 and contract-details 5: unaligned accesses --------------------------


def test_unaligned_deny_blocks_before_ownership() -> None:
    f = make([Rule("a", 0, 16, "allow", priority=5)], unaligned="deny")
    assert f.access(2, 4, False).value == FF4
    assert f.access(1, 2, True, 0xBEEF).outcome is Outcome.BLOCKED
    assert log(f) == []
    assert f.drain_events() == [
        Event(0, 0, 2, 4, False, FF4, Outcome.BLOCKED, UNALIGNED_RULE),
        Event(1, 0, 1, 2, True, 0xBEEF, Outcome.BLOCKED, UNALIGNED_RULE),
    ]
    # Aligned accesses, and every 1-byte access, are not affected.
    assert f.access(4, 4, False).outcome is Outcome.PASS
    assert f.access(3, 1, False).outcome is Outcome.PASS


def test_unaligned_allow_passing_access_is_one_device_access() -> None:
    f = make([], unaligned="allow")
    assert f.read(2, 4) == 0x05040302
    assert log(f) == [(2, 4, False, 0x05040302)]


# -- contract §2 mask and contract-details 4: MASKED vs PASS --------------------------------


def test_mask_keeps_a_bit_set_like_nv_pmc_enable() -> None:
    # NV_PMC_ENABLE (BAR0+0x200) bit 25, NVLINK, stays set (open-gpu-doc gv100 dev_master.ref.txt)
    f = make([Rule("pmc", 0x200, 4, "mask", mask=0x02000000, value=0x02000000)])
    result = f.access(0x200, 4, True, 0x00000001)
    assert (result.outcome, result.value) == (Outcome.MASKED, 0x02000001)
    assert f.write(0x200, 4, 0x02000001) is Outcome.PASS
    assert log(f) == [(0x200, 4, True, 0x02000001), (0x200, 4, True, 0x02000001)]
    assert f.drain_events() == [Event(0, 0, 0x200, 4, True, 0x1, Outcome.MASKED, "pmc")]


def test_masked_event_names_the_first_byte_a_mask_changed() -> None:
    f = make(
        [
            Rule("zero", 0x40, 2, "mask", mask=0xFFFF, value=0x0000),
            Rule("set", 0x42, 2, "mask", mask=0xFFFF, value=0x1234),
        ]
    )
    # Writing 0 leaves "zero"'s bytes unchanged; "set" changes bytes 0x42 and 0x43.
    assert f.write(0x40, 4, 0) is Outcome.MASKED
    assert [e.rule for e in f.drain_events()] == ["set"]


# -- contract-details 6: which rule an event names -----------------------------------------


def test_event_names_lowest_non_passing_byte_which_differs_for_read_and_write() -> None:
    f = make([Rule("ro", 0x50, 1, "readonly"), Rule("d", 0x53, 1, "deny")])
    f.access(0x50, 4, False)
    f.access(0x50, 4, True, 0)
    # A read passes the readonly byte, so the deny is the first that does not pass.
    assert [e.rule for e in f.drain_events()] == ["d", "ro"]


def test_audited_pass_names_lowest_audit_byte() -> None:
    f = make([Rule("a1", 0x32, 2, "audit"), Rule("a2", 0x30, 2, "audit")])
    assert f.access(0x30, 4, False).outcome is Outcome.PASS
    assert f.drain_events() == [Event(0, 0, 0x30, 4, False, 0x33323130, Outcome.PASS, "a2")]


def test_events_carry_the_filters_bar() -> None:
    f = make([Rule("d", 0, 4, "deny", bar=3)], bar=3)
    f.read(0, 4)
    assert f.drain_events()[0].bar == 3


# -- contract-details 7: the event ring ---------------------------------------------------


def test_ring_drops_oldest_and_counts_drops() -> None:
    f = make([Rule("d", 0, 4, "deny")], ring_capacity=3)
    for _ in range(5):
        f.read(0, 4)
    assert f.dropped_events == 2
    assert [e.seq for e in f.drain_events()] == [2, 3, 4]
    assert f.drain_events() == []
    f.read(0, 4)
    assert [e.seq for e in f.drain_events()] == [5]
    assert f.dropped_events == 2


def test_passing_accesses_leave_no_event() -> None:
    f = make([Rule("a", 0, 4, "allow")])
    f.read(0, 4)
    f.write(0, 4, 7)
    assert f.drain_events() == []


# -- contract-details 8: counters, update ---------------------------------------------------


def test_counters_count_accesses_per_owning_rule() -> None:
    rules = [
        Rule("d", 0, 4, "deny"),
        Rule("a", 4, 4, "audit"),
        Rule("shadowed", 0, 2, "allow"),  # owns nothing: "d" is more restrictive
        Rule("other", 0, 4, "deny", bar=1),
    ]
    f = make(rules)
    assert f.counters() == {"d": 0, "a": 0, "shadowed": 0}
    f.read(0, 4)  # d once, though it owns all 4 bytes
    f.read(2, 4)  # d and a
    f.write(4, 4, 1)  # a
    f.read(8, 4)  # nobody
    assert f.counters() == {"d": 2, "a": 2, "shadowed": 0}


def test_unaligned_denied_access_still_counts_owning_rules() -> None:
    # contract-details 8 counts every valid access "whatever the outcome".
    f = make([Rule("a", 0, 8, "allow")], unaligned="deny")
    f.read(1, 2)
    assert f.counters() == {"a": 1}


def test_update_carries_counters_by_name_and_seq_on() -> None:
    f = make([Rule("keep", 0, 4, "deny"), Rule("gone", 8, 4, "deny")])
    f.read(0, 4)
    f.read(8, 4)
    f.update(Policy([Rule("keep", 0x10, 4, "emulate"), Rule("new", 0, 4, "deny")]))
    assert f.counters() == {"keep": 1, "new": 0}
    assert f.read(0x10, 4) == 0
    assert f.counters() == {"keep": 2, "new": 0}
    assert [e.seq for e in f.drain_events()] == [0, 1, 2]


def test_rejected_update_keeps_the_old_policy() -> None:
    f = make([Rule("d", 0, 4, "deny")])
    with pytest.raises(PolicyError):
        f.update(Policy([Rule("big", 0, P + 1, "deny")]))
    assert f.read(0, 4) == FF4
    assert f.counters() == {"d": 1}


# -- construction and contract §3 step 1 / contract-details 9: validation --------------------


@pytest.mark.parametrize("page_size", [0, 2048, 5000, 3 * 4096])
def test_bad_page_size_is_a_value_error(page_size: int) -> None:
    with pytest.raises(ValueError, match="page size"):
        ModelFilter(P, Policy([]), ModelDevice(), page_size=page_size)


def test_bad_bar_size_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="size"):
        ModelFilter(0, Policy([]), ModelDevice())


def test_rule_outside_the_bar_is_a_policy_error_unless_of_another_bar() -> None:
    with pytest.raises(PolicyError, match="outside"):
        ModelFilter(P, Policy([Rule("r", P - 2, 4, "deny")]), ModelDevice())
    f = ModelFilter(P, Policy([Rule("r", P - 2, 4, "deny", bar=2)]), ModelDevice())
    assert f.counters() == {}
    assert f.read(P - 4, 4) == 0


@pytest.mark.parametrize(
    ("offset", "width", "is_write", "value", "match"),
    [
        (0, 3, False, 0, "width"),
        (0, 0, True, 0, "width"),
        (0, 16, False, 0, "width"),
        (-4, 4, False, 0, "outside"),
        (P - 2, 4, False, 0, "outside"),
        (P, 1, True, 0, "outside"),
        (2**64 - 4, 8, False, 0, "outside"),
        (0, 2, True, 0x10000, "value"),
        (0, 1, True, -1, "value"),
        (-1, 3, True, -1, "width"),  # width is checked first
        (P, 4, True, -1, "outside"),  # then the offset, then the value
    ],
)
def test_invalid_access_raises_and_leaves_no_trace(
    offset: int, width: int, is_write: bool, value: int, match: str
) -> None:
    f = make([Rule("d", 0, P, "deny")])
    with pytest.raises(AccessError, match=match):
        f.access(offset, width, is_write, value)
    assert log(f) == []
    assert f.drain_events() == []
    assert f.counters() == {"d": 0}


def test_read_value_is_ignored_but_write_value_checked() -> None:
    f = make([])
    assert f.access(0, 1, False, 0x1234).outcome is Outcome.PASS


# -- contract §4: layout ---------------------------------------------------------------------


def test_layout_of_a_whole_number_of_pages_without_rules() -> None:
    layout = make([], size=4 * P).layout
    assert (layout.direct, layout.trapped_pages, layout.collateral) == ([(0, 4 * P)], [], 0)


def test_layout_partial_last_page_is_trapped() -> None:
    layout = make([], size=3 * P + 100).layout
    assert (layout.direct, layout.trapped_pages, layout.collateral) == ([(0, 3 * P)], [3], 100)


def test_layout_bar_smaller_than_a_page_is_wholly_trapped() -> None:
    layout = make([], size=1024).layout
    assert (layout.direct, layout.trapped_pages, layout.collateral) == ([], [0], 1024)


def test_layout_two_rules_in_one_page_trap_only_that_page() -> None:
    rules = [Rule("d", P + 0x10, 4, "deny"), Rule("e", P + 0x100, 4, "emulate")]
    layout = make(rules, size=4 * P).layout
    assert layout.direct == [(0, P), (2 * P, 2 * P)]
    assert layout.trapped_pages == [1]
    assert layout.collateral == P - 8


def test_layout_rule_crossing_a_page_boundary_traps_both_pages() -> None:
    layout = make([Rule("d", 2 * P - 2, 4, "deny")], size=4 * P).layout
    assert layout.direct == [(0, P), (3 * P, P)]
    assert layout.trapped_pages == [1, 2]
    assert layout.collateral == 2 * P - 4


def test_layout_deny_shadowed_by_higher_priority_allow_does_not_trap() -> None:
    rules = [Rule("d", 0x10, 4, "deny"), Rule("a", 0, P, "allow", priority=1)]
    layout = make(rules, size=2 * P).layout
    assert (layout.direct, layout.trapped_pages, layout.collateral) == ([(0, 2 * P)], [], 0)


@pytest.mark.parametrize("action", [a for a in ACTIONS if a != "allow"])
def test_layout_every_non_allow_action_traps(action: str) -> None:
    layout = make([rule("r", 0x10, 4, action)], size=2 * P).layout
    assert (layout.direct, layout.trapped_pages, layout.collateral) == ([(P, P)], [0], P - 4)


def test_layout_rule_page_merges_with_partial_last_page() -> None:
    layout = make([Rule("d", P + 5, 1, "deny")], size=2 * P + 10).layout
    assert layout.direct == [(0, P)]
    assert layout.trapped == [(P, P + 10)]
    assert layout.trapped_pages == [1, 2]
    assert layout.collateral == (P - 1) + 10


def test_layout_64k_pages_trap_a_register_s_neighbours() -> None:
    size = 16 * 2**20
    layout = make([Rule("r", 0x12004C, 4, "deny")], size=size, page_size=65536).layout
    page = 0x12004C // 65536
    assert layout.trapped_pages == [page]
    assert layout.direct == [(0, page * 65536), ((page + 1) * 65536, size - (page + 1) * 65536)]
    assert layout.collateral == 65536 - 4


def test_layout_of_a_64_gib_bar_is_computed_from_rules_not_pages() -> None:
    size, half = 2**36, 2**35
    f = make([Rule("a", 0x200, 4, "deny"), Rule("b", half, 8, "deny")], size=size)
    layout = f.layout
    assert layout.direct == [(P, half - P), (half + P, half - P)]
    assert layout.trapped_pages == [0, half // P]
    assert layout.collateral == 2 * P - 12
    everything = make([Rule("all", 0, size, "deny")], size=size).layout
    assert (everything.direct, everything.trapped, everything.collateral) == ([], [(0, size)], 0)
    assert everything.trapped_count == size // P


def test_layout_follows_update() -> None:
    f = make([], size=2 * P)
    f.update(Policy([Rule("d", P, 1, "deny")]))
    assert f.layout.trapped_pages == [1]


# -- properties of the model alone -----------------------------------------------------------


@st.composite
def scenarios(
    draw: st.DrawFn,
) -> tuple[int, int, Policy, list[tuple[int, int, bool, int]]]:
    page_size = draw(page_sizes())
    size = draw(bar_sizes(page_size))
    policy = draw(policies(size))
    ops = draw(st.lists(accesses(size, policy), max_size=20))
    return page_size, size, policy, ops


def _device_for(ops: list[tuple[int, int, bool, int]]) -> ModelDevice:
    # Distinct-looking bytes wherever the accesses land; the BAR may be 64 GiB.
    return ModelDevice(
        {o: (o * 37 + 11) & 0xFF for off, w, _, _ in ops for o in range(off, off + w)}
    )


def _action(policy: Policy, offset: int) -> str:
    rule = owner(policy.for_bar(0), offset)
    return "allow" if rule is None else rule.action


@given(scenarios())
def test_device_is_never_touched_by_a_byte_that_does_not_pass(
    scenario: tuple[int, int, Policy, list[tuple[int, int, bool, int]]],
) -> None:
    page_size, size, policy, ops = scenario
    device = _device_for(ops)
    f = ModelFilter(size, policy, device, page_size=page_size)
    for offset, width, is_write, value in ops:
        before = len(device.log)
        result = f.access(offset, width, is_write, value)
        touched = device.log[before:]
        if result.outcome in (Outcome.BLOCKED, Outcome.EMULATED):
            assert touched == []
        covered = [o for off, w, _, _ in touched for o in range(off, off + w)]
        assert len(covered) == len(set(covered)), "a byte accessed twice"
        passing = WRITE_PASSES if is_write else READ_PASSES
        for o in covered:
            assert offset <= o < offset + width
            assert _action(policy, o) in passing
        assert all(entry[2] == is_write for entry in touched)


@given(scenarios())
def test_read_bytes_follow_the_action_table(
    scenario: tuple[int, int, Policy, list[tuple[int, int, bool, int]]],
) -> None:
    page_size, size, policy, ops = scenario
    device = _device_for(ops)
    f = ModelFilter(size, policy, device, page_size=page_size)
    for offset, width, _, _ in ops:
        expected_device = device.read(offset, width).to_bytes(width, "little")
        result = f.access(offset, width, False)
        got = result.value.to_bytes(width, "little")
        for i in range(width):
            rule = owner(policy.for_bar(0), offset + i)
            action = "allow" if rule is None else rule.action
            if action == "deny" or (result.outcome is Outcome.BLOCKED and action in READ_PASSES):
                assert got[i] == policy.fill
            elif action == "emulate" and result.outcome in (Outcome.EMULATED, Outcome.PARTIAL):
                assert rule is not None
                assert got[i] == rule.value_byte(offset + i - rule.start)
            elif result.outcome in (Outcome.PASS, Outcome.PARTIAL):
                assert got[i] == expected_device[i]


@given(scenarios())
def test_every_non_pass_access_leaves_one_event_in_order(
    scenario: tuple[int, int, Policy, list[tuple[int, int, bool, int]]],
) -> None:
    page_size, size, policy, ops = scenario
    f = ModelFilter(size, policy, _device_for(ops), page_size=page_size, ring_capacity=64)
    results = [f.access(*op) for op in ops]
    events = f.drain_events()
    assert [e.seq for e in events] == list(range(len(events)))
    non_pass = [(op[0], op[1], r.outcome) for op, r in zip(ops, results, strict=True)]
    non_pass = [x for x in non_pass if x[2] is not Outcome.PASS]
    assert [(e.offset, e.width, e.outcome) for e in events if e.outcome is not Outcome.PASS] == (
        non_pass
    )
    assert all(e.rule for e in events)


@given(st.data())
def test_invalid_accesses_raise_and_leave_no_trace(data: st.DataObject) -> None:
    size = data.draw(bar_sizes(data.draw(page_sizes())))
    policy = data.draw(policies(size))
    f = ModelFilter(size, policy, ModelDevice())
    counters = f.counters()
    offset, width, is_write, value = data.draw(invalid_accesses(size))
    with pytest.raises(AccessError):
        f.access(offset, width, is_write, value)
    assert log(f) == []
    assert f.drain_events() == []
    assert f.counters() == counters


@given(st.data())
def test_layout_direct_areas_are_maximal_aligned_runs_without_non_allow_bytes(
    data: st.DataObject,
) -> None:
    page_size = data.draw(page_sizes())
    size = data.draw(bar_sizes(page_size))
    policy = data.draw(policies(size))
    rules = policy.for_bar(0)
    layout = ModelFilter(size, policy, ModelDevice(), page_size=page_size).layout
    # direct and trapped runs tile [0, size), alternating: so both are sorted and maximal.
    runs = sorted(
        [(o, n, "direct") for o, n in layout.direct] + [(o, n, "t") for o, n in layout.trapped]
    )
    assert sum(n for _, n, _ in runs) == size
    position = 0
    for (offset, length, kind), nxt in itertools.zip_longest(runs, runs[1:]):
        assert offset == position and length > 0
        position += length
        if nxt is not None:
            assert kind != nxt[2], "two adjacent runs of one kind are not maximal"
    for offset, length in layout.direct:
        assert offset % page_size == 0 and length % page_size == 0
        # Ownership only changes at rule boundaries: check the area start and each boundary.
        points = {offset} | {
            c for r in rules for c in (r.start, r.end) if offset < c < offset + length
        }
        assert all(_action(policy, c) == "allow" for c in points)
    assert 0 <= layout.collateral <= sum(n for _, n in layout.trapped)


@settings(max_examples=40)
@given(st.data())
def test_layout_matches_brute_force_on_small_bars(data: st.DataObject) -> None:
    size = data.draw(st.integers(P // 4, 5 * P))
    policy = data.draw(policies(size, max_rules=5))
    layout = ModelFilter(size, policy, ModelDevice(), page_size=P).layout
    actions = [_action(policy, o) for o in range(size)]
    pages = range(-(-size // P))
    trapped = [
        i
        for i in pages
        if (i + 1) * P > size or any(a != "allow" for a in actions[i * P : (i + 1) * P])
    ]
    assert layout.trapped_pages == trapped
    assert layout.trapped_count == len(trapped)
    collateral = sum(actions[i * P : (i + 1) * P].count("allow") for i in trapped)
    assert layout.collateral == collateral
    direct = [i for i in pages if i not in trapped]
    assert [p for off, n in layout.direct for p in range(off // P, (off + n) // P)] == direct


# -- contract-details 17: redirect ---------------------------------------------------------


def test_redirect_is_one_target_access_of_the_same_width_counted_not_an_event() -> None:
    f = make([rule("mirror", 0x100, 0x10, "redirect")])
    # offset 0x106 is byte 6 of the rule: byte TARGET_AT + 6 of the target
    assert f.access(0x106, 2, False) == Result(Outcome.REDIRECTED, 0xF8F9)
    assert f.access(0x10C, 4, True, 0xA1B2C3D4) == Result(Outcome.REDIRECTED, 0xA1B2C3D4)
    assert target_log(f) == [(0x206, 2, False, 0xF8F9), (0x20C, 4, True, 0xA1B2C3D4)]
    assert log(f) == [] and f.drain_events() == []
    assert f.counters() == {"mirror": 2}


def test_redirect_naming_a_target_the_filter_lacks_is_refused() -> None:
    r = Rule("mirror", 0, 4, "redirect", target="window")
    with pytest.raises(PolicyError, match=r"'mirror'.*'window'"):
        make([r])
    f = make([])
    with pytest.raises(PolicyError, match=r"'mirror'.*'window'"):
        f.update(Policy([r]))


def test_redirect_mixed_access_is_refused_whole_under_partial_deny() -> None:
    f = make([rule("mirror", 0x102, 2, "redirect")])
    assert f.access(0x100, 4, False) == Result(Outcome.BLOCKED, FF4)
    assert f.access(0x100, 4, True, 0x11223344) == Result(Outcome.BLOCKED, 0)
    assert log(f) == [] and target_log(f) == []
    assert [e.rule for e in f.drain_events()] == ["mirror", "mirror"]


def test_redirect_mixed_access_splits_device_and_target_bytes() -> None:
    # bytes 0x100-0x101 allow (device), 0x102-0x103 redirect to target 0x200-0x201
    f = make([rule("mirror", 0x102, 2, "redirect")], partial="split")
    # device 0x100: 0x00, 0x01; target 0x200: 0xFF, 0x201: 0xFE
    assert f.access(0x100, 4, False) == Result(Outcome.PARTIAL, 0xFEFF0100)
    assert log(f) == [(0x100, 2, False, 0x0100)]
    assert target_log(f) == [(0x200, 2, False, 0xFEFF)]
    assert f.access(0x100, 4, True, 0x11223344) == Result(Outcome.PARTIAL, 0x11223344)
    assert log(f)[-1] == (0x100, 2, True, 0x3344)
    assert target_log(f)[-1] == (0x200, 2, True, 0x1122)
    assert [e.outcome for e in f.drain_events()] == [Outcome.PARTIAL, Outcome.PARTIAL]


def test_redirect_split_chunks_align_on_the_target_addresses() -> None:
    # bytes 0x101..0x107 redirect to target 0x203..0x209: aligned there as 1, 4, 2 bytes
    r = Rule("w", 0x101, 7, "redirect", target="config", target_offset=0x203)
    f = make([r], partial="split")
    f.access(0x100, 8, True, 0x0807060504030201)
    assert log(f) == [(0x100, 1, True, 0x01)]
    assert target_log(f) == [
        (0x203, 1, True, 0x02),
        (0x204, 4, True, 0x06050403),
        (0x208, 2, True, 0x0807),
    ]


def test_redirect_beside_emulate_is_mixed_with_no_device_byte() -> None:
    rules = [rule("mirror", 0x100, 2, "redirect"), Rule("e", 0x102, 2, "emulate", value=0xBEEF)]
    assert make(rules).access(0x100, 4, False) == Result(Outcome.BLOCKED, FF4)
    f = make(rules, partial="split")
    assert f.access(0x100, 4, False) == Result(Outcome.PARTIAL, 0xBEEFFEFF)
    assert log(f) == [] and target_log(f) == [(0x200, 2, False, 0xFEFF)]
