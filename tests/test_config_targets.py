"""Redirect targets a VMM without its own config-space emulation hands to `attach`: the device's
config file or VFIO config region, each access one pread/pwrite of its width."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import mmiofilter as mf
from mmiofilter.devices import attach, load_policy_file
from mmiofilter.devices.targets import open_config_target, vfio_config_target
from mmiofilter.simulated.gv100 import (
    AER_CAP,
    MSI_CAP,
    PCIE_CAP,
    SimulatedConfig,
    gv100_config_space,
    simulated_bar0,
)


def test_a_config_file_is_an_exact_width_target(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_bytes(gv100_config_space(0x1DB5))
    with open_config_target(path) as cfg:
        # read through a filter with no rules: the target is a plain backend
        f = mf.BarFilter(4096, mf.Policy([]), cfg.backend)
        assert f.read(0, 4) == 0x1DB510DE
        assert f.read(0xB, 1) == 0x03 and f.read(0xA, 1) == 0x02  # class 0x0302
        assert f.write(0x704, 4, 0xA5A5A5A5) is mf.Outcome.PASS
        del f
    assert path.read_bytes()[0x704:0x708] == b"\xa5" * 4


def test_vfio_region_offset_is_honoured(tmp_path: Path) -> None:
    path = tmp_path / "vfio-device"
    path.write_bytes(bytes(0x10000) + gv100_config_space())  # config region at 64 KiB
    fd = os.open(path, os.O_RDONLY)
    try:
        f = mf.BarFilter(4096, mf.Policy([]), vfio_config_target(fd, 0x10000))
        assert f.read(0, 2) == 0x10DE
        del f
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("content", "message"),
    [(bytes(256), "256 bytes, but the BAR0 mirror is 4096"), (None, "cannot open")],
)
def test_a_config_file_that_cannot_serve_the_mirror(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "config"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        open_config_target(path)
    with pytest.raises(ValueError, match=r"cannot open|not a regular file"):
        open_config_target(tmp_path, writable=False)


def test_the_simulated_config_space_is_a_v100s() -> None:
    from mmiofilter.devices.pciconfig import parse_config

    cs = parse_config(gv100_config_space(), "simulated V100")
    assert (cs.vendor, cs.device) == (0x10DE, 0x1DB1)
    caps = {(c.id, c.offset) for c in cs.capabilities}
    assert {(0x05, MSI_CAP), (0x10, PCIE_CAP), (0x01, AER_CAP)} <= caps
    assert [b.index for b in cs.bars][:3] == [0, 1, 3]


def test_attach_refuses_a_target_that_is_not_a_backend() -> None:
    with simulated_bar0("gv100") as bar:
        pf = load_policy_file('profile = "nvidia-gv100"\n[options]\nconfig_mirror = "deny"\n')
        with pytest.raises(TypeError, match="target 'config': expected a backend"):
            attach(pf, mf.MemoryBackend(bar.buf), bar.size, targets={"config": object()})  # type: ignore[dict-item]
        # a target the rules do not use is no error (and is not handed to the filter)
        f, _ = attach(pf, mf.MemoryBackend(bar.buf), bar.size,
                      targets={"config": SimulatedConfig().backend()})  # fmt: skip
        del f
