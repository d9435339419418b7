"""Build device-info tables, for tests and simulated BARs: the inverse of `devinfo`.

A unit is `(type_enum, base)` or `(type_enum, base, instance)`. The tables are what real
hardware would hold (see the formats in `devinfo`), so a simulated GV100 or GH100 BAR0 can place
NVLink units where a test wants them:

    words = table_words(load_map("gv100").device_info, [(18, 0xA00000)])
    for offset, word in words.items():
        bar0[offset : offset + 4] = word.to_bytes(4, "little")
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from .devinfo import (
    CHAIN,
    DATA,
    ENGINE_TYPE,
    ENUM,
    GH100_INST_MASK,
    GH100_INST_SHIFT,
    GH100_PRI_BASE_MASK,
    GH100_TYPE_MASK,
    GH100_TYPE_SHIFT,
    GV100_INST_MASK,
    GV100_INST_SHIFT,
    GV100_PRI_BASE_MASK,
    GV100_TYPE_MASK,
    GV100_TYPE_SHIFT,
)
from .regmap import DeviceInfoSpec

UnitSpec = tuple[int, int] | tuple[int, int, int]

#: GH100's CFG values (gpu-admin-tools gpu/regs/gh100/top.py *_INIT): VERSION, MAX_DEVICES,
#: MAX_ROWS_PER_DEVICE.
GH100_VERSION, GH100_MAX_DEVICES, GH100_MAX_ROWS_PER_DEVICE = 2, 49, 3


def _split(u: UnitSpec) -> tuple[int, int, int]:
    if len(u) == 2:
        return u[0], u[1], 0
    return u[0], u[1], u[2]


def _check(what: str, value: int, mask: int) -> None:
    if value < 0 or value & ~mask:
        raise ValueError(f"{what} {value:#x} does not fit the field (mask {mask:#x})")


def encode_gv100(units: Sequence[UnitSpec], *, entries: int = 64) -> list[int]:
    """A GV100 NV_PTOP_DEVICE_INFO table of `entries` words: per unit an ENUM, a DATA and an
    ENGINE_TYPE entry, chained; unused entries NOT_VALID (0)."""
    words: list[int] = []
    for u in units:
        type_enum, base, instance = _split(u)
        _check("type_enum", type_enum, GV100_TYPE_MASK)
        _check("base", base, GV100_PRI_BASE_MASK)
        _check("instance", instance, GV100_INST_MASK)
        words += [
            CHAIN | ENUM,  # no engine, runlist, interrupt or reset: all their VALID bits clear
            CHAIN | (instance << GV100_INST_SHIFT) | base | DATA,
            (type_enum << GV100_TYPE_SHIFT) | ENGINE_TYPE,
        ]
    if len(words) > entries:
        raise ValueError(f"{len(units)} units need {len(words)} entries; the table has {entries}")
    return words + [0] * (entries - len(words))


def encode_gh100(
    units: Sequence[UnitSpec],
    *,
    entries: int = 134,
    num_rows: int | None = None,
    version: int = GH100_VERSION,
    max_devices: int = GH100_MAX_DEVICES,
    max_rows_per_device: int = GH100_MAX_ROWS_PER_DEVICE,
) -> tuple[int, list[int]]:
    """A GH100 table: `(cfg, rows)`, the NV_PTOP_DEVICE_INFO_CFG word and `entries` rows of
    NV_PTOP_DEVICE_INFO2. Each unit takes three chained rows; NUM_ROWS defaults to `entries`."""
    rows: list[int] = []
    for u in units:
        type_enum, base, instance = _split(u)
        _check("type_enum", type_enum, GH100_TYPE_MASK)
        _check("base", base, GH100_PRI_BASE_MASK)
        _check("instance", instance, GH100_INST_MASK)
        rows += [
            CHAIN | (type_enum << GH100_TYPE_SHIFT) | (instance << GH100_INST_SHIFT),
            CHAIN | base,
            0,  # runlist engine id and runlist base: none
        ]
    if len(rows) > entries:
        raise ValueError(f"{len(units)} units need {len(rows)} rows; the table has {entries}")
    num_rows = entries if num_rows is None else num_rows
    for what, v, bits in (
        ("version", version, 4),
        ("max_devices", max_devices, 12),
        ("max_rows_per_device", max_rows_per_device, 4),
        ("num_rows", num_rows, 12),
    ):
        _check(what, v, (1 << bits) - 1)
    cfg = (num_rows << 20) | (max_rows_per_device << 16) | (max_devices << 4) | version
    return cfg, rows + [0] * (entries - len(rows))


def table_words(spec: DeviceInfoSpec, units: Sequence[UnitSpec]) -> dict[int, int]:
    """The table `spec` describes, holding `units`, as {BAR0 offset: 32-bit word}."""
    if spec.format == "gv100":
        table = encode_gv100(units, entries=spec.entries)
        return {spec.base + 4 * i: w for i, w in enumerate(table)}
    if spec.config is None:  # DeviceInfoSpec refuses this; a check that survives -O
        raise ValueError("device_info: the gh100 format needs a config offset")
    version = GH100_VERSION if spec.version is None else spec.version
    cfg, table = encode_gh100(units, entries=spec.entries, version=version)
    words = {spec.base + 4 * i: w for i, w in enumerate(table)}
    words[spec.config] = cfg
    return words


def words_reader(words: Mapping[int, int], default: int = 0) -> Callable[[int], int]:
    """A `read32` over {offset: word}; offsets not in `words` read `default`."""
    return lambda offset: words.get(offset, default)
