"""Device-info discovery: round trips for both table formats, every hostile-table error, and
properties over random tables (never anything but valid units or a DeviceInfoError)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmiofilter.devices.devinfo import (
    CHAIN,
    MIN_UNIT_SIZE,
    DeviceInfoError,
    Unit,
    find_units,
    read_units,
)
from mmiofilter.devices.devinfo_encode import (
    UnitSpec,
    encode_gh100,
    encode_gv100,
    table_words,
    words_reader,
)
from mmiofilter.devices.regmap import DeviceInfoSpec, load_map


def _spec(family: str) -> DeviceInfoSpec:
    spec = load_map(family).device_info
    assert spec is not None
    return spec


GV, GH = _spec("gv100"), _spec("gh100")
BAR = 16 << 20
IOCTRL = 18


# gv100 entries, by hand
def T(type_enum: int, chain: bool = False) -> int:  # ENGINE_TYPE
    return (CHAIN if chain else 0) | (type_enum << 2) | 3


def D(base: int, inst: int = 0, chain: bool = False) -> int:  # DATA
    return (CHAIN if chain else 0) | (inst << 26) | base | 1


E = CHAIN | 2  # ENUM, chained, nothing valid


def gv(words: Sequence[int], spec: DeviceInfoSpec = GV) -> Callable[[int], int]:
    table = list(words) + [0] * (spec.entries - len(words))
    return words_reader({spec.base + 4 * i: w for i, w in enumerate(table)})


def gh(cfg: int, rows: Sequence[int], spec: DeviceInfoSpec = GH) -> Callable[[int], int]:
    assert spec.config is not None
    table = list(rows) + [0] * (spec.entries - len(rows))
    words = {spec.base + 4 * i: w for i, w in enumerate(table)}
    words[spec.config] = cfg
    return words_reader(words)


def cfg(num_rows: int = 134, max_rows: int = 3, max_devices: int = 49, version: int = 2) -> int:
    return (num_rows << 20) | (max_rows << 16) | (max_devices << 4) | version


def triples(units: Sequence[Unit]) -> list[tuple[int, int, int]]:
    return [(u.type_enum, u.base, u.instance) for u in units]


# --- round trips -----------------------------------------------------------------------------

MIXED: list[UnitSpec] = [(0, 0x400000), (IOCTRL, 0xA00000, 0), (19, 0x104000, 2)]
MIXED += [(19, 0x104000, 3), (16, 0x84000), (IOCTRL, 0xA40000, 1)]


@pytest.mark.parametrize("spec", [GV, GH], ids=["gv100", "gh100"])
def test_round_trip(spec: DeviceInfoSpec) -> None:
    units = read_units(words_reader(table_words(spec, MIXED)), spec, BAR)
    assert triples(units) == [(t, b, (i[0] if i else 0)) for t, b, *i in MIXED]
    # LCEs (19) share a base by design; only IOCTRL units get the map's extent.
    assert [u.size for u in units if u.type_enum == IOCTRL] == [spec.unit_size] * 2
    assert all(u.size == MIN_UNIT_SIZE for u in units if u.type_enum != IOCTRL)
    assert [u.index for u in units] == [3 * i for i in range(len(MIXED))]
    ioctrl = find_units(words_reader(table_words(spec, MIXED)), spec, BAR, spec.ioctrl_type)
    assert [(u.base, u.end) for u in ioctrl] == [
        (0xA00000, 0xA00000 + spec.unit_size),
        (0xA40000, 0xA40000 + spec.unit_size),
    ]


@pytest.mark.parametrize("spec", [GV, GH], ids=["gv100", "gh100"])
def test_empty_table(spec: DeviceInfoSpec) -> None:
    assert read_units(words_reader(table_words(spec, [])), spec, BAR) == []


def test_gv100_not_valid_entries_and_any_entry_order() -> None:
    words = [
        0,
        D(0xA00000, 1, chain=True),
        0,  # NOT_VALID inside a chain is ignored, as the format says
        E,
        T(IOCTRL),
        0,
        0,
        T(0, chain=True),
        D(0x400000),
        0x7FFFFFFC,  # NOT_VALID with every other bit set: still ignored
        E,
        T(19, chain=True),
        D(0x104000, 5),
    ]
    units = read_units(gv(words), GV, BAR)
    assert triples(units) == [(IOCTRL, 0xA00000, 1), (0, 0x400000, 0), (19, 0x104000, 5)]
    assert [u.index for u in units] == [1, 7, 10]


def test_gh100_empty_rows_between_devices_and_zero_rows_inside_a_chain() -> None:
    rows = [
        0,
        CHAIN | (IOCTRL << 24) | (2 << 16),
        CHAIN | 0xA80000,
        0,  # last row of the device: zero, but inside the chain
        0,
        0,
        (19 << 24) | CHAIN,
        0x104000,  # two-row device
    ]
    units = read_units(gh(cfg(), rows), GH, BAR)
    assert triples(units) == [(IOCTRL, 0xA80000, 2), (19, 0x104000, 0)]
    assert [u.index for u in units] == [1, 6]


def test_gh100_base_is_row1_bits_25_to_8() -> None:
    # DEVICE_PRI_BASE is bits 57:40 of the device, bits 25:8 of its second row, in place.
    rows = [CHAIN | (IOCTRL << 24), CHAIN | 0xFC000000 | 0x00A40000 | 0xFF, 0]
    (unit,) = read_units(gh(cfg(), rows), GH, BAR)
    assert unit.base == 0xA40000


def test_encoders_refuse_what_the_format_cannot_hold() -> None:
    with pytest.raises(ValueError, match="base 0xa00800"):
        encode_gv100([(IOCTRL, 0xA00800)])
    with pytest.raises(ValueError, match="type_enum 0x80"):
        encode_gh100([(128, 0xA00000)])
    with pytest.raises(ValueError, match="need 66 entries"):
        encode_gv100([(1, 0x1000 * i) for i in range(22)])


# --- hostile and malformed tables: gv100 -----------------------------------------------------

SMALL = dataclasses.replace(GV, unit_size=0x2000)

GV100_HOSTILE = [
    (
        "chain never ends",
        [T(IOCTRL, chain=True), D(0xA00000, chain=True)],
        GV,
        BAR,
        r"^entry 0: the chain starting here runs past the last entry \(63\)",
    ),
    (
        "chain bit on the last entry",
        [0] * 63 + [T(1, chain=True)],
        GV,
        BAR,
        r"^entry 63: the chain starting here runs past the last entry",
    ),
    ("no type", [E, D(0x1000)], GV, BAR, r"^entry 0: device \(entries 0\.\.1\) has no ENGINE_TYPE"),
    ("no base", [T(IOCTRL)], GV, BAR, r"^entry 0: device \(entries 0\.\.0\) has no DATA entry"),
    (
        "two bases",
        [T(IOCTRL, chain=True), D(0xA00000, chain=True), D(0xB00000)],
        GV,
        BAR,
        r"^entry 2: device starting at entry 0 has more than one base .*first is entry 1",
    ),
    (
        "two types in one device",
        [T(IOCTRL, chain=True), T(19, chain=True), D(0xA00000)],
        GV,
        BAR,
        r"^entry 1: device starting at entry 0 has more than one type",
    ),
    ("two ENUMs", [E, E, T(1), D(0)], GV, BAR, r"^entry 1: .* more than one ENUM entry"),
    (
        "unknown DATA type",
        [T(IOCTRL, chain=True), D(0xA00000) | (1 << 30)],
        GV,
        BAR,
        r"^entry 1: DATA entry of TYPE 1",
    ),
    (
        "base outside the BAR",
        [T(IOCTRL, chain=True), D(0xA00000)],
        GV,
        0x800000,
        r"^entry 0: type 18 base 0xa00000 lies outside the BAR \(size 0x800000\)",
    ),
    (
        "unit past the end of the BAR",
        [T(IOCTRL, chain=True), D(0xFFF000)],
        SMALL,
        BAR,
        r"^entry 0: type 18 unit \[0xfff000, 0x1001000\) extends past the end of the BAR",
    ),
    (
        "other device past the end",
        [T(3, chain=True), D(0x7FF000)],
        GV,
        0x7FF800,
        r"^entry 0: type 3 unit \[0x7ff000, 0x800000\) extends past",
    ),
    (
        "two IOCTRLs at one base",
        [T(IOCTRL, chain=True), D(0xA00000), E, T(IOCTRL, chain=True), D(0xA00000, 1)],
        GV,
        BAR,
        r"^entry 0 and entry 2: type 18 units \[0xa00000, 0xa01000\) and .* overlap",
    ),
    (
        "IOCTRLs overlapping by extent",
        [T(IOCTRL, chain=True), D(0xA01000), 0, T(IOCTRL, chain=True), D(0xA00000)],
        SMALL,
        BAR,
        r"^entry 0 and entry 3: type 18 units \[0xa01000, 0xa03000\) and \[0xa00000, 0xa02000\)",
    ),
    ("table outside the BAR", [], GV, 0x22780, r"^device-info table \[0x22700, 0x22800\) does"),
]


@pytest.mark.parametrize(
    ("why", "words", "spec", "bar", "pattern"), GV100_HOSTILE, ids=[c[0] for c in GV100_HOSTILE]
)
def test_gv100_hostile(
    why: str, words: list[int], spec: DeviceInfoSpec, bar: int, pattern: str
) -> None:
    with pytest.raises(DeviceInfoError) as info:
        read_units(gv(words, spec), spec, bar)
    assert re.search(pattern, str(info.value)), str(info.value)


def test_lces_may_share_a_base_but_ioctrls_may_not() -> None:
    shared = [T(19, chain=True), D(0x104000, 0), T(19, chain=True), D(0x104000, 1)]
    assert len(read_units(gv(shared), GV, BAR)) == 2


# --- the GH100 table's size -------------------------------------------------------------------


def test_gh100_num_rows_comes_from_the_cfg_register_up_to_353() -> None:
    """A GH100 reporting more rows than gpu-admin-tools' 134 (the format holds up to 353:
    open-gpu-kernel-modules gb100/dev_top.h): the walker reads NUM_ROWS rows and finds the
    NVLink unit listed past row 134 (the profile refused to attach before)."""
    rows = [0] * 180 + dev(IOCTRL, 0xA00000) + [0] * 17
    units = find_units(gh(cfg(num_rows=200), rows), GH, BAR, IOCTRL)
    assert [(u.base, u.index) for u in units] == [(0xA00000, 180)]
    full = [0] * 350 + dev(IOCTRL, 0xA40000)
    assert [u.index for u in find_units(gh(cfg(num_rows=353), full), GH, BAR, IOCTRL)] == [350]


def test_gh100_rows_past_its_own_array_are_not_read() -> None:
    """With NUM_ROWS 134 the walker reads no row past GH100's array (gpu-admin-tools
    gh100/top.py: 134 rows): other registers lie there, not the table."""
    rd = Counting(gh(cfg(num_rows=100), dev(IOCTRL, 0xA00000)))
    assert [u.base for u in find_units(rd, GH, BAR, IOCTRL)] == [0xA00000]
    assert rd.reads == 1 + 134  # CFG, 100 rows, then rows 100..133 checked empty
    spec = dataclasses.replace(GH, rows=None)
    with pytest.raises(DeviceInfoError, match=r"^row 300: 0x00000001 lies past NUM_ROWS"):
        find_units(gh(cfg(num_rows=134), [0] * 300 + [1], spec), spec, BAR, IOCTRL)


# --- hostile and malformed tables: gh100 -----------------------------------------------------


def dev(type_enum: int, base: int, inst: int = 0) -> list[int]:
    return [CHAIN | (type_enum << 24) | (inst << 16), CHAIN | base, 0]


GH100_HOSTILE = [
    (
        "NUM_ROWS beyond the table",
        cfg(num_rows=354),
        [],
        r"NUM_ROWS 354 is more rows than the table holds \(353\)",
    ),
    ("NUM_ROWS at its maximum", cfg(num_rows=0xFFF), [], r"NUM_ROWS 4095 is more rows"),
    ("unknown version", cfg(version=1), [], r"VERSION 1, the map knows version 2"),
    (
        "a device hidden past NUM_ROWS",
        cfg(num_rows=6),
        dev(0, 0x400000) + dev(1, 0x500000) + [0] * 94 + dev(IOCTRL, 0xA00000),
        r"^row 100: 0x92000000 lies past NUM_ROWS \(6\); rows there must be empty",
    ),
    (
        "chain runs past NUM_ROWS",
        cfg(num_rows=2),
        dev(IOCTRL, 0xA00000),
        r"^row 0: the chain starting here runs past the last row \(NUM_ROWS 2\)",
    ),
    (
        "chain runs past the table",
        cfg(),
        [0] * 132 + [CHAIN | (IOCTRL << 24), CHAIN | 0xA00000],
        r"^row 132: the chain starting here runs past the last row \(NUM_ROWS 134\)",
    ),
    (
        "more rows than MAX_ROWS_PER_DEVICE",
        cfg(),
        [*dev(IOCTRL, 0xA00000)[:2], CHAIN, CHAIN, 0],
        r"^row 3: device starting at row 0 has more than MAX_ROWS_PER_DEVICE \(3\) rows",
    ),
    ("MAX_ROWS_PER_DEVICE 0", cfg(max_rows=0), dev(0, 0), r"^row 0: .*MAX_ROWS_PER_DEVICE \(0\)"),
    ("single-row device", cfg(), [IOCTRL << 24], r"^row 0: device has a single row: no base"),
    (
        "more devices than MAX_DEVICES",
        cfg(max_devices=1),
        dev(0, 0x400000) + dev(IOCTRL, 0xA00000),
        r"^row 3: one device more than MAX_DEVICES \(1\) allows",
    ),
    (
        "base outside the BAR",
        cfg(),
        dev(0, 0) + dev(IOCTRL, 0x03FFFF00),
        r"^row 3: type 18 base 0x3ffff00 lies outside the BAR",
    ),
    (
        "unit past the end of the BAR",
        cfg(),
        dev(IOCTRL, 0xFE0000),
        r"^row 0: type 18 unit \[0xfe0000, 0x1020000\) extends past the end of the BAR",
    ),
    (
        "IOCTRLs overlapping",
        cfg(),
        dev(IOCTRL, 0xA20000, 1) + dev(IOCTRL, 0xA00000, 0),
        r"^row 0 and row 3: type 18 units \[0xa20000, 0xa60000\) and \[0xa00000, 0xa40000\)",
    ),
]


@pytest.mark.parametrize(
    ("why", "cfg_word", "rows", "pattern"), GH100_HOSTILE, ids=[c[0] for c in GH100_HOSTILE]
)
def test_gh100_hostile(why: str, cfg_word: int, rows: list[int], pattern: str) -> None:
    with pytest.raises(DeviceInfoError) as info:
        read_units(gh(cfg_word, rows), GH, BAR)
    assert re.search(pattern, str(info.value)), str(info.value)


# --- a read32 that fails or lies -------------------------------------------------------------


class Boom(OSError):
    pass


def failing_at(offset: int, result: object) -> Callable[[int], int]:
    good = table_words(GV, MIXED)

    def read32(off: int) -> int:
        if off == offset:
            if isinstance(result, BaseException):
                raise result
            return result  # type: ignore[return-value]
        return good.get(off, 0)

    return read32


BAD_READS = [
    (Boom("bus error"), r"^entry 5 at 0x22714: read32 failed: Boom\('bus error'\)"),
    (-1, r"^entry 5 at 0x22714: read32 returned -0x1, not 32 bits"),
    (2**32, r"^entry 5 at 0x22714: read32 returned 0x100000000, not 32 bits"),
    (2**1000, r"read32 returned a 1001-bit value, not 32 bits"),
    ("0x12", r"^entry 5 at 0x22714: read32 returned a str, not an integer"),
    (True, r"read32 returned a bool, not an integer"),
    (1.0, r"read32 returned a float, not an integer"),
    (None, r"read32 returned a NoneType, not an integer"),
]


@pytest.mark.parametrize(("result", "pattern"), BAD_READS, ids=[repr(r)[:20] for r, _ in BAD_READS])
def test_bad_read32(result: object, pattern: str) -> None:
    with pytest.raises(DeviceInfoError) as info:
        read_units(failing_at(GV.base + 4 * 5, result), GV, BAR)
    assert re.search(pattern, str(info.value)), str(info.value)


def test_failing_cfg_read_names_the_register() -> None:
    assert GH.config is not None

    def read32(off: int) -> int:
        raise Boom("gone")

    with pytest.raises(DeviceInfoError, match=r"^NV_PTOP_DEVICE_INFO_CFG at 0x224fc: read32 fail"):
        read_units(read32, GH, BAR)


def test_keyboard_interrupt_is_not_swallowed() -> None:
    with pytest.raises(KeyboardInterrupt):
        read_units(failing_at(GV.base, KeyboardInterrupt()), GV, BAR)


def test_bad_bar_size_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="bar_size must be a positive integer"):
        read_units(gv([]), GV, 0)


# --- properties ------------------------------------------------------------------------------

# Distinct 256 KiB slots keep IOCTRL units apart under either format's unit size.
unit_lists = st.lists(
    st.tuples(
        st.one_of(st.just(IOCTRL), st.integers(0, 127)),
        st.integers(0, 63),
        st.integers(0, 15),
    ),
    unique_by=lambda t: t[1],
)


@given(unit_lists.filter(lambda us: len(us) <= 21))
def test_gv100_decode_is_encode_inverse(units: list[tuple[int, int, int]]) -> None:
    encoded = [(t, slot * 0x40000, inst) for t, slot, inst in units]
    assert triples(read_units(words_reader(table_words(GV, encoded)), GV, BAR)) == encoded


@given(unit_lists.filter(lambda us: len(us) <= 44))
def test_gh100_decode_is_encode_inverse(units: list[tuple[int, int, int]]) -> None:
    # The last slot's 256 KiB IOCTRL unit ends exactly at the end of the 16 MiB BAR.
    encoded = [(t, slot * 0x40000, inst) for t, slot, inst in units]
    assert triples(read_units(words_reader(table_words(GH, encoded)), GH, BAR)) == encoded


# Random tables: mostly well-formed (encoded units, IOCTRL-heavy, bases anywhere in 16 MiB at
# the format's granularity), then a few words damaged: a bit flipped, CHAIN toggled, a word
# zeroed or replaced. Pure noise would almost always fail on entry 0 and test little else.
types = st.one_of(st.just(IOCTRL), st.just(IOCTRL), st.sampled_from([0, 19]), st.integers(0, 127))


@st.composite
def damaged(draw: st.DrawFn, words: list[int]) -> list[int]:
    words = list(words)
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(words) - 1))
        how = draw(st.sampled_from(["flip", "chain", "zero", "word"]))
        if how == "flip":
            words[i] ^= 1 << draw(st.integers(0, 31))
        elif how == "chain":
            words[i] ^= CHAIN
        elif how == "zero":
            words[i] = 0
        else:
            words[i] = draw(st.integers(0, 2**32 - 1))
    return words


@st.composite
def gv100_tables(draw: st.DrawFn) -> list[int]:
    units = draw(st.lists(st.tuples(types, st.integers(0, 0xFFF), st.integers(0, 15)), max_size=21))
    return draw(damaged(encode_gv100([(t, b << 12, i) for t, b, i in units])))


@st.composite
def gh100_tables(draw: st.DrawFn) -> tuple[int, list[int]]:
    units = draw(
        st.lists(st.tuples(types, st.integers(0, 0x3FFFF), st.integers(0, 255)), max_size=44)
    )
    num_rows = draw(st.one_of(st.just(134), st.integers(0, 140)))
    cfg_word, rows = encode_gh100([(t, b << 8, i) for t, b, i in units])
    cfg_word = (cfg_word & 0xFFFFF) | (num_rows << 20)
    cfg_word, *rows = draw(damaged([cfg_word, *rows]))
    return cfg_word, rows


bar_sizes = st.sampled_from([BAR, 0x800000, 0xA20000, 0x100000])


def _check_valid(units: list[Unit], spec: DeviceInfoSpec, bar: int) -> None:
    for u in units:
        assert 0 <= u.base and u.end <= bar
        assert u.size == (spec.unit_size if u.type_enum == spec.ioctrl_type else MIN_UNIT_SIZE)
    assert [u.index for u in units] == sorted({u.index for u in units})
    ioctrl = sorted((u for u in units if u.type_enum == spec.ioctrl_type), key=lambda u: u.base)
    for a, b in pairwise(ioctrl):
        assert a.end <= b.base


class Counting:
    def __init__(self, read32: Callable[[int], int]) -> None:
        self.read32, self.reads = read32, 0

    def __call__(self, offset: int) -> int:
        self.reads += 1
        return self.read32(offset)


@settings(max_examples=200)
@given(gv100_tables(), bar_sizes, st.sampled_from([GV, SMALL]))
def test_gv100_random_tables(words: list[int], bar: int, spec: DeviceInfoSpec) -> None:
    rd = Counting(gv(words, spec))
    try:
        units = read_units(rd, spec, bar)
    except DeviceInfoError:
        pass
    else:
        _check_valid(units, spec, bar)
    assert rd.reads <= spec.entries  # each entry read at most once: the walk always ends


@settings(max_examples=200)
@given(gh100_tables(), bar_sizes)
def test_gh100_random_tables(table: tuple[int, list[int]], bar: int) -> None:
    rd = Counting(gh(*table))
    try:
        units = read_units(rd, GH, bar)
    except DeviceInfoError:
        pass
    else:
        _check_valid(units, GH, bar)
    assert rd.reads <= GH.entries + 1
