"""Config space from lspci text dumps (-x refused: the header cannot locate MSI-X; -xxx,
-xxxx), a fake sysfs tree (--device), and the real /sys/bus/pci/devices of this machine."""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path

import pytest

from mmiofilter import cli
from mmiofilter.devices import load_policy_file
from mmiofilter.devices.pciconfig import ConfigError, parse_config, parse_resource
from mmiofilter.devices.pciconfig_build import build_config, mem_bar, msix_cap
from mmiofilter.devices.pcisources import (
    load_config_any,
    normalize_address,
    parse_lspci,
    read_sysfs_device,
)

ADDR = "0000:65:00.0"
GV100 = build_config(0x10DE, 0x1DB1, bars=mem_bar(0xF0000000), caps=[msix_cap(8, table_bar=0,
                     table_offset=0xB90000)])  # fmt: skip
PCI_DEV = build_config(0x8086, 0x1234, class_code=0x020000, bars=mem_bar(0xF1000000),
                       caps=[msix_cap(16, table_bar=0, table_offset=0x2000)])  # fmt: skip


def lspci_text(data: bytes, head: str = "65:00.0 3D controller: NVIDIA Corporation GV100GL") -> str:
    """As pciutils lspci.c show_hex_dump prints it: "%02x:" then " %02x" per byte, 16 a line."""
    lines = [head]
    for off in range(0, len(data), 16):
        lines.append(f"{off:02x}:" + "".join(f" {b:02x}" for b in data[off : off + 16]))
    return "\n".join(lines) + "\n\n"


def test_lspci_xxx_and_xxxx() -> None:
    assert parse_lspci(lspci_text(GV100)) == GV100
    ext = build_config(0x10DE, 0x1DB1, size=4096, bars=mem_bar(0xF0000000))
    text = lspci_text(ext)
    assert "\n100: " in text  # offsets past 0xff print three digits
    assert parse_lspci(text) == ext


def test_lspci_x_is_refused_with_the_reason() -> None:
    with pytest.raises(ConfigError) as e:
        parse_lspci(lspci_text(GV100[:64]), "dump.txt")
    msg = str(e.value)
    assert "an `lspci -x` dump" in msg
    assert "capability" in msg and "0x34" in msg and "MSI-X" in msg and "-xxx" in msg


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (lspci_text(GV100) + lspci_text(GV100, "66:00.0 3D controller"), "dumps of 2 devices"),
        (lspci_text(GV100).replace("\n10:", "\n20:"), "offset 0x20 where 0x10"),
        (lspci_text(GV100).replace(" 00\n", " 00 ff\n", 1), "17 bytes"),
        ("65:00.0 3D controller: x\n", "no lspci hex dump"),
        (lspci_text(GV100[:128]), "128 bytes"),
        (lspci_text(GV100) + "garbage here\n", "not a line of an lspci hex dump"),
    ],
)
def test_lspci_bad(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_lspci(text, "d.txt")


def test_config_any_tells_text_from_binary(tmp_path: Path) -> None:
    (tmp_path / "b").write_bytes(GV100)
    (tmp_path / "t").write_text(lspci_text(GV100))
    assert load_config_any(tmp_path / "b") == load_config_any(tmp_path / "t")
    # a policy file's `config =` takes either
    (tmp_path / "c.txt").write_text(lspci_text(PCI_DEV))
    (tmp_path / "p.toml").write_text('config = "c.txt"\n[options]\nmsix = "deny"\n')
    policy, _ = load_policy_file(tmp_path / "p.toml").resolve(None)
    assert [(r.name, r.start) for r in policy.rules] == [
        ("msix-table", 0x2000),
        ("msix-pba", 0x2100),
    ]


@pytest.mark.parametrize("text", ["65:00.0", "0000:65:00.0", "0000:65:00.0 "])
def test_normalize_address(text: str) -> None:
    assert normalize_address(text) == ADDR


@pytest.mark.parametrize("text", ["65:00", "0000:65:00.8", "zz:00.0", "/etc/passwd", "../x"])
def test_bad_address(text: str) -> None:
    with pytest.raises(ValueError, match="not a PCI address"):
        normalize_address(text)


def fake_sysfs(root: Path, addr: str, config: bytes, sizes: dict[int, int]) -> None:
    d = root / addr
    d.mkdir(parents=True)
    (d / "config").write_bytes(config)
    lines = []
    for i in range(13):  # 6 BARs, the ROM, then bridge windows (pci-sysfs.c resource_show)
        size = sizes.get(i, 0)
        start = 0xF0000000 + i * 0x1000000 if size else 0
        end = start + size - 1 if size else 0
        lines.append(f"0x{start:016x} 0x{end:016x} 0x{0x40200 if size else 0:016x}")
    (d / "resource").write_text("\n".join(lines) + "\n")


def test_device_from_a_fake_sysfs_tree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake_sysfs(tmp_path, ADDR, GV100, {0: 16 << 20, 1: 32 << 30, 3: 32 << 20})
    dev = read_sysfs_device("65:00.0", tmp_path)
    assert dev.address == ADDR and dev.bar_sizes == {0: 16 << 20, 1: 32 << 30, 3: 32 << 20}
    assert (dev.config.vendor, dev.config.device) == (0x10DE, 0x1DB1)
    root = ["--sysfs-root", str(tmp_path)]
    assert cli.main(["check", "--device", ADDR, *root, "--json"]) == 0
    j = json.loads(capsys.readouterr().out)
    assert j["profile"] == "nvidia-gv100" and j["device"] == ADDR
    assert j["compiled"][0]["bar_size"] == 16 << 20
    # the generic profile finds MSI-X in BAR0 through the device's config space
    fake_sysfs(tmp_path, "0000:66:00.0", PCI_DEV, {0: 1 << 20})
    assert cli.main(["check", "--device", "66:00.0", *root, "--json"]) == 0
    j = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["start"]) for r in j["rules"]] == [("msix-table", 0x2000),
                                                             ("msix-pba", 0x2100)]  # fmt: skip
    assert cli.main(["layout", "--device", "66:00.0", *root, "--page-size", "4K", "--json"]) == 0
    j = json.loads(capsys.readouterr().out)
    assert j["bar_size"] == 1 << 20 and j["trapped_pages"] == 1
    assert cli.main(["check", "--device", "0000:67:00.0", *root]) == 2
    assert "no such PCI device" in capsys.readouterr().err
    # a file's profile must be for the device
    pol = tmp_path / "p.toml"
    pol.write_text('profile = "nvidia-gh100"\n')
    assert cli.main(["check", str(pol), "--device", ADDR, *root]) == 1
    assert "is not one profile 'nvidia-gh100' is for" in capsys.readouterr().out


def test_unprivileged_64_byte_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # What a non-root reader of sysfs config gets: the pci profile cannot locate MSI-X.
    fake_sysfs(tmp_path, "0000:66:00.0", PCI_DEV[:64], {0: 1 << 20})
    rc = cli.main(["check", "--device", "66:00.0", "--sysfs-root", str(tmp_path), "--json"])
    j = json.loads(capsys.readouterr().out)
    assert rc == 1 and "header only" in j["errors"][0] and "root" in j["errors"][0]


def _real_devices() -> list[str]:
    return [
        os.path.basename(os.path.dirname(p))
        for p in sorted(glob.glob("/sys/bus/pci/devices/*/config"))
        if os.access(p, os.R_OK)
    ]


@pytest.mark.skipif(not _real_devices(), reason="no readable /sys/bus/pci/devices here")
@pytest.mark.parametrize("addr", _real_devices()[:8])
def test_real_sysfs_devices(addr: str) -> None:
    dev = read_sysfs_device(addr)
    base = f"/sys/bus/pci/devices/{addr}"
    assert dev.config.vendor == int(Path(base, "vendor").read_text(), 16)
    assert dev.config.device == int(Path(base, "device").read_text(), 16)
    assert dev.bar_sizes == parse_resource(Path(base, "resource").read_text())
    assert parse_config(Path(base, "config").read_bytes()) == dev.config
