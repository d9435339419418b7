"""Register maps: a device family's public register facts as data (docs/admin-guide.md).

A map is a TOML file in `maps/`, one per family. Top level: `family`, `title`, then arrays of
tables `[[device]]` (PCI IDs), `[[bar]]`, `[[block]]` (a range: a register array, a window, a
unit) and `[[register]]` (one register, with optional named `bits` and `values`), and an
optional `[device_info]` saying how to discover NVLink units at run time. Every fact names the
public document it comes from in `source` and says `confirmed = true | false`; an unconfirmed
fact (carried over from another chip, or derived) must say why in `note`.

The loader is strict on purpose: an unknown key is a typo, and a typo in a map is a protection
silently dropped, so every error names the file, the entry and the field.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from ..errors import shown
from ..rules import MAX_NAME_BYTES, NUM_BARS, U64_MAX

CATEGORIES: tuple[str, ...] = (
    "nvlink",
    "firmware",
    "config-mirror",
    "msix",
    "device-info",
    "other",
)
KINDS: tuple[str, ...] = ("block", "register")
DEVINFO_FORMATS: tuple[str, ...] = ("gv100", "gh100")
REGISTER_SIZES: tuple[int, ...] = (1, 2, 4, 8)
#: NUM_ROWS of the GH100 CFG register is 12 bits wide; no table format holds more rows.
MAX_TABLE_ENTRIES = 0xFFF
#: Widest type enum per table format: TYPE_ENUM 30:2 (gv100), DEV_TYPE_ENUM 30:24 (gh100).
TYPE_ENUM_BITS: Mapping[str, int] = {"gv100": 29, "gh100": 7}

_FAMILY_OK = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
# Region names become rule names, so they follow rules.py's name rules.
_NAME_OK = re.compile(r"^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$")
_IDENT_OK = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_BITS_OK = re.compile(r"^(\d{1,3})(?::(\d{1,3}))?$")  # bit numbers: 3 digits is plenty


class MapError(ValueError):
    """A register map that cannot be used: the message names the file, entry and field."""


@dataclass(frozen=True)
class DeviceId:
    """A PCI vendor:device ID the map applies to."""

    vendor: int
    device: int
    name: str | None
    source: str
    confirmed: bool
    note: str = ""


@dataclass(frozen=True)
class Bar:
    """The expected size of one BAR."""

    index: int
    size: int
    source: str
    confirmed: bool
    note: str = ""


@dataclass(frozen=True)
class Field:
    """A named bit field `hi:lo` of a register."""

    name: str
    hi: int
    lo: int

    @property
    def mask(self) -> int:
        return ((1 << (self.hi - self.lo + 1)) - 1) << self.lo


@dataclass(frozen=True)
class Region:
    """A block or a register: `[offset, offset+size)` of one BAR, with its provenance."""

    kind: str
    name: str
    bar: int
    offset: int
    size: int
    category: str
    source: str
    confirmed: bool
    note: str = ""
    fields: tuple[Field, ...] = ()
    values: tuple[tuple[str, int], ...] = ()

    @property
    def end(self) -> int:
        return self.offset + self.size

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.kind} {self.name!r} has no field {name!r}")

    def value(self, name: str) -> int:
        for n, v in self.values:
            if n == name:
                return v
        raise KeyError(f"{self.kind} {self.name!r} has no value {name!r}")


@dataclass(frozen=True)
class Provenance:
    """Where one fact comes from."""

    source: str
    confirmed: bool
    note: str = ""


#: For specs built in code (tests, tools) rather than read from a map.
UNSOURCED = Provenance("", False, "built in code, not read from a map")


@dataclass(frozen=True)
class DeviceInfoSpec:
    """How to walk a GPU's device-info table (always in BAR0) and size the units it lists.

    `entries` is the most rows the table holds (in the GH100 format, the bound on the NUM_ROWS
    the CFG register reports); `config` and `version` are the GH100 format's
    NV_PTOP_DEVICE_INFO_CFG offset and expected VERSION field. `rows` (GH100 format, optional)
    is the array the chip's own header documents: rows past NUM_ROWS and below it must be empty
    (None: up to `entries`). `unit_size` is the extent given to units of type `ioctrl_type`.
    """

    format: str
    base: int
    entries: int
    ioctrl_type: int
    unit_size: int
    config: int | None = None
    version: int | None = None
    provenance: Provenance = UNSOURCED
    rows: int | None = field(default=None, kw_only=True)
    ioctrl_type_provenance: Provenance = UNSOURCED
    unit_size_provenance: Provenance = UNSOURCED

    def __post_init__(self) -> None:
        # The walker trusts these; a spec built in code gets the same checks as a map's.
        if self.format not in DEVINFO_FORMATS:
            raise ValueError(f"device_info: format {self.format!r} is not one of {DEVINFO_FORMATS}")
        for name in ("base", "entries", "ioctrl_type", "unit_size"):
            if not _is_int(getattr(self, name)):
                raise ValueError(f"device_info: {name} must be an integer")
        if self.base < 0 or self.base % 4 or self.base > U64_MAX:
            raise ValueError(f"device_info: base {self.base:#x} is not a 4-aligned offset")
        if not 1 <= self.entries <= MAX_TABLE_ENTRIES:
            raise ValueError(
                f"device_info: entries {self.entries} is outside 1..{MAX_TABLE_ENTRIES}"
            )
        if not 0 <= self.ioctrl_type < 1 << TYPE_ENUM_BITS[self.format]:
            raise ValueError(f"device_info: ioctrl_type {self.ioctrl_type} does not fit the format")
        if not 1 <= self.unit_size <= U64_MAX:
            raise ValueError(f"device_info: unit_size {self.unit_size} is not a positive size")
        if self.format == "gh100":
            if (
                self.config is None
                or not _is_int(self.config)
                or self.config < 0
                or self.config % 4
            ):
                raise ValueError("device_info: the gh100 format needs a 4-aligned config offset")
            if self.version is not None and not (_is_int(self.version) and 0 <= self.version <= 15):
                raise ValueError("device_info: version must be 0..15")
            rows_ok = self.rows is None or (_is_int(self.rows) and 1 <= self.rows <= self.entries)
            if not rows_ok:
                raise ValueError(f"device_info: rows must be 1..entries ({self.entries})")
        elif self.config is not None or self.version is not None or self.rows is not None:
            raise ValueError(
                "device_info: config and version belong to the gh100 format only (rows too)"
            )

    @property
    def table_end(self) -> int:
        return self.base + 4 * self.entries

    @property
    def empty_rows_end(self) -> int:
        """Rows past NUM_ROWS and below this are checked empty."""
        return self.entries if self.rows is None else self.rows


@dataclass(frozen=True)
class RegisterMap:
    """One device family's register facts."""

    family: str
    title: str
    devices: tuple[DeviceId, ...]
    bars: tuple[Bar, ...]
    regions: tuple[Region, ...]
    device_info: DeviceInfoSpec | None = None
    where: str = ""

    def bar(self, index: int) -> Bar:
        for b in self.bars:
            if b.index == index:
                return b
        raise KeyError(f"{self.family}: no BAR{index} in the map")

    def regions_in(self, category: str) -> tuple[Region, ...]:
        """The regions of one category, in map order (blocks first, then registers)."""
        if category not in CATEGORIES:
            # A misspelt category would otherwise select nothing, and protect nothing.
            raise ValueError(f"unknown category {category!r} (one of: {', '.join(CATEGORIES)})")
        return tuple(r for r in self.regions if r.category == category)

    def find(self, name: str) -> Region:
        for r in self.regions:
            if r.name == name:
                return r
        raise KeyError(f"{self.family}: no block or register named {name!r}")

    def matches(self, vendor: int, device: int) -> bool:
        return any(d.vendor == vendor and d.device == device for d in self.devices)

    def unconfirmed(self) -> tuple[Region, ...]:
        """Regions whose facts are not confirmed for this family (the admin should know)."""
        return tuple(r for r in self.regions if not r.confirmed)


# --- loading ---------------------------------------------------------------------------------


_PACKAGE = __name__.rpartition(".")[0]


def available_maps() -> list[str]:
    """The families with a map shipped in the package."""
    folder = resources.files(_PACKAGE).joinpath("maps")
    return sorted(
        p.name[: -len(".toml")]
        for p in folder.iterdir()
        if p.name.endswith(".toml") and p.is_file()
    )


def load_map(family: str) -> RegisterMap:
    """Load and validate the shipped map of `family` (e.g. "gv100")."""
    if not isinstance(family, str) or not _FAMILY_OK.match(family):
        # Also keeps a family name from walking out of the maps folder.
        raise MapError(f"register map family {family!r} is not a valid family name")
    path = resources.files(_PACKAGE).joinpath("maps", f"{family}.toml")
    if not path.is_file():
        raise MapError(
            f"no register map for family {family!r} (available: {', '.join(available_maps())})"
        )
    where = f"maps/{family}.toml"
    m = parse_map(path.read_text(encoding="utf-8"), where)
    if m.family != family:
        raise MapError(f"{where}: family is {m.family!r}, but the file is named for {family!r}")
    return m


def parse_map(text: str, where: str) -> RegisterMap:
    """Parse and validate a map's TOML text; `where` names it in error messages."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MapError(f"{where}: not valid TOML: {exc}") from exc
    except ValueError as exc:  # an integer of thousands of digits (int_max_str_digits)
        raise MapError(f"{where}: not valid TOML: {exc}") from None
    except RecursionError:
        raise MapError(f"{where}: not valid TOML: nested too deeply") from None
    return _Parser(where).parse(doc)


# --- validation ------------------------------------------------------------------------------


def _is_int(v: object) -> bool:
    # bool is an int in Python; `offset = true` is a mistake, not 1.
    return isinstance(v, int) and not isinstance(v, bool)


def _label(kind: str, i: int, entry: Mapping[str, Any]) -> str:
    name = entry.get("name")
    return f"{kind} #{i} ({name!r})" if isinstance(name, str) else f"{kind} #{i}"


class _Parser:
    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, ctx: str, msg: str) -> MapError:
        return MapError(f"{self.where}: {ctx}: {msg}")

    # field readers: each names the entry and the field it rejects

    def keys(
        self,
        ctx: str,
        table: Mapping[str, Any],
        required: tuple[str, ...],
        optional: tuple[str, ...],
    ) -> None:
        for key in table:
            if key not in required and key not in optional:
                allowed = ", ".join((*required, *optional))
                raise self.fail(ctx, f"unknown field {key!r} (allowed: {allowed})")
        for key in required:
            if key not in table:
                raise self.fail(ctx, f"missing field {key!r}")

    def int_(self, ctx: str, table: Mapping[str, Any], key: str, lo: int, hi: int) -> int:
        v = table[key]
        if not _is_int(v):
            raise self.fail(ctx, f"field {key!r} must be an integer, not {shown(v)}")
        if not lo <= v <= hi:
            raise self.fail(ctx, f"field {key!r} = {v:#x} is outside {lo:#x}..{hi:#x}")
        return int(v)

    def str_(self, ctx: str, table: Mapping[str, Any], key: str) -> str:
        v = table[key]
        if not isinstance(v, str) or not v.strip():
            raise self.fail(ctx, f"field {key!r} must be a non-empty string, not {shown(v)}")
        return v

    def provenance(self, ctx: str, table: Mapping[str, Any]) -> Provenance:
        source = self.str_(ctx, table, "source")
        confirmed = table["confirmed"]
        if not isinstance(confirmed, bool):
            raise self.fail(ctx, f"field 'confirmed' must be true or false, not {shown(confirmed)}")
        note = self.str_(ctx, table, "note") if "note" in table else ""
        if not confirmed and not note:
            raise self.fail(ctx, "confirmed = false needs a 'note' saying why (e.g. which chip)")
        return Provenance(source, confirmed, note)

    def array(self, doc: Mapping[str, Any], key: str, *, required: bool) -> list[Mapping[str, Any]]:
        v = doc.get(key)
        if v is None:
            if required:
                raise self.fail("top level", f"missing [[{key}]] entries")
            return []
        if not isinstance(v, list) or not all(isinstance(e, dict) for e in v):
            raise self.fail("top level", f"{key!r} must be an array of tables ([[{key}]])")
        if required and not v:
            raise self.fail("top level", f"needs at least one [[{key}]]")
        return v

    # the map

    def parse(self, doc: Mapping[str, Any]) -> RegisterMap:
        top = ("family", "title")
        self.keys("top level", doc, top, ("device", "bar", "block", "register", "device_info"))
        family = self.str_("top level", doc, "family")
        if not _FAMILY_OK.match(family):
            raise self.fail("top level", f"family {family!r} must be lower-case [a-z0-9_-]")
        title = self.str_("top level", doc, "title")
        devices = self.devices(self.array(doc, "device", required=True))
        bars = self.bars(self.array(doc, "bar", required=True))
        bar_sizes = {b.index: b.size for b in bars}
        regions: list[Region] = []
        seen: dict[str, str] = {}
        for kind in KINDS:
            for i, entry in enumerate(self.array(doc, kind, required=False)):
                r = self.region(kind, i, entry, bar_sizes)
                if r.name in seen:
                    raise self.fail(
                        _label(kind, i, entry), f"name {r.name!r} is already used by {seen[r.name]}"
                    )
                seen[r.name] = _label(kind, i, entry)
                regions.append(r)
        device_info = None
        if "device_info" in doc:
            device_info = self.device_info(doc["device_info"], bar_sizes)
        return RegisterMap(
            family, title, tuple(devices), tuple(bars), tuple(regions), device_info, self.where
        )

    def devices(self, entries: list[Mapping[str, Any]]) -> list[DeviceId]:
        out: list[DeviceId] = []
        seen: dict[tuple[int, int], int] = {}
        for i, e in enumerate(entries):
            ctx = f"device #{i}"
            self.keys(ctx, e, ("vendor", "device", "source", "confirmed"), ("name", "note"))
            vendor = self.int_(ctx, e, "vendor", 0, 0xFFFF)
            device = self.int_(ctx, e, "device", 0, 0xFFFF)
            name = self.str_(ctx, e, "name") if "name" in e else None
            p = self.provenance(ctx, e)
            if (vendor, device) in seen:
                raise self.fail(
                    ctx,
                    f"{vendor:04x}:{device:04x} is listed by device #{seen[vendor, device]} too",
                )
            seen[vendor, device] = i
            out.append(DeviceId(vendor, device, name, p.source, p.confirmed, p.note))
        return out

    def bars(self, entries: list[Mapping[str, Any]]) -> list[Bar]:
        out: list[Bar] = []
        for i, e in enumerate(entries):
            ctx = f"bar #{i}"
            self.keys(ctx, e, ("index", "size", "source", "confirmed"), ("note",))
            index = self.int_(ctx, e, "index", 0, NUM_BARS - 1)
            size = self.int_(ctx, e, "size", 1, U64_MAX + 1)
            p = self.provenance(ctx, e)
            if any(b.index == index for b in out):
                raise self.fail(ctx, f"BAR{index} is declared twice")
            out.append(Bar(index, size, p.source, p.confirmed, p.note))
        return out

    def region(
        self, kind: str, i: int, e: Mapping[str, Any], bar_sizes: Mapping[int, int]
    ) -> Region:
        ctx = _label(kind, i, e)
        required = ("name", "bar", "offset", "size", "category", "source", "confirmed")
        optional = ("note", "bits", "values") if kind == "register" else ("note",)
        self.keys(ctx, e, required, optional)
        name = self.str_(ctx, e, "name")
        if not _NAME_OK.match(name) or name.startswith("("):
            raise self.fail(ctx, f"name {name!r} must be printable ASCII, not starting with '('")
        if len(name.encode()) > MAX_NAME_BYTES:
            raise self.fail(ctx, f"name {name!r} is longer than {MAX_NAME_BYTES} bytes")
        bar = self.int_(ctx, e, "bar", 0, NUM_BARS - 1)
        offset = self.int_(ctx, e, "offset", 0, U64_MAX)
        size = self.int_(ctx, e, "size", 1, U64_MAX + 1)
        if kind == "register" and size not in REGISTER_SIZES:
            raise self.fail(ctx, f"field 'size' of a register must be 1, 2, 4 or 8, not {size}")
        category = e["category"]
        if category not in CATEGORIES:
            raise self.fail(ctx, f"unknown category {category!r} (one of: {', '.join(CATEGORIES)})")
        p = self.provenance(ctx, e)
        if bar not in bar_sizes:
            raise self.fail(ctx, f"BAR{bar} is not declared in [[bar]]")
        if offset + size > bar_sizes[bar]:
            raise self.fail(
                ctx,
                f"[{offset:#x}, {offset + size:#x}) lies outside BAR{bar} of size "
                f"{bar_sizes[bar]:#x}",
            )
        fields = self.fields(ctx, e.get("bits", {}), size)
        values = self.values(ctx, e.get("values", {}), size)
        return Region(
            kind, name, bar, offset, size, category, p.source, p.confirmed, p.note, fields, values
        )

    def fields(self, ctx: str, bits: object, size: int) -> tuple[Field, ...]:
        if not isinstance(bits, dict):
            raise self.fail(ctx, f"field 'bits' must be a table of NAME = \"hi:lo\", not {bits!r}")
        out = []
        for fname, spec in bits.items():
            m = _BITS_OK.match(spec) if isinstance(spec, str) else None
            if not _IDENT_OK.match(fname) or m is None:
                raise self.fail(ctx, f'bits.{fname} = {spec!r}: expected NAME = "hi:lo" or "bit"')
            hi = int(m.group(1))
            lo = int(m.group(2)) if m.group(2) is not None else hi
            if lo > hi or hi >= 8 * size:
                raise self.fail(ctx, f"bits.{fname} = {spec!r} does not fit a {size}-byte register")
            out.append(Field(fname, hi, lo))
        return tuple(out)

    def values(self, ctx: str, values: object, size: int) -> tuple[tuple[str, int], ...]:
        if not isinstance(values, dict):
            raise self.fail(
                ctx, f"field 'values' must be a table of NAME = integer, not {values!r}"
            )
        out = []
        for vname, v in values.items():
            if not _IDENT_OK.match(vname) or not _is_int(v) or not 0 <= v < 1 << (8 * size):
                raise self.fail(
                    ctx, f"values.{vname} = {v!r} is not an integer that fits {size} byte(s)"
                )
            out.append((vname, int(v)))
        return tuple(out)

    def fact(self, ctx: str, table: object, lo: int, hi: int) -> tuple[int, Provenance]:
        if not isinstance(table, dict):
            raise self.fail(ctx, "must be a table with value, source, confirmed (and note)")
        self.keys(ctx, table, ("value", "source", "confirmed"), ("note",))
        return self.int_(ctx, table, "value", lo, hi), self.provenance(ctx, table)

    def device_info(self, t: object, bar_sizes: Mapping[int, int]) -> DeviceInfoSpec:
        ctx = "device_info"
        if not isinstance(t, dict):
            raise self.fail(ctx, "must be a table ([device_info])")
        if "format" not in t:
            raise self.fail(ctx, "missing field 'format'")
        fmt = t["format"]
        if fmt not in DEVINFO_FORMATS:
            raise self.fail(ctx, f"unknown format {fmt!r} (one of: {', '.join(DEVINFO_FORMATS)})")
        required: tuple[str, ...] = ("format", "base", "entries", "ioctrl_type", "unit_size")
        required += ("source", "confirmed")
        optional: tuple[str, ...] = ("note",)
        if fmt == "gh100":
            # The newer format says how many rows it holds in a CFG register, and its version.
            required += ("config", "version")
            optional += ("rows",)
        self.keys(ctx, t, required, optional)
        if 0 not in bar_sizes:
            raise self.fail(ctx, "the device-info table lives in BAR0, which is not declared")
        bar0 = bar_sizes[0]
        base = self.int_(ctx, t, "base", 0, bar0 - 4)
        entries = self.int_(ctx, t, "entries", 1, MAX_TABLE_ENTRIES)
        if base % 4:
            raise self.fail(ctx, f"field 'base' = {base:#x} is not 4-byte aligned")
        if base + 4 * entries > bar0:
            raise self.fail(ctx, f"the table [{base:#x}, {base + 4 * entries:#x}) overruns BAR0")
        config = version = None
        if fmt == "gh100":
            config = self.int_(ctx, t, "config", 0, bar0 - 4)
            if config % 4:
                raise self.fail(ctx, f"field 'config' = {config:#x} is not 4-byte aligned")
            version = self.int_(ctx, t, "version", 0, 15)
        rows = self.int_(ctx, t, "rows", 1, entries) if "rows" in t else None
        p = self.provenance(ctx, t)
        ioctrl_type, p_type = self.fact(
            f"{ctx}.ioctrl_type", t["ioctrl_type"], 0, (1 << TYPE_ENUM_BITS[fmt]) - 1
        )
        unit_size, p_size = self.fact(f"{ctx}.unit_size", t["unit_size"], 1, bar0)
        return DeviceInfoSpec(
            fmt,
            base,
            entries,
            ioctrl_type,
            unit_size,
            config,
            version,
            p,
            p_type,
            p_size,
            rows=rows,
        )
