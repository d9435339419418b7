"""Each factory fixture inside `@given`, with hypothesis' health checks all on.

Before the factories were session-scoped, every test here failed the
`function_scoped_fixture` health check.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from hypothesis import given, settings
from hypothesis import strategies as st

import mmiofilter as mf
from mmiofilter.testing import assert_security

if TYPE_CHECKING:
    from mmiofilter.testing import BarFilterFactory, DeviceFactory, ModelFilterFactory

SIZE = 0x2000
RULES = [mf.Rule("status", 0x10, 4, "emulate", value=0x1234), mf.Rule("ctl", 0x20, 4, "deny")]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@settings(max_examples=20, deadline=None)
@given(size=st.sampled_from([0x1000, 0x1800, 0x4000]), first=st.integers(0, 0xFF))
def test_device_factory_in_given(mmio_device_factory: DeviceFactory, size: int, first: int) -> None:
    dev = mmio_device_factory(size, initial=bytes([first]))
    assert dev.size == size and dev.read(0, 1) == first
    assert dev.read(size - 4, 4) == 0  # a fresh device every example: nothing left over
    dev.write32(size - 4, 0xFFFFFFFF)


@settings(max_examples=20, deadline=None)
@given(backend=st.sampled_from(["memory", "fd", "callback"]), value=st.integers(0, 2**32 - 1))
def test_bar_filter_factory_in_given(
    bar_filter_factory: BarFilterFactory, backend: str, value: int
) -> None:
    f = bar_filter_factory(RULES, size=SIZE, backend=backend)
    dev = bar_filter_factory.device(f)
    assert dev.read32(0x20) == 0  # a fresh device every example
    assert f.write(0x20, 4, value) is mf.Outcome.BLOCKED
    assert f.write(0x24, 4, value) is mf.Outcome.PASS
    assert f.read(0x10, 4) == 0x1234
    assert dev.read32(0x20) == 0 and dev.read32(0x24) == value


@settings(max_examples=20, deadline=None)
@given(offset=st.integers(0, SIZE - 4), value=st.integers(0, 2**32 - 1))
def test_model_filter_factory_in_given(
    model_filter_factory: ModelFilterFactory, offset: int, value: int
) -> None:
    m = model_filter_factory(RULES, size=SIZE)
    m.access(offset, 4, True, value)
    log = model_filter_factory.device(m).log
    assert len(log) <= 1  # a fresh device every example: only this access
    assert_security(mf.Policy(RULES), log)


def test_the_session_factories_do_not_pile_up_memfds(
    mmio_device_factory: DeviceFactory, bar_filter_factory: BarFilterFactory
) -> None:
    before = open_fds()
    for _ in range(300):
        f = bar_filter_factory(RULES, size=SIZE, backend="fd")
        f.write(0x24, 4, 1)
        mmio_device_factory(SIZE).write32(0, 1)
    del f
    # What a test drops is released at once, not at the end of the session.
    assert open_fds() - before < 8
