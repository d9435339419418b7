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
  device=None, bar=0, ring_capacity=1024) -> BarFilter` over a fake device (a new one unless
  `device` is given); `bar_filter_factory.device(f)` is the device under `f`.
- `model_filter_factory`: the same for the pure-Python reference model over a `ModelDevice`
  (`model_filter_factory.device(m)` has its access `log`).
- `mmio_strategies`: the module `mmiofilter.testing.strategies` (hypothesis strategies for page
  sizes, BAR sizes, rules, policies, valid and invalid accesses); the test skips when
  hypothesis is not installed. In `@given(...)` arguments, which are evaluated at import, use
  `from mmiofilter.testing import strategies` instead.

Teardown drops the filters before unmapping their devices: a filter over a `MemoryBackend`
holds a pointer into the mapping. Filters a test made itself are released by then too, unless
something still holds one (the traceback of a failed test does); its device's mapping is then
kept, never unmapped under a live filter, and, when the test passed, a `MappingKeptWarning`
says so.

The plugin does not import hypothesis: only `mmio_strategies` does, when a test asks for it.
"""

from __future__ import annotations

import gc
import importlib
import mmap
import os
import warnings
from collections.abc import Iterable, Iterator
from types import ModuleType

import pytest

from ..backends import Backend, CallbackBackend, FdBackend, MemoryBackend
from ..filter import DEFAULT_RING_CAPACITY, BarFilter
from ..rules import Policy, Rule
from .model import ModelDevice, ModelFilter

#: Size of the BAR `mmio_device` gives when not parametrized: 16 pages of 4 KiB.
DEFAULT_SIZE = 0x10000
#: Page size of the factories' filters. Not the host's (the filter's default): a test's
#: layout should not depend on the machine it runs on.
DEFAULT_PAGE_SIZE = 4096
#: How `bar_filter_factory` reaches the device when `backend` names a kind.
BACKEND_KINDS = ("memory", "fd", "callback")

DeviceAccess = tuple[int, int, bool, int]


class MappingKeptWarning(UserWarning):
    """A filter outlived its test, so its fake device's memory could not be unmapped.

    Not a ResourceWarning, which Python ignores by default: a test that keeps a filter alive
    (in a global, a cache) is worth seeing.
    """


# Mappings a test still had a filter over at teardown: never unmapped, so that such a filter
# reads stale memory at worst, not freed memory.
_kept_mappings: list[mmap.mmap] = []
# Tests whose call failed, until their teardown: their traceback holds their filters, which is
# no news worth a warning.
_failed: set[str] = set()


class FakeDevice:
    """A BAR of `size` bytes in a memfd, mapped shared at `buf`; little-endian registers.

    `read`/`write` (and `read32`/`write32`) are the test's own view of the registers, which
    the filter does not see. `memory_backend()`, `fd_backend()` and `callback_backend()` are
    three ways for a filter to reach the same bytes; accesses through the callback backend are
    appended to `log` as `(offset, width, is_write, value)`, the form `assert_security` and
    `ModelDevice.log` use.
    """

    def __init__(self, size: int = DEFAULT_SIZE, *, initial: bytes | None = None) -> None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"fake device size {size!r} is not a positive integer")
        if initial is not None and len(initial) > size:
            raise ValueError(f"{len(initial)} initial bytes do not fit in {size:#x}")
        self.size = size
        self.log: list[DeviceAccess] = []
        self.closed = False
        self.fd = os.memfd_create("mmiofilter-fake-bar", os.MFD_CLOEXEC)
        try:
            os.ftruncate(self.fd, size)  # sparse: a 64 GiB BAR costs the pages touched
            self.buf = mmap.mmap(self.fd, size)
        except BaseException:
            os.close(self.fd)
            raise
        if initial:
            self.buf[: len(initial)] = initial

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"fd {self.fd}"
        return f"FakeDevice(size={self.size:#x}, {state})"

    # ---- the test's view of the registers ---------------------------------------------------

    def _check(self, offset: int, width: int) -> None:
        if width not in (1, 2, 4, 8) or not 0 <= offset <= self.size - width:
            raise ValueError(f"{width}-byte register at {offset:#x} is not inside {self!r}")

    def read(self, offset: int, width: int) -> int:
        self._check(offset, width)
        return int.from_bytes(self.buf[offset : offset + width], "little")

    def write(self, offset: int, width: int, value: int) -> None:
        self._check(offset, width)
        self.buf[offset : offset + width] = value.to_bytes(width, "little")

    def read32(self, offset: int) -> int:
        return self.read(offset, 4)

    def write32(self, offset: int, value: int) -> None:
        self.write(offset, 4, value)

    # ---- ways for a filter to reach it ------------------------------------------------------

    def memory_backend(self) -> MemoryBackend:
        """Exact-width loads and stores into the mapping: the VMM's fast path."""
        return MemoryBackend(self.buf)

    def fd_backend(self) -> FdBackend:
        """pread/pwrite on the memfd: the VFIO slow path."""
        return FdBackend(self.fd)

    def callback_backend(self) -> CallbackBackend:
        """The filter's device accesses, logged in `log`, then made on the mapping."""

        def read(offset: int, width: int) -> int:
            value = self.read(offset, width)
            self.log.append((offset, width, False, value))
            return value

        def write(offset: int, width: int, value: int) -> None:
            self.log.append((offset, width, True, value))
            self.write(offset, width, value)

        return CallbackBackend(read, write)

    # ---- teardown ---------------------------------------------------------------------------

    def close(self, *, warn: bool = True) -> None:
        """Unmap and close. A filter over `memory_backend()` must be gone first; if one is
        still alive, the mapping is kept for it (and `warn` says whether to say so)."""
        if self.closed:
            return
        self.closed = True
        try:
            self.buf.close()
        except BufferError:  # a filter still exports the buffer
            # A filter in a reference cycle (a callback backend, a traceback) goes only when
            # the collector runs.
            gc.collect()
            try:
                self.buf.close()
            except BufferError:
                _kept_mappings.append(self.buf)
                if warn:
                    warnings.warn(
                        f"{self!r}: a filter over its memory outlived the test; the mapping "
                        "is kept so that it never reads unmapped memory",
                        MappingKeptWarning,
                        stacklevel=2,
                    )
        os.close(self.fd)


class DeviceFactory:
    """`make(size=DEFAULT_SIZE, *, initial=None) -> FakeDevice`; closes them all at teardown."""

    def __init__(self) -> None:
        self.devices: list[FakeDevice] = []

    def __call__(self, size: int = DEFAULT_SIZE, *, initial: bytes | None = None) -> FakeDevice:
        device = FakeDevice(size, initial=initial)
        self.devices.append(device)
        return device

    def close(self, *, warn: bool = True) -> None:
        for device in reversed(self.devices):
            device.close(warn=warn)
        self.devices.clear()


def _as_policy(policy: Policy | Iterable[Rule]) -> Policy:
    return policy if isinstance(policy, Policy) else Policy(policy)


class BarFilterFactory:
    """`make(policy, ...) -> BarFilter` over a fake device; see the module's docstring."""

    def __init__(self, devices: DeviceFactory) -> None:
        self._devices = devices
        self._made: list[tuple[BarFilter, FakeDevice | None]] = []

    def __call__(
        self,
        policy: Policy | Iterable[Rule] = (),
        *,
        size: int | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        backend: str | Backend = "memory",
        device: FakeDevice | None = None,
        bar: int = 0,
        ring_capacity: int = DEFAULT_RING_CAPACITY,
    ) -> BarFilter:
        """A filter of `policy` (a Policy, or rules for a default one) over `device`, or over a
        new fake device of `size` bytes (default `DEFAULT_SIZE`). `backend` is "memory",
        "fd", "callback" (logged in the device's `log`) or a Backend of your own."""
        if device is not None and size is not None and size > device.size:
            raise ValueError(f"a BAR of {size:#x} bytes does not fit in {device!r}")
        if isinstance(backend, Backend):
            chosen: Backend = backend
            bar_size = size if size is not None else (device.size if device else DEFAULT_SIZE)
        else:
            if backend not in BACKEND_KINDS:
                raise ValueError(f"backend {backend!r} is not one of {BACKEND_KINDS} or a Backend")
            if device is None:
                device = self._devices(DEFAULT_SIZE if size is None else size)
            bar_size = device.size if size is None else size
            if backend == "memory":
                chosen = device.memory_backend()
            elif backend == "fd":
                chosen = device.fd_backend()
            else:
                chosen = device.callback_backend()
        f = BarFilter(
            bar_size,
            _as_policy(policy),
            chosen,
            bar=bar,
            page_size=page_size,
            ring_capacity=ring_capacity,
        )
        self._made.append((f, device))
        return f

    def device(self, f: BarFilter) -> FakeDevice:
        """The fake device `f` was made over."""
        for made, device in self._made:
            if made is f and device is not None:
                return device
        raise LookupError("this filter was not made by this factory over a fake device")

    def close(self) -> None:
        # Only references go here; the device factory, torn down after this one, unmaps.
        self._made.clear()


class ModelFilterFactory:
    """`make(policy, ...) -> ModelFilter` over a fresh `ModelDevice` (which logs every device
    access): the reference model of contract §2-4, to compare a component's results against."""

    def __init__(self) -> None:
        self._made: list[tuple[ModelFilter, ModelDevice]] = []

    def __call__(
        self,
        policy: Policy | Iterable[Rule] = (),
        *,
        size: int = DEFAULT_SIZE,
        page_size: int = DEFAULT_PAGE_SIZE,
        bar: int = 0,
        ring_capacity: int = DEFAULT_RING_CAPACITY,
        initial: bytes | None = None,
    ) -> ModelFilter:
        device = ModelDevice(initial)
        m = ModelFilter(
            size,
            _as_policy(policy),
            device,
            bar=bar,
            page_size=page_size,
            ring_capacity=ring_capacity,
        )
        self._made.append((m, device))
        return m

    def device(self, m: ModelFilter) -> ModelDevice:
        """The `ModelDevice` under `m`, with its `log` of device accesses."""
        for made, device in self._made:
            if made is m:
                return device
        raise LookupError("this model filter was not made by this factory")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and report.failed:
        _failed.add(report.nodeid)


@pytest.fixture
def mmio_device_factory(request: pytest.FixtureRequest) -> Iterator[DeviceFactory]:
    """`make(size=0x10000, *, initial=None) -> FakeDevice`: memfd-backed fake BARs."""
    factory = DeviceFactory()
    yield factory
    nodeid = request.node.nodeid
    factory.close(warn=nodeid not in _failed)
    _failed.discard(nodeid)


@pytest.fixture
def mmio_device(request: pytest.FixtureRequest, mmio_device_factory: DeviceFactory) -> FakeDevice:
    """A memfd-backed fake BAR of 0x10000 zero bytes; indirect parametrization sets its size
    (an int) or its size and initial bytes (a dict with `size` and `initial`)."""
    param: object = getattr(request, "param", DEFAULT_SIZE)
    if isinstance(param, dict):
        unknown = set(param) - {"size", "initial"}
        if unknown:
            raise ValueError(f"mmio_device parameters {sorted(unknown)} are not size, initial")
        return mmio_device_factory(param.get("size", DEFAULT_SIZE), initial=param.get("initial"))
    if not isinstance(param, int):
        raise TypeError(f"mmio_device parameter {param!r} is not a size or a dict")
    return mmio_device_factory(param)


@pytest.fixture
def bar_filter_factory(mmio_device_factory: DeviceFactory) -> Iterator[BarFilterFactory]:
    """`make(policy, *, size, page_size, backend, device, bar, ring_capacity) -> BarFilter`
    over a fake device; the filters are dropped before the devices are unmapped."""
    factory = BarFilterFactory(mmio_device_factory)
    yield factory
    factory.close()


@pytest.fixture
def model_filter_factory() -> ModelFilterFactory:
    """`make(policy, *, size, page_size, bar, ring_capacity, initial) -> ModelFilter`."""
    return ModelFilterFactory()


@pytest.fixture(scope="session")
def mmio_strategies() -> ModuleType:
    """`mmiofilter.testing.strategies` (hypothesis strategies); skips without hypothesis.

    Session-scoped: a module has no state, and hypothesis' health check rejects
    function-scoped fixtures in `@given` tests.
    """
    pytest.importorskip("hypothesis", reason="mmio_strategies needs hypothesis")
    return importlib.import_module("mmiofilter.testing.strategies")
