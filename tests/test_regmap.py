"""Register maps: the shipped maps and the loader's validation (one test per error class)."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest

from mmiofilter.devices.regmap import (
    CATEGORIES,
    DeviceInfoSpec,
    MapError,
    RegisterMap,
    available_maps,
    load_map,
    parse_map,
)

# --- the shipped maps ------------------------------------------------------------------------


@pytest.fixture(params=["gv100", "gh100"])
def shipped(request: pytest.FixtureRequest) -> RegisterMap:
    return load_map(request.param)


def test_both_maps_ship() -> None:
    assert {"gv100", "gh100"} <= set(available_maps())


def test_every_fact_has_a_source(shipped: RegisterMap) -> None:
    facts: list[Any] = [*shipped.devices, *shipped.bars, *shipped.regions]
    assert shipped.device_info is not None
    di = shipped.device_info
    for f in facts:
        assert f.source.strip(), f
        assert f.confirmed or f.note.strip(), f
    for p in (di.provenance, di.ioctrl_type_provenance, di.unit_size_provenance):
        assert p.source.strip()
        assert p.confirmed or p.note.strip()


def test_regions_are_categorised_and_inside_their_bar(shipped: RegisterMap) -> None:
    for r in shipped.regions:
        assert r.category in CATEGORIES
        assert 0 <= r.offset < r.end <= shipped.bar(r.bar).size
    # regions_in partitions the regions by category
    assert sum(len(shipped.regions_in(c)) for c in CATEGORIES) == len(shipped.regions)


def test_gv100_facts() -> None:
    m = load_map("gv100")
    assert m.bar(0).size == 16 << 20
    v100 = (0x1DB1, 0x1DB2, 0x1DB3, 0x1DB4, 0x1DB5, 0x1DB6, 0x1DB7, 0x1DB8, 0x1DF0, 0x1DF2, 0x1DF5)
    for dev in (*v100, 0x1DF6):
        assert m.matches(0x10DE, dev)
    assert not m.matches(0x10DE, 0x2330)
    # The isolation sequence is stated for SXM2 parts: every other part says it is unverified.
    for d in m.devices:
        assert ("SXM2" in (d.name or "")) == (d.note == ""), hex(d.device)
    pmc = m.find("NV_PMC_ENABLE")
    assert (pmc.offset, pmc.size, pmc.category) == (0x200, 4, "nvlink")
    assert pmc.field("NVLINK").mask == 0x02000000 and "dev_master.ref.txt" in pmc.source
    links = m.find("NVLINK_LINK_DISABLE")
    assert links.offset == 0xA00148 and links.field("LINK_DISABLE").mask == 0x003F0000
    # The ring registers are what nvgpu's headers say, and no option protects them.
    ring = m.find("NV_PPRIV_MASTER_RING_COMMAND")
    assert (ring.offset, ring.category, ring.field("CMD").mask) == (0x12004C, "other", 0x3F)
    assert (ring.value("ACK_INTERRUPT"), ring.value("ENUMERATE_AND_START_RING")) == (0x2, 0x4)
    assert "hw_pri_ringmaster_gv100.h" in ring.source and "gk104_privring_intr" in ring.source
    decode = m.find("NV_PPRIV_SYS_DECODE_CONFIG")
    assert (decode.offset, decode.category, decode.value("ISOLATION_SEQUENCE")) == (
        0x122204,
        "other",
        0x2,
    )
    assert {r.name for r in m.regions_in("nvlink")} == {
        "NV_PMC_ENABLE",
        "NVLINK_LINK_DISABLE",
        "NV_PMINION_FALCON_CPUCTL",
        "NV_PMINION_FALCON_IMEM_PORTS",
        "NV_PMINION_FALCON_DMEM_PORTS",
        "NV_PMINION_FALCON_DMATRF",
        "NV_PMINION_FALCON_DMATRFBASE1",
    }
    cpuctl = m.find("NV_PMINION_FALCON_CPUCTL")
    imem, dmem = m.find("NV_PMINION_FALCON_IMEM_PORTS"), m.find("NV_PMINION_FALCON_DMEM_PORTS")
    assert (cpuctl.offset, imem.offset, dmem.offset) == (0xA06100, 0xA06180, 0xA061C0)
    # The falcon layout from nvgpu's GV100 header, from the MINION falcon's base (0xA06000):
    # IMEMC/D/T(0..3) up to DMEMC(0), DMEMC/D(0..7) up to ICD_CMD (0x200), the DMA registers.
    dma, dma1 = m.find("NV_PMINION_FALCON_DMATRF"), m.find("NV_PMINION_FALCON_DMATRFBASE1")
    assert [(r.offset, r.end) for r in (imem, dmem, dma, dma1)] == [
        (0xA06180, 0xA061C0), (0xA061C0, 0xA06200), (0xA06110, 0xA06120), (0xA06128, 0xA0612C)
    ]
    minion = (cpuctl, imem, dmem, dma, dma1)
    assert all(r.confirmed and "hw_falcon_gv100.h" in r.source for r in minion)
    pcfg1 = m.find("NV_PCFG1")
    assert (pcfg1.offset, pcfg1.end, pcfg1.category) == (0x8A000, 0x8B000, "config-mirror")
    assert "dev_nv_xve3g_fn1.ref.txt" in pcfg1.source
    boot = m.find("NV_PMC_BOOT_0")
    assert boot.offset == 0 and boot.confirmed and "dev_master.ref.txt" in boot.source
    pcfg = m.find("NV_PCFG")
    assert (pcfg.offset, pcfg.end, pcfg.category) == (0x88000, 0x89000, "config-mirror")
    prom = m.find("NV_PROM_DATA")
    assert (prom.offset, prom.size, prom.category) == (0x300000, 1 << 20, "firmware")
    # The SPI controller's offsets are TU104's: the map must say so.
    spi = [m.find(n) for n in ("NV_PMGR_SPI_DATA_ARRAY", "NV_PMGR_SPI_CTRL", "NV_PMGR_SPI_CONFIG")]
    assert [(r.offset, r.size) for r in spi] == [(0xE4A0, 0x100), (0xE5A0, 4), (0xE5A4, 0x10)]
    assert all(not r.confirmed and "TU104" in r.note for r in spi)
    assert set(spi) <= set(m.unconfirmed())
    di = m.device_info
    assert di is not None
    assert (di.format, di.base, di.entries, di.ioctrl_type) == ("gv100", 0x22700, 64, 18)
    assert not di.unit_size_provenance.confirmed


def test_gh100_facts() -> None:
    m = load_map("gh100")
    for dev in (0x2330, 0x2331, 0x2321, 0x2339):
        assert m.matches(0x10DE, dev)
    assert not m.matches(0x10DE, 0x1DB1)
    mirror = m.find("NV_EP_PCFGM")
    assert (mirror.offset, mirror.end, mirror.category) == (0x92000, 0x93000, "config-mirror")
    fsp = m.find("NV_PFSP")
    assert (fsp.offset, fsp.end, fsp.category) == (0x8F0000, 0x8F4000, "firmware")
    # 8 ports, stride 8, inside the FSP range
    for name, first in (("NV_PFSP_EMEM", 0x8F2AC0), ("NV_PFSP_QUEUE", 0x8F2C00)):
        r = m.find(name)
        assert (r.offset, r.size) == (first, 64)
        assert fsp.offset <= r.offset and r.end <= fsp.end
    assert m.find("NV_PFSP_MSGQ_TAIL_0").offset == 0x8F2C84
    assert m.find("NV_PFSP_EMEMC_0").field("AINCW").mask == 1 << 24
    di = m.device_info
    assert di is not None
    # NUM_ROWS is read up to 353 rows (the format's largest array: OGKM gb100/dev_top.h);
    # GH100's own array is 134 (gpu-admin-tools gh100/top.py)
    assert (di.format, di.base, di.entries, di.rows, di.config, di.version) == (
        "gh100",
        0x22800,
        353,
        134,
        0x224FC,
        2,
    )
    assert di.ioctrl_type == 18 and not di.ioctrl_type_provenance.confirmed


def test_lookups_refuse_unknown_names(shipped: RegisterMap) -> None:
    with pytest.raises(KeyError, match="NOPE"):
        shipped.find("NOPE")
    with pytest.raises(ValueError, match="unknown category 'nvlinks'"):
        shipped.regions_in("nvlinks")
    with pytest.raises(KeyError):
        shipped.bar(5)
    with pytest.raises(KeyError):
        shipped.regions[0].field("NOPE")


def test_load_map_refuses_unknown_and_malformed_families() -> None:
    with pytest.raises(MapError, match=r"no register map for family 'gx999'.*gh100, gv100"):
        load_map("gx999")
    with pytest.raises(MapError, match="not a valid family name"):
        load_map("../gv100")


# --- the loader's errors ---------------------------------------------------------------------


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return hex(v) if v >= 0 else str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml(x)}" for k, x in v.items()) + " }"
    raise TypeError(v)


def dump(doc: dict[str, Any]) -> str:
    """Enough TOML for these tests: scalars, arrays of tables, one table of inline tables."""
    out = []
    for key, v in doc.items():
        if isinstance(v, list):
            for entry in v:
                out.append(f"[[{key}]]")
                out += [f"{k} = {_toml(x)}" for k, x in entry.items()]
        elif isinstance(v, dict):
            out.append(f"[{key}]")
            out += [f"{k} = {_toml(x)}" for k, x in v.items()]
        else:
            out.insert(0, f"{key} = {_toml(v)}")
    return "\n".join(out) + "\n"


SRC = {"source": "a public document", "confirmed": True}

GOOD: dict[str, Any] = {
    "family": "test",
    "title": "A test map",
    "device": [{"vendor": 0x10DE, "device": 0x1234, **SRC}],
    "bar": [{"index": 0, "size": 0x1000000, **SRC}],
    "block": [
        {"name": "B", "bar": 0, "offset": 0x88000, "size": 0x1000, "category": "firmware", **SRC}
    ],
    "register": [
        {
            "name": "R",
            "bar": 0,
            "offset": 0x200,
            "size": 4,
            "category": "nvlink",
            **SRC,
            "bits": {"NVLINK": "25", "LINKS": "21:16"},
            "values": {"ISOLATED": 4},
        }
    ],
    "device_info": {
        "format": "gv100",
        "base": 0x22700,
        "entries": 64,
        **SRC,
        "ioctrl_type": {"value": 18, **SRC},
        "unit_size": {"value": 0x1000, "confirmed": False, "source": "x", "note": "why"},
    },
}


def test_the_base_map_is_valid() -> None:
    m = parse_map(dump(GOOD), "test.toml")
    assert m.find("R").field("LINKS").mask == 0x3F0000
    assert m.device_info is not None and m.device_info.unit_size == 0x1000


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    """Set (or with value None, delete) a dotted path like "block.0.offset"."""
    *parents, last = path.split(".")
    node: Any = doc
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if value is None:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


GH100_INFO = {
    "format": "gh100",
    "base": 0x22800,
    "entries": 134,
    "config": 0x224FC,
    "version": 2,
    **SRC,
    "ioctrl_type": {"value": 18, **SRC},
    "unit_size": {"value": 0x40000, **SRC},
}

ERRORS = [
    # (what is wrong, dotted path, new value (None: delete), message pattern)
    ("unknown top key", "famly", "x", r"top level: unknown field 'famly'"),
    ("unknown region key", "block.0.ofset", 1, r"block #0 \('B'\): unknown field 'ofset'"),
    ("missing field", "register.0.source", None, r"register #0 \('R'\): missing field 'source'"),
    ("offset not an int", "block.0.offset", "0x10", r"block #0 \('B'\): field 'offset' must be"),
    ("bool for an int", "block.0.size", True, r"field 'size' must be an integer, not True"),
    ("negative offset", "block.0.offset", -4, r"field 'offset' = -0x4 is outside"),
    ("offset past 2**64", "block.0.offset", 2**64, r"field 'offset' = 0x10000000000000000"),
    ("outside the BAR", "block.0.offset", 0xFFF800, r"\[0xfff800, 0x1000800\) lies outside BAR0"),
    ("overflowing end", "block.0.offset", 2**64 - 16, r"block #0 \('B'\): .* lies outside BAR0"),
    ("BAR index 6", "bar.0.index", 6, r"bar #0: field 'index' = 0x6 is outside 0x0\.\.0x5"),
    ("undeclared BAR", "block.0.bar", 2, r"block #0 \('B'\): BAR2 is not declared"),
    ("unknown category", "block.0.category", "nvlinks", r"unknown category 'nvlinks'"),
    ("unconfirmed, no note", "block.0.confirmed", False, r"confirmed = false needs a 'note'"),
    ("confirmed not bool", "block.0.confirmed", "yes", r"'confirmed' must be true or false"),
    ("empty source", "block.0.source", " ", r"field 'source' must be a non-empty string"),
    ("register size 3", "register.0.size", 3, r"register #0 \('R'\): .* must be 1, 2, 4 or 8"),
    ("bits too high", "register.0.bits", {"X": "32"}, r"bits\.X = '32' does not fit a 4-byte"),
    ("bits reversed", "register.0.bits", {"X": "3:7"}, r"bits\.X = '3:7' does not fit"),
    ("bits malformed", "register.0.bits", {"X": "a:b"}, r"bits\.X = 'a:b': expected"),
    ("value too wide", "register.0.values", {"V": 2**32}, r"values\.V = 4294967296 is not"),
    ("bits on a block", "block.0.bits", {"X": "1"}, r"block #0 \('B'\): unknown field 'bits'"),
    ("vendor too big", "device.0.vendor", 0x10000, r"device #0: field 'vendor' = 0x10000"),
    ("bad name", "block.0.name", "two\nlines", r"name 'two\\nlines' must be printable ASCII"),
    ("reserved name", "block.0.name", "(x)", r"not starting with '\('"),
    ("long name", "block.0.name", "N" * 64, r"is longer than 63 bytes"),
    ("bad family", "family", "GV100", r"top level: family 'GV100' must be lower-case"),
    ("no devices", "device", None, r"top level: missing \[\[device\]\] entries"),
    ("devinfo format", "device_info.format", "gk104", r"device_info: unknown format 'gk104'"),
    ("devinfo misaligned", "device_info.base", 0x22702, r"device_info: field 'base' = 0x22702"),
    ("devinfo overrun", "device_info.base", 0xFFFF04, r"device_info: the table .* overruns BAR0"),
    ("devinfo entries", "device_info.entries", 0, r"device_info: field 'entries' = 0x0"),
    ("gv100 has no CFG", "device_info.config", 0x224FC, r"device_info: unknown field 'config'"),
    (
        "fact without note",
        "device_info.unit_size",
        {"value": 0x1000, "source": "x", "confirmed": False},
        r"device_info\.unit_size: confirmed = false needs a 'note'",
    ),
    (
        "type too wide",
        "device_info.ioctrl_type",
        {"value": 1 << 29, **SRC},
        r"device_info\.ioctrl_type: field 'value' = 0x20000000 is outside",
    ),
    (
        "gh100 without config",
        "device_info",
        {k: v for k, v in GH100_INFO.items() if k != "config"},
        r"device_info: missing field 'config'",
    ),
    (
        "gh100 type enum is 7 bits",
        "device_info",
        {**GH100_INFO, "ioctrl_type": {"value": 128, **SRC}},
        r"device_info\.ioctrl_type: field 'value' = 0x80",
    ),
]


@pytest.mark.parametrize(("why", "path", "value", "pattern"), ERRORS, ids=[e[0] for e in ERRORS])
def test_map_errors(why: str, path: str, value: Any, pattern: str) -> None:
    doc = copy.deepcopy(GOOD)
    _set(doc, path, value)
    with pytest.raises(MapError, match=r"^test\.toml: ") as info:
        parse_map(dump(doc), "test.toml")
    assert re.search(pattern, str(info.value)), str(info.value)


def test_gh100_device_info_parses() -> None:
    doc = copy.deepcopy(GOOD)
    doc["device_info"] = copy.deepcopy(GH100_INFO)
    m = parse_map(dump(doc), "test.toml")
    assert m.device_info is not None and m.device_info.config == 0x224FC


def test_duplicates_are_refused() -> None:
    doc = copy.deepcopy(GOOD)
    doc["register"].append({**doc["register"][0], "offset": 0x300})
    with pytest.raises(MapError, match=r"register #1 \('R'\): name 'R' is already used by"):
        parse_map(dump(doc), "t")
    doc = copy.deepcopy(GOOD)
    doc["register"][0]["name"] = "B"  # names are unique across blocks and registers
    with pytest.raises(MapError, match=r"name 'B' is already used by block #0"):
        parse_map(dump(doc), "t")
    doc = copy.deepcopy(GOOD)
    doc["device"].append(dict(doc["device"][0]))
    with pytest.raises(MapError, match=r"device #1: 10de:1234 is listed by device #0 too"):
        parse_map(dump(doc), "t")
    doc = copy.deepcopy(GOOD)
    doc["bar"].append(dict(doc["bar"][0]))
    with pytest.raises(MapError, match=r"bar #1: BAR0 is declared twice"):
        parse_map(dump(doc), "t")


def test_overlapping_regions_are_fine() -> None:
    # A register inside a block is how a map describes an array and its first element.
    doc = copy.deepcopy(GOOD)
    doc["register"][0]["offset"] = 0x88004
    assert parse_map(dump(doc), "t").find("R").offset == 0x88004


def test_not_toml_and_wrong_shapes() -> None:
    with pytest.raises(MapError, match=r"^t: not valid TOML"):
        parse_map("family = ", "t")
    with pytest.raises(MapError, match=r"'device' must be an array of tables \(\[\[device\]\]\)"):
        parse_map('family = "t"\ntitle = "t"\ndevice = 3\n', "t")
    with pytest.raises(MapError, match=r"top level: needs at least one \[\[device\]\]"):
        parse_map('family = "t"\ntitle = "t"\ndevice = []\n', "t")
    with pytest.raises(MapError, match=r"device_info: must be a table"):
        no_info = {k: v for k, v in GOOD.items() if k != "device_info"}
        parse_map("device_info = 1\n" + dump(no_info), "t")


def test_device_info_spec_checks_itself() -> None:
    with pytest.raises(ValueError, match="needs a 4-aligned config offset"):
        DeviceInfoSpec("gh100", 0x22800, 134, 18, 0x40000)
    with pytest.raises(ValueError, match="config and version belong to the gh100 format"):
        DeviceInfoSpec("gv100", 0x22700, 64, 18, 0x1000, config=0x224FC)
    with pytest.raises(ValueError, match="entries 0"):
        DeviceInfoSpec("gv100", 0x22700, 0, 18, 0x1000)
    with pytest.raises(ValueError, match="format 'gx'"):
        DeviceInfoSpec("gx", 0x22700, 64, 18, 0x1000)
