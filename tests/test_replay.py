"""Replaying driver traces through a policy: both trace formats, generated here, with per-rule
counts and line numbers worked out by hand; malformed and skipped lines; maps and base
inference; format detection; the CLI; and properties (arbitrary text never crashes a parser,
generated traces round-trip, an allow-all policy changes nothing)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mmiofilter as mf
from mmiofilter import cli
from mmiofilter.replay import (
    NO_RULE,
    BarFound,
    Malformed,
    Note,
    ReplayReport,
    Skipped,
    TraceAccess,
    TraceItem,
    TraceSource,
    detect_format,
    open_trace,
    parse_mmiotrace,
    parse_qemu_vfio,
    read_lines,
    replay,
)

POLICY_TOML = """
partial = "split"

[[rule]]
name = "boot-id"
start = 0x0
size = 4
action = "emulate"
value = 0x140000a1

[[rule]]
name = "pmc-enable"
start = 0x200
size = 4
action = "mask"
mask = 0x02000000
value = 0x02000000

[[rule]]
name = "flash"
start = 0x1000
size = 0x100
action = "deny"

[[rule]]
name = "isolation"
start = 0x2000
size = 8
action = "readonly"

[[rule]]
name = "doorbell"
start = 0x3100
size = 4
action = "audit"
"""
POLICY = mf.Policy.from_toml(POLICY_TOML)
BAR_SIZE = 0x10000
BASE = 0xF0000000
DEV = "0000:65:00.0"

Acc = tuple[int, int, bool, int]  # offset, width, is_write, value
R, W = False, True

# A driver-like sequence; the comment says what the policy does and why.
SCENARIO: list[Acc] = [
    (0x0, 4, R, 0x140000A1),  # 0 emulated (boot-id), same value as the device's
    (0x200, 4, R, 0x0),  # 1 pass (pmc-enable: mask bytes pass on reads)
    (0x200, 4, W, 0x0),  # 2 masked: bit 25 forced on
    (0x200, 4, R, 0x0),  # 3 pass, but the device now holds 0x02000000: changed
    (0x200, 4, W, 0x02000001),  # 4 pass: the mask changes nothing; divergence over
    (0x200, 4, R, 0x02000001),  # 5 pass, same value
    (0x2000, 4, R, 0x0),  # 6 pass (isolation is readonly)
    (0x2000, 4, W, 0x4),  # 7 blocked (isolation): the device keeps 0
    (0x2000, 4, R, 0x4),  # 8 pass, reads 0: changed
    (0x1004, 1, W, 0xAB),  # 9 blocked (flash)
    (0x1000, 4, R, 0x12345678),  # 10 blocked: fill 0xffffffff, changed
    (0x10FE, 4, R, 0x11223344),  # 11 partial (flash, split): 0x1122ffff, changed
    (0x10FE, 4, W, 0xDEADBEEF),  # 12 partial (flash): only 0x1100..0x1101 written
    (0x3000, 4, R, 0xCAFE),  # 13 pass, no rule
    (0x3000, 4, W, 0x1),  # 14 pass, no rule
    (0x1FFC, 8, R, 0x0000000412345678),  # 15 pass (isolation's bytes and free ones): changed
    (0x3100, 4, W, 0x1),  # 16 pass, audited (doorbell)
]
FIRST = 4  # both generated formats put SCENARIO[i] on line FIRST + i


def line(i: int) -> int:
    return FIRST + i


def zeros(**counts: int) -> dict[str, int]:
    out = dict.fromkeys(tuple(o.value for o in mf.Outcome), 0)
    out.update(counts)
    return out


EXPECTED_RULES: dict[str, dict[str, Any]] = {
    "boot-id": {
        "reads": zeros(emulated=1),
        "writes": zeros(),
        "examples": {"reads": {"emulated": [line(0)]}, "writes": {}},
        "changed_reads": 0,
    },
    "pmc-enable": {
        "reads": zeros(**{"pass": 3}),
        "writes": zeros(masked=1, **{"pass": 1}),
        "examples": {"reads": {}, "writes": {"masked": [line(2)]}},
        "changed_reads": 1,
    },
    "flash": {
        "reads": zeros(blocked=1, partial=1),
        "writes": zeros(blocked=1, partial=1),
        "examples": {
            "reads": {"blocked": [line(10)], "partial": [line(11)]},
            "writes": {"blocked": [line(9)], "partial": [line(12)]},
        },
        "changed_reads": 2,
    },
    "isolation": {
        "reads": zeros(**{"pass": 3}),
        "writes": zeros(blocked=1),
        "examples": {"reads": {}, "writes": {"blocked": [line(7)]}},
        "changed_reads": 2,
    },
    "doorbell": {
        "reads": zeros(),
        "writes": zeros(**{"pass": 1}),
        "examples": {"reads": {}, "writes": {}},
        "changed_reads": 0,
    },
    NO_RULE: {
        "reads": zeros(**{"pass": 1}),
        "writes": zeros(**{"pass": 1}),
        "examples": {"reads": {}, "writes": {}},
        "changed_reads": 0,
    },
}
EXPECTED_CHANGED = [
    (line(3), 0x200, 0x0, 0x02000000, "pass", ["pmc-enable"]),
    (line(8), 0x2000, 0x4, 0x0, "pass", ["isolation"]),
    (line(10), 0x1000, 0x12345678, 0xFFFFFFFF, "blocked", ["flash"]),
    (line(11), 0x10FE, 0x11223344, 0x1122FFFF, "partial", ["flash"]),
    (line(15), 0x1FFC, 0x0000000412345678, 0x0000000012345678, "pass", ["isolation"]),
]


# ---- trace generators -------------------------------------------------------------------


def mmiotrace_record(acc: Acc, i: int, *, map_id: int = 1, base: int = BASE) -> str:
    off, width, is_write, value = acc
    kind = "W" if is_write else "R"
    return f"{kind} {width} 12.{i:06d} {map_id} {base + off:#x} {value:#x} 0xffffffffc0a01234 0"


def mmiotrace_lines(accesses: list[Acc]) -> list[str]:
    """VERSION, PCIDEV (BAR0 at BASE, 64 KiB; BAR1 a 64-bit prefetchable one), MAP of BAR0,
    then the accesses from line 4."""
    pcidev = (
        f"PCIDEV 6500 10de1db1 5a {BASE:x} d000000c 0 0 0 0 0 "
        f"{BAR_SIZE:x} 10000000 0 0 0 0 0 nvidia"
    )
    head = [
        "VERSION 20070824",
        pcidev,
        f"MAP 11.000000 1 {BASE:#x} 0xffffc90001000000 {BAR_SIZE:#x} 0x0 0",
    ]
    return head + [mmiotrace_record(a, i) for i, a in enumerate(accesses)]


# The prefixes QEMU's text backends put before an event: log (newer, older with a timestamp),
# ftrace (through the kernel's trace_marker), and none at all after a pipe through `cut`.
PREFIXES = (
    "",
    "4242@1700000000.000042:",
    "qemu-system-x86-4242  [001] .....  1234.567890: tracing_mark_write: ",
)


def qemu_record(acc: Acc, i: int, *, dev: str = DEV, region: int = 0) -> str:
    off, width, is_write, value = acc
    prefix = PREFIXES[i % len(PREFIXES)]
    if is_write:
        return f"{prefix}vfio_region_write  ({dev}:region{region}+{off:#x}, {value:#x}, {width})"
    return f"{prefix}vfio_region_read  ({dev}:region{region}+{off:#x}, {width}) = {value:#x}"


def qemu_lines(accesses: list[Acc], *, setup: bool = True) -> list[str]:
    """Other QEMU output, vfio_region_setup (BAR0, 64 KiB), another event; accesses from line 4."""
    head = [
        f"qemu-system-x86_64: -device vfio-pci,host={DEV},x-no-mmap=on: info: no mmap",
        f'4242@1700000000.000001:vfio_region_setup Device {DEV}, region 0 "{DEV} BAR 0", '
        f"flags: 0x7, offset: 0x0, size: {BAR_SIZE:#x}"
        if setup
        else "4242@1700000000.000001:vfio_intx_enable  (0000:65:00.0)",
        f"4242@1700000000.000002:vfio_region_mmaps_set_enabled Region {DEV} BAR 0 mmaps enabled: 0",
    ]
    return head + [qemu_record(a, i) for i, a in enumerate(accesses)]


def rules_json(report: ReplayReport) -> dict[str, dict[str, Any]]:
    keep = ("reads", "writes", "examples", "changed_reads")
    return {r["rule"]: {k: r[k] for k in keep} for r in report.to_json()["rules"]}


def check_scenario(report: ReplayReport) -> None:
    assert report.accesses == len(SCENARIO)
    assert report.reads == zeros(emulated=1, blocked=1, partial=1, **{"pass": 7})
    assert report.writes == zeros(masked=1, blocked=2, partial=1, **{"pass": 3})
    assert rules_json(report) == EXPECTED_RULES
    assert report.changed_reads == len(EXPECTED_CHANGED)
    got = [
        (c.line, c.offset, c.trace_value, c.replay_value, c.outcome, list(c.rules))
        for c in report.changed
    ]
    assert got == EXPECTED_CHANGED
    assert report.dropped_events == 0
    assert report.bar_size == BAR_SIZE
    # Pages 0..3 hold rules (trapped at 4 KiB); every access of the scenario is on one of them.
    assert report.trapped == len(SCENARIO)


# ---- the scenario in both formats -------------------------------------------------------


def test_mmiotrace_scenario_per_rule_counts_and_lines() -> None:
    report = replay(parse_mmiotrace(mmiotrace_lines(SCENARIO)), POLICY, page_size=4096)
    check_scenario(report)
    assert report.bar_size_source == "from PCIDEV line 2"
    assert report.malformed.count == 0 and report.skipped.count == 0
    assert report.notes.entries == [
        (3, "BAR0 of 6500 (10de:1db1) at 0xf0000000 (PCIDEV line 2), first mapped at line 3")
    ]


def test_qemu_scenario_per_rule_counts_and_lines() -> None:
    report = replay(parse_qemu_vfio(qemu_lines(SCENARIO)), POLICY, page_size=4096)
    check_scenario(report)
    assert report.bar_size_source == "from vfio_region_setup at line 2"
    assert report.malformed.count == 0 and report.skipped.count == 0
    assert report.notes.entries == [(line(0), f"replaying device {DEV}, the first to access BAR0")]


def test_both_formats_give_the_same_report_from_files(tmp_path: Path) -> None:
    reports = []
    for name, lines in (("m.txt", mmiotrace_lines(SCENARIO)), ("q.log", qemu_lines(SCENARIO))):
        path = tmp_path / name
        path.write_text("\n".join(lines) + "\n")
        source = open_trace(path)  # auto-detected
        rep = replay(source, POLICY, page_size=4096)
        check_scenario(rep)
        assert rep.lines == len(lines)
        reports.append(rep.to_json())
    fmt_specific = ("format", "bar_size_source", "notes")
    for r in reports:
        for k in fmt_specific:
            r.pop(k)
    assert reports[0] == reports[1]


def test_large_page_traps_more() -> None:
    # At 64 KiB the whole BAR is one trapped page; with a 1 MiB BAR and 64 KiB pages, an
    # access at 0x20000 (page 2, no rule) goes direct.
    acc = [(0x20000, 4, R, 0x1)]
    lines = [
        f"MAP 1.000000 1 {BASE:#x} 0xffffc90001000000 0x100000 0x0 0",
        *[mmiotrace_record(a, i) for i, a in enumerate([*SCENARIO[:2], *acc])],
    ]
    rep = replay(parse_mmiotrace(lines), POLICY, page_size=65536)
    assert rep.bar_size == 0x100000 and rep.accesses == 3 and rep.trapped == 2


def test_partial_deny_blocks_what_split_splits() -> None:
    policy = mf.Policy(POLICY.rules, partial="deny")
    rep = replay(parse_qemu_vfio(qemu_lines(SCENARIO)), policy, page_size=4096)
    flash = rep.rules["flash"]
    assert flash.reads == zeros(blocked=2) and flash.writes == zeros(blocked=2)
    assert flash.read_examples == {"blocked": [line(10), line(11)]}
    assert flash.write_examples == {"blocked": [line(9), line(12)]}


def test_unaligned_deny_has_its_own_row() -> None:
    policy = mf.Policy(POLICY.rules, unaligned="deny")
    rep = replay(parse_qemu_vfio(qemu_lines([(0x3002, 4, R, 0x0)])), policy, page_size=4096)
    assert rep.rules["(unaligned)"].reads == zeros(blocked=1)
    assert rep.rules["(unaligned)"].read_examples == {"blocked": [line(0)]}


def test_allow_all_policy_changes_nothing() -> None:
    rep = replay(parse_mmiotrace(mmiotrace_lines(SCENARIO)), mf.Policy([]), page_size=4096)
    assert rep.changed_reads == 0 and rep.reads["pass"] + rep.writes["pass"] == len(SCENARIO)
    assert rep.trapped == 0  # no rule: every page is direct
    assert list(rep.rules) == [NO_RULE]


# ---- malformed and skipped lines --------------------------------------------------------

MMIO_BAD = [
    ("hello world", "unknown mmiotrace record 'hello'"),
    (f"R 4 12.000100 1 {BASE + 0x200:#x}", "R record has 4 field(s), expected"),
    (f"R 4 12.000100 1 {BASE:#x} 0x12zz 0x0 0", "value '0x12zz' is not a hex number"),
    (f"R 3 12.000100 1 {BASE:#x} 0x0 0x0 0", "width 3 is not 1, 2, 4 or 8"),
    (f"R 4 12.000100 1 -{BASE:#x} 0x0 0x0 0", "is not a 0x-prefixed hex number"),
    (f"W 4 12.000100 -1 {BASE:#x} 0x0 0x0 0", "map id '-1' is not a non-negative decimal"),
    (f"W 4 12.000100 1 {BASE:#x} 0x1ffffffffffffffff 0x0 0", "does not fit in 64 bits"),
    (f"W 1 12.000100 1 {BASE:#x} 0x100 0x0 0", "value 0x100 does not fit in a 1-byte access"),
    (f"W 4 12.000100 1 {BASE:#x} 0x0 0x0 " + "9" * 5000, "pid '9999"),
    (f"W 4 1200 1 {BASE:#x} 0x0 0x0 0", "timestamp '1200' is not sec.usec"),
    (f"W 4 12.000100 9 {BASE:#x} 0x0 0x0 0", "map id 9, which is not mapped"),
    (f"W 4 12.000100 1 {BASE + BAR_SIZE - 2:#x} 0x0 0x0 0", "is outside map 1"),
    ("PCIDEV 6500 10de1db1", "PCIDEV record has 2 field(s)"),
    ("UNMAP 13.000000 7 0x0 0", "UNMAP of map id 7, which is not mapped"),
    ("MAP 13.000000 2 0xffffffffffffff00 0x0 0x1000 0x0 0", "wraps past 2**64"),
]


def test_mmiotrace_malformed_lines_are_reported_with_numbers() -> None:
    lines = mmiotrace_lines(SCENARIO[:2]) + [text for text, _ in MMIO_BAD]
    lines += ["", "# tracer: mmiotrace", "MARK 13.000000 X is up", "LSPCI 00:00.0 Host bridge"]
    lines.append(mmiotrace_record(SCENARIO[2], 99))  # parsing goes on after them
    items = list(parse_mmiotrace(lines))
    bad = [it for it in items if isinstance(it, Malformed)]
    assert [b.line for b in bad] == list(range(6, 6 + len(MMIO_BAD)))
    for b, (_, reason) in zip(bad, MMIO_BAD, strict=True):
        assert reason in b.reason, (b, reason)
    assert all(len(b.reason) < 200 for b in bad)  # a 5,000-digit token is not echoed whole
    accesses = [it for it in items if isinstance(it, TraceAccess)]
    assert [a.line for a in accesses] == [4, 5, len(lines)]
    rep = replay(parse_mmiotrace(lines), POLICY)
    assert rep.malformed.count == len(MMIO_BAD) and rep.accesses == 3


QEMU_BAD = [
    ("vfio_region_write garbage", "vfio_region_write: expected (DEVICE:regionN+0xADDR"),
    (f"vfio_region_read  ({DEV}:region0+0x200, 4)", "expected (DEVICE:regionN+0xADDR, WIDTH)"),
    (f"vfio_region_write  ({DEV}:region0+0x2zz, 0x1, 4)", "address '0x2zz' is not a hex number"),
    (f"vfio_region_write  ({DEV}:region0+0x200, 0x1, 3)", "width 3 is not 1, 2, 4 or 8"),
    (f"vfio_region_write  ({DEV}:region0+0x200, 0x1, -4)", "width '-4' is not a non-negative"),
    (f"vfio_region_write  ({DEV}:region0+0x200, -0x1, 4)", "value '-0x1' is not a 0x-prefixed"),
    (f"vfio_region_read  ({DEV}:region0+0x200, 4) = 0x1{'0' * 16}", "does not fit in 64 bits"),
    (f"vfio_region_read  ({DEV}:region0+0x200, 2) = 0x10000", "does not fit in a 2-byte access"),
    (f"vfio_region_read  ({DEV}:regionX+0x200, 2) = 0x1", "region 'X' is not a non-negative"),
]


def test_qemu_malformed_lines_are_reported_with_numbers() -> None:
    noise = ["garbage that names no vfio event", "vfio_region_writes (not the event)", "\x00\xff"]
    lines = qemu_lines(SCENARIO[:1]) + [t for t, _ in QEMU_BAD] + noise
    lines.append(qemu_record(SCENARIO[1], 0))
    items = list(parse_qemu_vfio(lines))
    bad = [it for it in items if isinstance(it, Malformed)]
    assert [b.line for b in bad] == list(range(5, 5 + len(QEMU_BAD)))  # noise is ignored
    for b, (_, reason) in zip(bad, QEMU_BAD, strict=True):
        assert reason in b.reason, (b, reason)
    assert [it.line for it in items if isinstance(it, TraceAccess)] == [4, len(lines)]


def test_qemu_other_regions_devices_and_outside_the_bar_are_skipped() -> None:
    lines = qemu_lines(SCENARIO[:1])
    lines += [
        qemu_record((0x10, 4, R, 0x1), 0, region=2),  # line 5: another BAR
        qemu_record((0x10, 4, R, 0x1), 0, dev="0000:66:00.0"),  # 6: another device
        qemu_record((BAR_SIZE - 2, 4, R, 0x1), 0),  # 7: straddles the BAR's end
        qemu_record((BAR_SIZE, 1, W, 0x1), 0),  # 8: past it
        qemu_record((0x10, 4, R, 0x1), 0, region=7),  # 9: config space region
    ]
    rep = replay(parse_qemu_vfio(lines), POLICY)
    assert rep.accesses == 1 and rep.skipped.count == 5
    assert rep.skipped.entries == [
        (5, f"region 2 of {DEV}, not BAR0"),
        (6, f"device 0000:66:00.0, not {DEV}"),
        (7, "4-byte access at 0xfffe is outside BAR0 [0, 0x10000)"),
        (8, "1-byte access at 0x10000 is outside BAR0 [0, 0x10000)"),
        (9, f"region 7 of {DEV}, not BAR0"),
    ]


def test_qemu_device_and_bar_selection() -> None:
    lines = qemu_lines(SCENARIO[:1])
    lines.append(qemu_record((0x10, 4, R, 0x1), 0, dev="0000:66:00.0", region=2))
    rep = replay(
        parse_qemu_vfio(lines, bar=2, device="0000:66:00.0"), mf.Policy([]), bar_size=0x1000
    )
    assert rep.accesses == 1 and rep.skipped.entries == [(4, f"region 0 of {DEV}, not BAR2")]


def test_missing_bar_size_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"how large BAR0 is .*line 4.*give the BAR size"):
        replay(parse_qemu_vfio(qemu_lines(SCENARIO, setup=False)), POLICY)
    lines = qemu_lines(SCENARIO, setup=False)
    rep = replay(parse_qemu_vfio(lines), POLICY, bar_size=BAR_SIZE, page_size=4096)
    check_scenario(rep)
    assert rep.bar_size_source == "given"


def test_given_bar_size_wins_with_a_note() -> None:
    rep = replay(parse_qemu_vfio(qemu_lines(SCENARIO[:1])), POLICY, bar_size=0x20000)
    assert rep.bar_size == 0x20000
    assert (2, "the trace says BAR0 is 0x10000 bytes (vfio_region_setup at line 2); "
            "replaying it as 0x20000") in rep.notes.entries  # fmt: skip


def test_long_hostile_lines_parse_in_linear_time() -> None:
    # Regexes with two open-ended fields took minutes on lines like these (quadratic
    # backtracking); the parsers split strings instead. No timing assertion: a regression
    # shows up as a test that does not finish.
    n = 100_000
    hostile = [
        "vfio_region_write (" + ":region" * n,
        "vfio_region_read (" + ":region1+0x1, " * n,
        "vfio_region_setup Device " + ', region 0 "' * n,
        "R 4 " * n,
    ]
    for parse in (parse_qemu_vfio, parse_mmiotrace):
        items = list(parse(hostile))
        assert all(isinstance(it, Malformed) and len(it.reason) < 200 for it in items)


# ---- maps, bases -----------------------------------------------------------------------


def test_mmiotrace_two_maps_unmap_and_remap() -> None:
    b = 0xE0000000
    lines = [
        f"MAP 1.000000 1 {b:#x} 0xffffc90000000000 0x10000 0x0 0",  # 1: the BAR (first MAP)
        f"MAP 1.000001 2 {b + 0x2000:#x} 0xffffc90000100000 0x1000 0x0 0",  # 2: a window in it
        f"R 4 1.000002 2 {b + 0x2000:#x} 0x5 0x0 0",  # 3: offset 0x2000 through map 2
        f"W 4 1.000003 1 {b + 0x200:#x} 0x0 0x0 0",  # 4: offset 0x200 through map 1
        "UNMAP 1.000004 2 0x0 0",  # 5
        f"R 4 1.000005 2 {b + 0x2000:#x} 0x5 0x0 0",  # 6: map 2 is gone
        f"R 4 1.000006 1 {b + 0x20000:#x} 0x5 0x0 0",  # 7: outside map 1
        "MAP 1.000007 3 0xd0000000 0xffffc90000200000 0x1000 0x0 0",  # 8: another BAR
        "R 4 1.000008 3 0xd0000010 0x7 0x0 0",  # 9: below the BAR
        "UNMAP 1.000009 7 0x0 0",  # 10: never mapped
        f"MAP 1.000010 2 {b + 0x4000:#x} 0xffffc90000300000 0x1000 0x0 0",  # 11: id 2 again
        f"W 2 1.000011 2 {b + 0x4000:#x} 0xbeef 0x0 0",  # 12: offset 0x4000
        "MARK 1.000012 Lost 5 events.",  # 13
        f"UNKNOWN 1.000013 1 {b + 0x300:#x} 0f,b6,00 0x0 0",  # 14
    ]
    items = list(parse_mmiotrace(lines))
    assert [it for it in items if isinstance(it, TraceAccess)] == [
        TraceAccess(3, 0x2000, 4, False, 0x5),
        TraceAccess(4, 0x200, 4, True, 0x0),
        TraceAccess(9, 0xD0000010 - b, 4, False, 0x7),
        TraceAccess(12, 0x4000, 2, True, 0xBEEF),
    ]
    assert [(it.line, it.size) for it in items if isinstance(it, BarFound)] == [(1, 0x10000)]
    assert [it.line for it in items if isinstance(it, Malformed)] == [6, 7, 10]
    assert [it.line for it in items if isinstance(it, Skipped)] == [14]
    notes = [it for it in items if isinstance(it, Note)]
    assert [n.line for n in notes] == [1, 13]
    assert "first MAP (line 1)" in notes[0].text and "lost 5 event(s)" in notes[1].text
    rep = replay(iter(items), POLICY)
    assert rep.accesses == 3 and rep.skipped.count == 2
    assert rep.skipped.entries[0] == (9, "4-byte access at -0xffffff0 is outside BAR0 [0, 0x10000)")
    assert rep.rules["isolation"].reads == zeros(**{"pass": 1})
    assert rep.rules["pmc-enable"].writes == zeros(masked=1)


PCIDEV_TWO_BARS = (
    "PCIDEV 6500 10de1db1 5a f0000000 d000000c 0 0 0 ec01 0 1000000 10000000 0 0 0 80 0"
)
MAPS_TWO_BARS = [
    "MAP 1.000000 1 0xd0000000 0xffffc90000000000 0x100000 0x0 0",  # BAR1, mapped first
    "MAP 1.000001 2 0xf0001000 0xffffc90000100000 0x1000 0x0 0",  # part of BAR0
    "R 4 1.000002 2 0xf0001010 0x1 0x0 0",  # line 4: BAR0 + 0x1010
    "R 4 1.000003 1 0xd0000040 0x2 0x0 0",  # line 5: BAR1 + 0x40
]


@pytest.mark.parametrize(
    ("bar", "base", "size", "offsets"),
    [
        (0, 0xF0000000, 0x1000000, [0x1010, 0xD0000040 - 0xF0000000]),
        (1, 0xD0000000, 0x10000000, [0xF0001010 - 0xD0000000, 0x40]),
    ],
)
def test_mmiotrace_base_from_pcidev(bar: int, base: int, size: int, offsets: list[int]) -> None:
    items = list(parse_mmiotrace([PCIDEV_TWO_BARS, *MAPS_TWO_BARS], bar=bar))
    assert [a.offset for a in items if isinstance(a, TraceAccess)] == offsets
    assert [it.size for it in items if isinstance(it, BarFound)] == [size]
    assert any(isinstance(it, Note) and f"at {base:#x} (PCIDEV line 1)" in it.text for it in items)
    rep = replay(iter(items), mf.Policy([], fill=0), bar=bar)
    assert rep.accesses == 1 and rep.skipped.count == 1


def test_mmiotrace_io_bar_and_explicit_base() -> None:
    # BAR5 is an I/O BAR (start ec01): never a window; without one, accesses are skipped.
    items = list(parse_mmiotrace([PCIDEV_TWO_BARS, *MAPS_TWO_BARS], bar=5))
    assert [it.line for it in items if isinstance(it, Skipped)] == [4, 5]
    assert not any(isinstance(it, TraceAccess | BarFound) for it in items)
    # An explicit base: offsets from it, the size from the PCIDEV BAR starting there.
    items = list(parse_mmiotrace([PCIDEV_TWO_BARS, *MAPS_TWO_BARS], base=0xF0000000))
    offsets = [a.offset for a in items if isinstance(a, TraceAccess)]
    assert offsets == [0x1010, 0xD0000040 - 0xF0000000]
    assert [(it.line, it.size) for it in items if isinstance(it, BarFound)] == [(1, 0x1000000)]
    # ... or from a MAP starting there, when no PCIDEV line says more.
    items = list(parse_mmiotrace(MAPS_TWO_BARS, base=0xD0000000))
    assert [(it.line, it.size) for it in items if isinstance(it, BarFound)] == [(1, 0x100000)]
    assert [a.offset for a in items if isinstance(a, TraceAccess)] == [0x20001010, 0x40]


# ---- detection, files ------------------------------------------------------------------


def test_detect_format() -> None:
    assert detect_format(mmiotrace_lines(SCENARIO)) == "mmiotrace"
    assert detect_format(qemu_lines(SCENARIO)) == "qemu"
    assert detect_format(["noise"] * 50 + qemu_lines(SCENARIO)) == "qemu"
    assert detect_format([mmiotrace_record(SCENARIO[0], 0)]) == "mmiotrace"
    assert detect_format(["hello", "R is a letter", "MAP of the world"]) is None
    assert detect_format([]) is None


def test_auto_detection_failure_and_explicit_format() -> None:
    with pytest.raises(ValueError, match=r"cannot tell the trace format .* 2 line"):
        TraceSource(["hello", "world"])
    with pytest.raises(ValueError, match="not one of"):
        TraceSource([], fmt="pcap")
    # An explicit format parses even what detection would not vouch for.
    src = TraceSource(["hello"], fmt="mmiotrace")
    assert [type(it) for it in src] == [Malformed] and src.lines_read == 1


def test_read_lines_numbers_as_grep(tmp_path: Path) -> None:
    path = tmp_path / "t"
    path.write_bytes(b"VERSION 20070824\r\nR\xff\xfe\n\rMARK 1.0 x\x0bz\n\nlast")
    assert list(read_lines(path)) == [
        "VERSION 20070824",
        "R\ufffd\ufffd",
        "\rMARK 1.0 x\x0bz",
        "",
        "last",
    ]


def test_format_specific_options_are_noted() -> None:
    src = TraceSource(qemu_lines(SCENARIO[:1]), base=0x1000)
    assert isinstance(next(iter(src)), Note)
    src = TraceSource(mmiotrace_lines(SCENARIO[:1]), device=DEV)
    assert isinstance(next(iter(src)), Note)


# ---- the CLI --------------------------------------------------------------------------


def run_cli(argv: list[str]) -> int:
    """`mmiofilter replay ...` through the real command line."""
    return cli.main(argv)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    paths = {
        "policy": tmp_path / "policy.toml",
        "mmiotrace": tmp_path / "mmio.txt",
        "qemu": tmp_path / "qemu.log",
    }
    paths["policy"].write_text(POLICY_TOML)
    paths["mmiotrace"].write_text("\n".join([*mmiotrace_lines(SCENARIO), "garbage"]) + "\n")
    paths["qemu"].write_text("\n".join(qemu_lines(SCENARIO)) + "\n")
    return paths


@pytest.mark.parametrize("fmt", ["mmiotrace", "qemu"])
def test_cli_json(fmt: str, files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["replay", str(files["policy"]), str(files[fmt]), "--json", "--page-size", "4K"]
    assert run_cli([*argv, "--format", "auto"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["format"] == fmt and out["policy"] == str(files["policy"])
    assert out["accesses"] == len(SCENARIO) and out["page_size"] == 4096
    assert {r["rule"]: {k: r[k] for k in EXPECTED_RULES[NO_RULE]} for r in out["rules"]} == (
        EXPECTED_RULES
    )
    assert out["changed_reads"]["count"] == len(EXPECTED_CHANGED)
    assert out["dropped_events"] == 0
    if fmt == "mmiotrace":
        assert out["malformed"] == {
            "count": 1,
            "lines": [
                {"line": len(SCENARIO) + FIRST, "reason": "unknown mmiotrace record 'garbage'"}
            ],
        }
    # Forcing the other format: mmiotrace lines are not vfio events (ignored), QEMU lines are
    # not mmiotrace records (malformed); neither is fatal.
    other = "qemu" if fmt == "mmiotrace" else "mmiotrace"
    assert run_cli([*argv, "--format", other, "--bar-size", "64K"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["accesses"] == 0


def test_cli_text(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        run_cli(["replay", str(files["policy"]), str(files["mmiotrace"]), "--page-size", "4K"]) == 0
    )
    out = capsys.readouterr().out
    assert f"replayed {len(SCENARIO)} access(es) of BAR0 (0x10000 bytes, from PCIDEV line 2)" in out
    assert (
        "  flash: deny [0x1000, 0x1100)\n    reads:  blocked 1 (line 14), partial 1 (line 15)"
        in out
    )
    assert "writes: pass 1, masked 1 (line 6)" in out
    assert (
        "  line 14: 4-byte read at 0x1000: trace 0x12345678, with the policy 0xffffffff "
        "(blocked; flash)"
    ) in out
    assert "line 21: unknown mmiotrace record 'garbage'" in out


def test_cli_options(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    # --base and --bar-size: rules beyond a too-small BAR are a policy error, as for layout.
    argv = ["replay", str(files["policy"]), str(files["mmiotrace"]), "--json"]
    assert run_cli([*argv, "--base", hex(BASE + 0x1000), "--bar-size", "0x8000"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["bar_size"] == 0x8000 and out["skipped"]["count"] == 6  # offsets below 0x1000
    assert run_cli([*argv, "--bar-size", "0x1000"]) == 2
    assert "lies outside the BAR" in capsys.readouterr().err
    for bad in (["--bar", "6"], ["--base", "-1"], ["--page-size", "4X"], ["--format", "pcap"]):
        assert run_cli([*argv, *bad]) == 2
    assert run_cli(["replay", "--help"]) == 0
    assert "vfio_region_" in capsys.readouterr().out


# ---- properties ---------------------------------------------------------------------------

# Fragments of both formats, so that random lines get past the first checks.
FRAGMENTS = st.sampled_from(
    ["R", "W", "MAP", "UNMAP", "MARK", "PCIDEV", "UNKNOWN", "VERSION", "1", "4", "8", "3", "-1",
     "12.000001", "0x0", "0xf0000000", "0xf0000200", "0x10000", "0xffffffffffffffffff", "0x",
     "vfio_region_write", "vfio_region_read", "vfio_region_setup", f"({DEV}:region0+0x200,",
     "0x1,", "4)", "=", "0x1ff", "(", ")", ":region0+", "Device", "region 0", "size:", "Lost"]
)  # fmt: skip
LINES = st.one_of(
    st.text(max_size=80),
    st.lists(FRAGMENTS, max_size=10).map(" ".join),
    st.lists(st.one_of(FRAGMENTS, st.text(max_size=4)), max_size=10).map("".join),
)


def check_items(items: list[TraceItem], n_lines: int) -> None:
    for it in items:
        assert isinstance(it, TraceAccess | Skipped | Malformed | Note | BarFound)
        assert 0 <= it.line <= n_lines
        if isinstance(it, TraceAccess):
            assert it.width in (1, 2, 4, 8) and 0 <= it.value < 1 << (8 * it.width)


@settings(max_examples=300, deadline=None)
@given(st.lists(LINES, max_size=30), st.integers(0, 5))
def test_arbitrary_text_never_crashes_the_parsers(lines: list[str], bar: int) -> None:
    prefix = ["MAP 1.000000 1 0xf0000000 0x0 0x10000 0x0 0"]  # so that R/W lines can map
    for parsed in (
        list(parse_mmiotrace(prefix + lines, bar=bar)),
        list(parse_mmiotrace(lines, bar=bar, base=0xF0000000)),
        list(parse_qemu_vfio(lines, bar=bar)),
    ):
        check_items(parsed, len(lines) + 1)
        rep = replay(iter(parsed), POLICY, bar_size=BAR_SIZE, bar=bar)
        assert rep.dropped_events == 0
    detect_format(lines)


ACCESSES = st.lists(
    st.tuples(
        st.integers(0, BAR_SIZE // 8 - 1).map(lambda x: 8 * x),
        st.sampled_from((1, 2, 4, 8)),
        st.booleans(),
        st.integers(0, 2**64 - 1),
    ).map(lambda a: (a[0], a[1], a[2], a[3] & ((1 << (8 * a[1])) - 1))),
    max_size=40,
)


@settings(max_examples=100, deadline=None)
@given(ACCESSES)
def test_generated_traces_round_trip(accesses: list[Acc]) -> None:
    want = [TraceAccess(line(i), *a) for i, a in enumerate(accesses)]
    for items in (
        parse_mmiotrace(mmiotrace_lines(accesses)),
        parse_qemu_vfio(qemu_lines(accesses)),
    ):
        assert [it for it in items if isinstance(it, TraceAccess)] == want


@settings(max_examples=100, deadline=None)
@given(ACCESSES)
def test_allow_all_never_changes_a_read(accesses: list[Acc]) -> None:
    # The device model answers from the trace unless the policy made it diverge: with nothing
    # blocked or masked, every read returns what the driver saw.
    for policy in (mf.Policy([]), mf.Policy([mf.Rule("a", 0, BAR_SIZE, "audit")])):
        rep = replay(parse_qemu_vfio(qemu_lines(accesses)), policy)
        assert rep.changed_reads == 0 and rep.accesses == len(accesses)
        assert rep.reads["pass"] + rep.writes["pass"] == len(accesses)
