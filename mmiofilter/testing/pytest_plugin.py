"""pytest plugin: fixtures for the tests of components built on mmiofilter.

Registered through the `pytest11` entry point, so a test in any project that has mmiofilter
installed uses these fixtures with no conftest and no import; without the entry point, load it
with `pytest -p mmiofilter.testing.pytest_plugin`. (With the entry point installed, do not also
pass `-p mmiofilter.testing.pytest_plugin`: pluggy refuses one module under two names. Block
the entry point first with `-p no:mmiofilter` if you must.)

- `mmio_device`: a fake device, a BAR of `DEFAULT_SIZE` bytes backed by a memfd (what a VMM
  maps, and what can back a KVM memory slot), zero-filled. Another size or initial contents
  through indirect parametrization: `@pytest.mark.parametrize("mmio_device", [0x2000],
  indirect=True)` or `[{"size": 0x2000, "initial": b"..."}]`.
- `mmio_device_factory`: `make(size=DEFAULT_SIZE, *, initial=None) -> FakeDevice`, for several
  devices or a size chosen in the test.
- `bar_filter_factory`: `make(policy=(), *, size=None, page_size=4096, backend="memory",
  device=None, bar=0, ring_capacity=1024, targets=None) -> BarFilter` over a fake device (a new
  one unless `device` is given); `bar_filter_factory.device(f)` is the device under `f`.
- `model_filter_factory`: the same for the pure-Python reference model over a `ModelDevice`
  (`model_filter_factory.device(m)` has its access `log`).
- `mmio_strategies`: the module `mmiofilter.testing.strategies` (hypothesis strategies for page
  sizes, BAR sizes, rules, policies, valid and invalid accesses); the test skips when
  hypothesis is not installed. In `@given(...)` arguments, which are evaluated at import, use
  `from mmiofilter.testing import strategies` instead (and docs/testing-helpers.md for the
  realistic ones: profile policies, register accesses, simulated GPUs, FSP mailbox traffic).

The three factories are session-scoped, so they are safe inside `@given` (hypothesis' health
check refuses function-scoped fixtures there): each call makes a fresh object, which is released
as soon as the test drops it (a fake device once no filter over it is left), and whatever is
left is closed at the end of the session. `mmio_device` is one device per test, closed at the
test's end.

The fixtures are thin wrappers over plain-Python helpers (`mmiofilter.testing.devices`,
`.filters`) that work without pytest too. No memory is unmapped and no memfd closed under a live
filter: a filter that outlives its device's test (the traceback of a failed test holds it)
keeps the device until it goes, and, when the test passed, a `MappingKeptWarning` says so.

The plugin does not import hypothesis: only `mmio_strategies` does, when a test asks for it.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from types import ModuleType

import pytest

from .devices import DEFAULT_SIZE, DeviceFactory, FakeDevice, MappingKeptWarning
from .filters import (
    BACKEND_KINDS,
    DEFAULT_PAGE_SIZE,
    BarFilterFactory,
    ModelFilterFactory,
)

__all__ = [
    "BACKEND_KINDS",
    "DEFAULT_PAGE_SIZE",
    "DEFAULT_SIZE",
    "BarFilterFactory",
    "DeviceFactory",
    "FakeDevice",
    "MappingKeptWarning",
    "ModelFilterFactory",
]

# Tests whose call failed, until their teardown: their traceback holds their filters, which is
# no news worth a warning.
_failed: set[str] = set()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and report.failed:
        _failed.add(report.nodeid)


@pytest.fixture(scope="session")
def mmio_device_factory(request: pytest.FixtureRequest) -> Iterator[DeviceFactory]:
    """`make(size=0x10000, *, initial=None) -> FakeDevice`: memfd-backed fake BARs.

    Session-scoped (safe in `@given`): a device is released when the test drops it and no
    filter over it is left; those left are closed at the end of the session.
    """
    factory = DeviceFactory()
    yield factory
    factory.close(warn=request.session.testsfailed == 0)


@pytest.fixture
def mmio_device(request: pytest.FixtureRequest) -> Iterator[FakeDevice]:
    """A memfd-backed fake BAR of 0x10000 zero bytes, closed at the test's end; indirect
    parametrization sets its size (an int) or its size and initial bytes (a dict with `size`
    and `initial`)."""
    param: object = getattr(request, "param", DEFAULT_SIZE)
    if isinstance(param, dict):
        unknown = set(param) - {"size", "initial"}
        if unknown:
            raise ValueError(f"mmio_device parameters {sorted(unknown)} are not size, initial")
        device = FakeDevice(param.get("size", DEFAULT_SIZE), initial=param.get("initial"))
    elif isinstance(param, int):
        device = FakeDevice(param)
    else:
        raise TypeError(f"mmio_device parameter {param!r} is not a size or a dict")
    yield device
    nodeid = request.node.nodeid
    device.close(warn=nodeid not in _failed)
    _failed.discard(nodeid)


@pytest.fixture(scope="session")
def bar_filter_factory(mmio_device_factory: DeviceFactory) -> Iterator[BarFilterFactory]:
    """`make(policy, *, size, page_size, backend, device, bar, ring_capacity, targets) ->
    BarFilter` over a fake device (a fresh one unless `device` is given);
    `bar_filter_factory.device(f)` is that device. Session-scoped: safe in `@given`."""
    factory = BarFilterFactory(mmio_device_factory)
    yield factory
    factory.close()


@pytest.fixture(scope="session")
def model_filter_factory() -> ModelFilterFactory:
    """`make(policy, *, size, page_size, bar, ring_capacity, initial) -> ModelFilter`, the
    reference model over a fresh `ModelDevice`; `.device(m)` has its access `log`.
    Session-scoped: safe in `@given`."""
    return ModelFilterFactory()


@pytest.fixture(scope="session")
def mmio_strategies() -> ModuleType:
    """`mmiofilter.testing.strategies` (hypothesis strategies); skips without hypothesis.

    Session-scoped: a module has no state, and hypothesis' health check rejects
    function-scoped fixtures in `@given` tests.
    """
    pytest.importorskip("hypothesis", reason="mmio_strategies needs hypothesis")
    return importlib.import_module("mmiofilter.testing.strategies")
