"""Config space from where admins have it: `lspci -x` text dumps and a device's sysfs files.

`lspci -x`, `-xxx` and `-xxxx` print 64, 256 and 4096 bytes of config space, 16 to a line as
`OFF: b0 b1 ... b15` (pciutils lspci.c, show_hex_dump: `"%02x:"` then `" %02x"` per byte), after
a line naming the device (`65:00.0 3D controller: ...`). Unprivileged, lspci reads what sysfs
gives, 64 bytes, whatever the number of x.

A sysfs device directory (/sys/bus/pci/devices/DDDD:BB:DD.F) has `config` (the dump) and
`resource`, one `start end flags` line per resource with the BARs first (pci-sysfs.c
resource_show): the BAR sizes a dump cannot tell. Reading them never touches the device's BARs.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .pciconfig import (
    CFG_SIZE,
    DUMP_SIZES,
    EXP_CFG_SIZE,
    HEADER_SIZE,
    ConfigError,
    ConfigSpace,
    parse_config,
    parse_resource,
)

SYSFS_DEVICES = "/sys/bus/pci/devices"
_HEX_LINE = re.compile(r"^([0-9a-fA-F]{2,3}):((?: [0-9a-fA-F]{2}){1,64})\s*$")
_DEVICE_LINE = re.compile(r"^((?:[0-9a-fA-F]{4,8}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7])\s")
#: A full PCI address, as sysfs names a device (DDDD:BB:DD.F).
BDF = re.compile(r"^[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$")
_ADDRESS = re.compile(r"^(?:([0-9a-fA-F]{4}):)?([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])$")

#: Why a 64-byte dump cannot locate MSI-X, said where one is refused.
HEADER_ONLY = (
    "64 bytes is the header only: MSI-X is a capability, reached through the list that starts "
    "at the pointer at 0x34 and lies in 0x40..0xff, which a 64-byte dump does not hold, so "
    "where the MSI-X table is (or whether there is one) cannot be known. Run `lspci -xxx` "
    "(or -xxxx) as root: unprivileged, lspci and sysfs give 64 bytes only"
)


def looks_like_lspci(data: bytes) -> bool:
    """Text whose first hex-dump line is `00: ..`: an lspci dump rather than binary config."""
    try:
        text = data[:4096].decode("ascii")
    except UnicodeDecodeError:
        return False
    return any(_HEX_LINE.match(line) and line.startswith("00:") for line in text.splitlines())


def parse_lspci(text: str, where: str = "<lspci>") -> bytes:
    """The config bytes of one device's `lspci -x`/`-xxx`/`-xxxx` dump; ConfigError otherwise."""
    devices: list[str] = []
    data = bytearray()
    for n, line in enumerate(text.splitlines(), 1):
        m = _DEVICE_LINE.match(line)
        if m:
            devices.append(m.group(1))
            if len(devices) > 1:
                raise ConfigError(
                    f"{where}:{n}: dumps of {len(devices)} devices ({', '.join(devices)}); give "
                    "one (lspci -s ADDRESS -xxx)"
                )
            continue
        h = _HEX_LINE.match(line)
        if not h:
            if line.strip() and data:
                raise ConfigError(f"{where}:{n}: not a line of an lspci hex dump: {line[:60]!r}")
            continue
        off = int(h.group(1), 16)
        if off != len(data):
            raise ConfigError(
                f"{where}:{n}: offset {off:#x} where {len(data):#x} was expected (one device "
                "per file: lspci -s ADDRESS -xxx)"
            )
        row = bytes(int(b, 16) for b in h.group(2).split())
        if len(row) != 16:
            raise ConfigError(f"{where}:{n}: {len(row)} bytes on a line, lspci prints 16")
        data += row
    if not data:
        raise ConfigError(f"{where}: no lspci hex dump (lines `00: de 10 ...`) in it")
    if len(data) == HEADER_SIZE:
        raise ConfigError(f"{where}: an `lspci -x` dump: {HEADER_ONLY}")
    if len(data) not in DUMP_SIZES:
        raise ConfigError(
            f"{where}: {len(data)} bytes; lspci prints {CFG_SIZE} (-xxx) or {EXP_CFG_SIZE} (-xxxx)"
        )
    return bytes(data)


def load_config_any(path: str | os.PathLike[str]) -> ConfigSpace:
    """A binary dump (sysfs `config`) or an lspci text dump, told apart by content."""
    where = os.fspath(path)
    with open(path, "rb") as f:
        raw = f.read(64 * 1024 + 1)  # the longest lspci -xxxx text is ~12 KiB
    if looks_like_lspci(raw):
        return parse_config(parse_lspci(raw.decode("ascii"), where), where)
    return parse_config(raw[: EXP_CFG_SIZE + 1], where)


def normalize_address(text: str) -> str:
    """`0000:65:00.0` from `65:00.0` or `0000:65:00.0`; ValueError for anything else."""
    m = _ADDRESS.match(text.strip())
    if not m:
        raise ValueError(
            f"{text!r} is not a PCI address (DDDD:BB:DD.F, e.g. 0000:65:00.0, or BB:DD.F)"
        )
    domain, bus, dev, fn = m.groups()
    return f"{(domain or '0000').lower()}:{bus.lower()}:{dev.lower()}.{fn}"


@dataclass(frozen=True)
class SysfsDevice:
    """One PCI function as sysfs describes it: its config space and BAR sizes."""

    address: str
    path: str
    config: ConfigSpace
    bar_sizes: dict[int, int] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.address


def read_sysfs_device(address: str, root: str | os.PathLike[str] = SYSFS_DEVICES) -> SysfsDevice:
    """Read `config` and `resource` of the device at `address` under `root`."""
    addr = normalize_address(address)
    path = Path(root) / addr
    if not path.is_dir():
        known = sorted(p.name for p in Path(root).iterdir()) if Path(root).is_dir() else []
        hint = f" (devices here: {', '.join(known[:8])}{', ...' if len(known) > 8 else ''})"
        raise ConfigError(f"{path}: no such PCI device{hint if known else ''}")
    config = parse_config((path / "config").read_bytes()[: EXP_CFG_SIZE + 1], str(path / "config"))
    sizes = parse_resource((path / "resource").read_text(), str(path / "resource"))
    return SysfsDevice(addr, str(path), config, sizes)
