"""A component's tests using mmiofilter's pytest plugin: no conftest, no fixtures of their own.

The files here are named `consumer_*.py` so that the package's own test run does not collect
them (it has its own conftest in scope); `tests/test_plugin.py` runs them in a subprocess, from
a copy outside the repository, with only the plugin providing fixtures.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

import mmiofilter as mf
from mmiofilter.testing.security import assert_security

if TYPE_CHECKING:  # the fixtures' types; the plugin itself is loaded by pytest
    from mmiofilter.testing.pytest_plugin import (
        BarFilterFactory,
        DeviceFactory,
        FakeDevice,
        ModelFilterFactory,
    )

POLICY = mf.Policy(
    [
        mf.Rule("boot", 0x0, 4, "emulate", value=0x140000A1),
        mf.Rule("link-disable", 0x148, 4, "mask", mask=0x003F0000, value=0x003F0000),
        mf.Rule("flash", 0x2000, 0x100, "deny"),
    ]
)


def test_the_fake_device_is_a_memfd_bar(mmio_device: FakeDevice) -> None:
    assert mmio_device.size == len(mmio_device.buf) == 0x10000
    assert os.readlink(f"/proc/self/fd/{mmio_device.fd}").startswith("/memfd:")
    mmio_device.write32(0x100, 0xDEADBEEF)
    assert mmio_device.read32(0x100) == 0xDEADBEEF
    assert mmio_device.buf[0x100:0x104] == b"\xef\xbe\xad\xde"  # little-endian
    assert os.pread(mmio_device.fd, 4, 0x100) == b"\xef\xbe\xad\xde"  # one memory


@pytest.mark.parametrize(
    "mmio_device", [0x2000, {"size": 0x1800, "initial": b"\x01\x02\x03\x04"}], indirect=True
)
def test_size_and_contents_by_indirect_parametrization(mmio_device: FakeDevice) -> None:
    assert mmio_device.size in (0x2000, 0x1800)
    if mmio_device.size == 0x1800:
        assert mmio_device.read32(0) == 0x04030201


@pytest.mark.parametrize("backend", ["memory", "fd", "callback"])
def test_a_filter_over_the_fake_device(
    bar_filter_factory: BarFilterFactory, mmio_device: FakeDevice, backend: str
) -> None:
    mmio_device.write32(0x148, 0x003F0000)  # the host disabled the links
    f = bar_filter_factory(POLICY, device=mmio_device, backend=backend)
    assert bar_filter_factory.device(f) is mmio_device
    assert f.write(0x148, 4, 0) is mf.Outcome.MASKED  # the guest tries to enable them
    assert mmio_device.read32(0x148) == 0x003F0000
    assert f.read(0x2000, 4) == 0xFFFFFFFF
    assert f.write(0x2000, 4, 0x1234) is mf.Outcome.BLOCKED
    assert mmio_device.read32(0x2000) == 0
    assert f.read(0x0, 4) == 0x140000A1
    assert f.layout.direct == [(0x1000, 0x1000), (0x3000, 0xD000)]  # 4 KiB pages
    assert [e.rule for e in f.drain_events()] == ["link-disable", "flash", "flash", "boot"]


def test_what_reaches_the_device_is_allowed(bar_filter_factory: BarFilterFactory) -> None:
    f = bar_filter_factory(POLICY, size=0x4000, backend="callback")
    for offset in range(0x140, 0x150):
        for width in (1, 2, 4, 8):
            f.read(offset, width)
            f.write(offset, width, (1 << (8 * width)) - 1)
    log = bar_filter_factory.device(f).log
    assert log, "the allowed bytes around the rule did reach the device"
    assert_security(POLICY, log)


def test_the_core_agrees_with_the_reference_model(
    bar_filter_factory: BarFilterFactory, model_filter_factory: ModelFilterFactory
) -> None:
    f = bar_filter_factory(POLICY, backend="callback")
    m = model_filter_factory(POLICY)
    for offset in (0x0, 0x2, 0x146, 0x148, 0x14A, 0x1FFC, 0x1FFE, 0x2000, 0x20FE, 0x2100):
        for width in (1, 2, 4, 8):
            for is_write, value in ((False, 0), (True, (1 << (8 * width)) - 2)):
                assert f.access(offset, width, is_write, value) == m.access(
                    offset, width, is_write, value
                )
    assert bar_filter_factory.device(f).log == model_filter_factory.device(m).log
    assert f.drain_events() == m.drain_events()
    assert f.counters() == m.counters()


def test_several_devices(
    mmio_device_factory: DeviceFactory, bar_filter_factory: BarFilterFactory
) -> None:
    small, large = mmio_device_factory(0x4000), mmio_device_factory(1 << 36)  # 64 GiB, sparse
    f = bar_filter_factory(POLICY, device=small)
    g = bar_filter_factory([mf.Rule("top", (1 << 36) - 4, 4, "readonly")], device=large)
    assert f.read(0x0, 4) == 0x140000A1
    assert g.write((1 << 36) - 4, 4, 1) is mf.Outcome.BLOCKED
    assert g.write((1 << 36) - 8, 4, 7) is mf.Outcome.PASS
    assert large.read32((1 << 36) - 8) == 7 and large.read32((1 << 36) - 4) == 0
