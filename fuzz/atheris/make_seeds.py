#!/usr/bin/env python3
"""Write the seed corpora of the atheris harnesses: fuzz/corpus/<harness>/<name>.

Valid examples only, a handful per harness: the fuzzer mutates from well-formed inputs and
reaches deep paths sooner than from nothing. Rerun after changing a harness's input format;
the committed corpus is this script's output (plus, after `fuzz/run --merge`, what a campaign
added).
"""

from __future__ import annotations

from pathlib import Path

from mmiofilter.devices import pciconfig_build as pb
from mmiofilter.devices.devinfo_encode import encode_gh100, encode_gv100
from mmiofilter.devices.pciconfig import EXP_CFG_SIZE, HEADER_BRIDGE
from mmiofilter.devices.regmap import load_map

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "fuzz" / "corpus"
MAPS = ROOT / "mmiofilter" / "devices" / "maps"

PLAIN_POLICY = """fill = 0xFF
partial = "split"
unaligned = "deny"

[[rule]]
name = "pmc-enable-nvlink"
start = 0x200
size = 4
action = "mask"
mask = 0x02000000
value = 0x02000000

[[rule]]
name = "boot"
start = 0x0
size = 4
action = "emulate"
value = 0x140000a1
priority = 2

[[rule]]
name = "flash"
start = 0x300000
size = 0x100000
action = "deny"
bar = 0

[[rule]]
name = "bar1-ro"
start = 0x10
size = 8
action = "readonly"
bar = 1
"""

GH100_POLICY = """device = "10de:2331"
partial = "deny"

[options]
nvlink = "allow"
firmware_update = "deny"
config_mirror = "readonly"
fsp_deny_types = ["inforom", 0x18]

[[rule]]
name = "scratch"
start = 0x1000
size = 4
action = "audit"
"""

GUARD_POLICY = """[[rule]]
name = "fsp-range"
start = 0x8F0000
size = 0x4000
action = "audit"

[[guard]]
name = "fsp"
kind = "fsp"
deny_types = [0x12, "inforom"]
emem = 0x8F2AC0
queue = 0x8F2C00
msgq = 0x8F2C80
channels = 8
max_packet = 1024
priority = 1
"""

MINIMAL_MAP = """family = "tiny"
title = "a minimal map"

[[device]]
vendor = 0x10de
device = 0x1db1
source = "seed"
confirmed = true

[[bar]]
index = 0
size = 0x1000000
source = "seed"
confirmed = true

[[register]]
name = "NV_PMC_ENABLE"
bar = 0
offset = 0x200
size = 4
category = "nvlink"
source = "seed"
confirmed = false
note = "a seed"
bits = { NVLINK = "25", LOW = "7:0" }
values = { ON = 1 }
"""

BASE = 0xF0000000
SIZE = 0x10000
# offset, width, is_write, value: one access per rule of trace_fuzz.POLICY, and some free ones
ACCESSES = [
    (0x0, 4, False, 0x140000A1),
    (0x200, 4, True, 0x0),
    (0x200, 4, False, 0x02000000),
    (0x1004, 1, True, 0xAB),
    (0x10FE, 4, False, 0x11223344),
    (0x2000, 4, True, 0x4),
    (0x1FFC, 8, False, 0x412345678),
    (0x3100, 4, True, 0x1),
    (0x3000, 2, False, 0xCAFE),
]


def mmiotrace() -> str:
    lines = [
        "VERSION 20070824",
        f"PCIDEV 6500 10de1db1 5a {BASE:x} d000000c 0 0 0 0 0 {SIZE:x} 10000000 0 0 0 0 0 nvidia",
        f"MAP 11.000000 1 {BASE:#x} 0xffffc90001000000 {SIZE:#x} 0x0 0",
        "MARK 11.500000 Lost 3 events.",
    ]
    for i, (off, w, wr, v) in enumerate(ACCESSES):
        lines.append(f"{'W' if wr else 'R'} {w} 12.{i:06d} 1 {BASE + off:#x} {v:#x} 0x0 0")
    lines += ["UNKNOWN 13.000000 1 0xf0000010 1,2,3 0x0 0", "UNMAP 14.000000 1 0x0 0"]
    return "\n".join(lines) + "\n"


def qemu() -> str:
    dev = "0000:65:00.0"
    lines = [
        f'4242@1700000000.000001:vfio_region_setup Device {dev}, region 0 "{dev} BAR 0", '
        f"flags: 0x7, offset: 0x0, size: {SIZE:#x}"
    ]
    for off, w, wr, v in ACCESSES:
        if wr:
            lines.append(f"vfio_region_write  ({dev}:region0+{off:#x}, {v:#x}, {w})")
        else:
            lines.append(f"4242@1.5:vfio_region_read  ({dev}:region0+{off:#x}, {w}) = {v:#x}")
    lines.append(f"vfio_region_read  ({dev}:region1+0x10, 4) = 0x0")
    return "\n".join(lines) + "\n"


def le_words(words: list[int]) -> bytes:
    return b"".join(w.to_bytes(4, "little") for w in words)


def devinfo() -> dict[str, bytes]:
    gv = load_map("gv100").device_info
    gh = load_map("gh100").device_info
    assert gv is not None and gh is not None
    cfg, rows = encode_gh100([(18, 0xA00000), (18, 0xA40000, 1), (1, 0x400000)], entries=gh.entries)
    return {
        # byte 0: bit 0 spec (0 gv100, 1 gh100), bit 1 default word, bits 2-3 BAR size
        "gv100-two-ioctrl": b"\x00" + le_words(encode_gv100([(18, 0xA00000), (18, 0xA01000)])),
        "gv100-mixed": b"\x00"
        + le_words(encode_gv100([(1, 0x400000), (18, 0xA00000, 2), (19, 0x140000)])),
        "gh100-three": b"\x01" + le_words([cfg, *rows]),
        "gh100-short-rows": b"\x01" + le_words([cfg & ~(0xFFF << 20) | (9 << 20), *rows[:9]]),
    }


def pciconfig() -> dict[str, bytes]:
    gpu = pb.build_config(
        0x10DE,
        0x1DB1,
        class_code=0x030200,
        bars=(*pb.mem_bar(0xF0000000), *pb.mem_bar(0xE000000000, is_64bit=True, prefetchable=True)),
        caps=(
            pb.pm_cap(),
            pb.msi_cap(),
            pb.pcie_cap(),
            pb.msix_cap(6, table_bar=0, table_offset=0xB90000),
        ),
        ext_caps=(pb.ExtCap(0x01, body=bytes(0x44)), pb.ExtCap(0x0B, body=bytes(8))),
        size=EXP_CFG_SIZE,
    )
    nic = pb.build_config(
        0x8086,
        0x10FB,
        class_code=0x020000,
        bars=(*pb.mem_bar(0xFB000000, is_64bit=True), *pb.io_bar(0xE000)),
        caps=(
            pb.msix_cap(64, table_bar=0, table_offset=0x2000, pba_bar=0, pba_offset=0x3000),
            pb.vendor_cap(b"xy"),
        ),
    )
    bridge = pb.build_config(
        0x8086,
        0x1901,
        class_code=0x060400,
        header_type=HEADER_BRIDGE,
        caps=(pb.ssvid_cap(0x1028, 0x0001), pb.pcie_cap(port_type=4)),
    )
    resource = (
        "0x00000000f0000000 0x00000000f0ffffff 0x0000000000040200\n"
        "0x000000e000000000 0x000000efffffffff 0x000000000014220c\n"
        "0x0000000000000000 0x0000000000000000 0x0000000000000000\n"
    )
    # byte 0: 0 as is (also parse_resource), 1/2/3: padded or cut to 64/256/4096 bytes
    return {
        "gpu-4096-msix": b"\x03" + gpu,
        "nic-256-msix": b"\x02" + nic,
        "bridge-256": b"\x02" + bridge,
        "header-64": b"\x01" + nic[:64],
        "resource-raw": b"\x00" + resource.encode(),
    }


def main() -> None:
    seeds: dict[str, dict[str, bytes]] = {
        "policy": {
            "v100.toml": (ROOT / "examples" / "v100.toml").read_bytes(),
            "plain.toml": PLAIN_POLICY.encode(),
            "gh100-device.toml": GH100_POLICY.encode(),
            "guard.toml": GUARD_POLICY.encode(),
        },
        "regmap": {
            "gv100.toml": (MAPS / "gv100.toml").read_bytes(),
            "gh100.toml": (MAPS / "gh100.toml").read_bytes(),
            "minimal.toml": MINIMAL_MAP.encode(),
        },
        "devinfo": devinfo(),
        "pciconfig": pciconfig(),
        "trace": {"mmiotrace.txt": mmiotrace().encode(), "qemu.log": qemu().encode()},
    }
    for harness, files in seeds.items():
        d = CORPUS / harness
        d.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (d / name).write_bytes(data)
        print(f"{d.relative_to(ROOT)}: {len(files)} files, {sum(map(len, files.values()))} bytes")


if __name__ == "__main__":
    main()
