#!/usr/bin/env python3
"""Write the libFuzzer dictionaries fuzz/dict/<harness>.dict from the project's own facts.

A dictionary gives the mutator tokens it would take long to build byte by byte: the register
offsets of the shipped maps (mmiofilter/devices/maps/), the NVDM types and PRC sub-messages of
the FSP mailbox (docs/fsp-guard.md), the keys of policy and register-map TOML. `fuzz/run` and
`.clusterfuzzlite/build.sh` pass them to the fuzzers (`-dict=`). Run this after a change to
any of those sources; tests/test_oss_fuzz_build.py fails while a dictionary is stale.

    python fuzz/make_dicts.py            # rewrite fuzz/dict/
    python fuzz/make_dicts.py --check    # exit 1, naming the stale files, if any differ
"""

from __future__ import annotations

import argparse
import struct
import sys
from collections.abc import Iterable
from pathlib import Path

from mmiofilter import guards, policy_toml, rules
from mmiofilter.devices import pciconfig, policyfile, regmap

DICT = Path(__file__).resolve().parent / "dict"

#: PRC (NVDM 0x13) sub-messages, payload byte 0 (the guard's names and codes, with their
#: sources in docs/fsp-guard.md), and the scopes gat sends in byte 1: NVIDIA gpu-admin-tools
#: nvidia_gpu_tools.py, FspRpc.prc_*.
PRC_SUBMESSAGES = guards.PRC_SUBMESSAGES
PRC_SCOPES = {"oneshot": 0x1, "knob": 0x2, "persistent": 0x3}
#: The MCTP header (fsp_mctp_format.h via docs/fsp-guard.md): SOM bit 31, EOM bit 30.
MCTP_SOM, MCTP_EOM = 1 << 31, 1 << 30


def _msg_header(nvdm: int) -> int:
    """Message header dword: type 0x7E in 6:0, vendor 0x10DE in 23:8, NVDM type in 31:24."""
    return 0x7E | 0x10DE << 8 | nvdm << 24


def escape(token: bytes) -> str:
    """libFuzzer's dictionary string syntax: printable ASCII as is, the rest as \\xNN."""
    out = []
    for b in token:
        c = chr(b)
        if c in '"\\':
            out.append("\\" + c)
        elif 0x20 <= b < 0x7F:
            out.append(c)
        else:
            out.append(f"\\x{b:02X}")
    return "".join(out)


def render(title: str, entries: Iterable[tuple[str, bytes]]) -> str:
    lines = [f"# {title}", "# Written by fuzz/make_dicts.py: edit that, not this file."]
    seen: set[bytes] = set()
    for name, token in entries:
        if token in seen or not token:
            continue
        seen.add(token)
        lines.append(f'{name}="{escape(token)}"')
    return "\n".join(lines) + "\n"


def _u32(v: int) -> bytes:
    return struct.pack("<I", v & 0xFFFFFFFF)


def _ident(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text)


def _regions() -> list[tuple[str, regmap.Region]]:
    return [
        (family, r) for family in regmap.available_maps() for r in regmap.load_map(family).regions
    ]


def core() -> str:
    """core_fuzz reads little-endian fields: the maps' offsets and sizes as u32."""
    entries: list[tuple[str, bytes]] = []
    for family, r in _regions():
        entries.append((_ident(f"{family}_{r.name}"), _u32(r.offset)))
        entries.append((_ident(f"{family}_{r.name}_end"), _u32(r.end)))
    for page in (4096, 16384, 65536):
        entries.append((f"page_{page}", _u32(page)))
    return render("core_fuzz: register offsets of the shipped maps, little-endian u32", entries)


def guard() -> str:
    """guard_fuzz reads little-endian fields; register values are u32."""
    entries: list[tuple[str, bytes]] = []
    for family, r in _regions():
        if r.category == "mailbox" or "FSP" in r.name.upper():
            entries.append((_ident(f"{family}_{r.name}"), _u32(r.offset)))
            # the harness rebases the mailbox into a 64 KiB BAR: the offset's low 16 bits
            entries.append((_ident(f"{family}_{r.name}_low"), struct.pack("<H", r.offset & 0xFFFF)))
    for name, nvdm in sorted(guards.NVDM_TYPES.items(), key=lambda kv: kv[1]):
        entries.append((f"nvdm_{name}", bytes([nvdm])))
        entries.append((f"msg_header_{name}", _u32(_msg_header(nvdm))))
    for name, sub in PRC_SUBMESSAGES.items():
        entries.append((f"prc_{name}", bytes([sub])))
        for scope_name, scope in PRC_SCOPES.items():
            entries.append((f"prc_{name}_{scope_name}", bytes([sub, scope])))
    entries += [
        ("mctp_som_eom", _u32(MCTP_SOM | MCTP_EOM)),
        ("mctp_som", _u32(MCTP_SOM)),
        ("mctp_eom", _u32(MCTP_EOM)),
        ("emem_aincw", _u32(1 << 24)),
        ("emem_aincr", _u32(1 << 25)),
    ]
    return render(
        "guard_fuzz: FSP mailbox offsets, NVDM types and message headers, PRC sub-messages"
        " (docs/fsp-guard.md)",
        entries,
    )


def _toml_keys(keys: Iterable[str]) -> list[tuple[str, bytes]]:
    return [(f"key_{k}", f"{k} = ".encode()) for k in sorted(keys)]


def policy() -> str:
    entries = _toml_keys(
        {*policy_toml.TOP_KEYS, *policy_toml.RULE_KEYS, *policy_toml.GUARD_KEYS}
        | set(policyfile.DEVICE_KEYS)
    )
    entries += [("table_rule", b"[[rule]]"), ("table_guard", b"[[guard]]")]
    entries += [(f"action_{a}", f'"{a}"'.encode()) for a in rules.ACTIONS]
    entries += [(f"kind_{k}", f'"{k}"'.encode()) for k in policy_toml.GUARD_KINDS]
    entries += [(f"nvdm_{n}", f'"{n}"'.encode()) for n in sorted(guards.NVDM_TYPES)]
    entries += [(f"prc_{n}", f'"{n}"'.encode()) for n in PRC_SUBMESSAGES]
    entries += [(f"family_{f}", f'"{f}"'.encode()) for f in regmap.available_maps()]
    for family, r in _regions():
        entries.append((_ident(f"{family}_{r.name}"), f"{r.offset:#x}".encode()))
    return render("policy_fuzz: policy TOML keys and values, the maps' offsets", entries)


def regmap_dict() -> str:
    keys = {"family", "title", "name", "bar", "offset", "size", "category", "source", "confirmed",
            "note", "bits", "values", "vendor", "device", "index", "value", "format", "base",
            "entries", "ioctrl_type", "unit_size", "config", "version"}  # fmt: skip
    entries = _toml_keys(keys)
    entries += [(f"table_{k}", f"[[{k}]]".encode()) for k in ("device", "bar", *regmap.KINDS)]
    entries += [("table_device_info", b"[device_info]")]
    entries += [(f"category_{c}", f'"{c}"'.encode()) for c in regmap.CATEGORIES]
    entries += [(f"family_{f}", f'"{f}"'.encode()) for f in regmap.available_maps()]
    return render("regmap_fuzz: register-map TOML keys, tables and categories", entries)


def devinfo() -> str:
    entries: list[tuple[str, bytes]] = []
    for family in regmap.available_maps():
        spec = regmap.load_map(family).device_info
        if spec is None:
            continue
        entries.append((f"{family}_ioctrl_type", _u32(spec.ioctrl_type)))
        entries.append((f"{family}_unit_size", _u32(spec.unit_size)))
    return render("devinfo_fuzz: the maps' device-info constants, little-endian u32", entries)


def pciconfig_dict() -> str:
    caps = {n: v for n, v in vars(pciconfig).items() if n.startswith("CAP_ID_")}
    entries = [(n.lower(), bytes([v])) for n, v in sorted(caps.items())]
    entries += [("vendor_nvidia", b"\xde\x10"), ("cap_list_status", b"\x10\x00")]
    return render("pciconfig_fuzz: capability IDs (PCI_CAP_ID_*), NVIDIA's vendor ID", entries)


def trace() -> str:
    words = ["VERSION 20070824", "PCIDEV ", "MAP ", "UNMAP ", "MARK ", "R 4 ", "W 4 ", "R 8 ",
             "W 1 ", "UNKNOWN ", "Lost ", " events", "vfio_region_read ", "vfio_region_write ",
             "vfio_region_setup ", ":region0+0x", " BAR 0", "size: 0x"]  # fmt: skip
    return render(
        "trace_fuzz: mmiotrace and QEMU vfio trace words",
        [(_ident(w.strip()) or "w", w.encode()) for w in words],
    )


DICTS = {
    "core": core,
    "guard": guard,
    "policy": policy,
    "regmap": regmap_dict,
    "devinfo": devinfo,
    "pciconfig": pciconfig_dict,
    "trace": trace,
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="only say which files are stale")
    args = ap.parse_args()
    stale = []
    for name, make in DICTS.items():
        path, text = DICT / f"{name}.dict", make()
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path)
        if not args.check:
            DICT.mkdir(exist_ok=True)
            path.write_text(text)
    if args.check and stale:
        print(f"stale (run python fuzz/make_dicts.py): {', '.join(map(str, stale))}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
