"""Fake devices for tests, in plain Python: usable under `@given`, in unittest, in a script.

`FakeDevice` is a BAR of `size` bytes in a memfd (what a VMM maps, and what can back a KVM
memory slot), with three ways for a filter to reach it. `fake_device()` is the context manager
that closes it; `DeviceFactory` makes many and closes the rest when it is closed.

Lifetime, the one rule that matters: a filter over a fake device holds its memory (a
`MemoryBackend` points into the mapping; an `FdBackend` names the memfd). So every backend a
device hands out keeps the device alive, and a device is released only when no such backend
is left: `close()` while a filter still lives defers the release to the moment the last one
goes (and warns, `MappingKeptWarning`), never unmapping memory or closing an fd number under a
live filter (where a reused fd number would send the filter's writes to another file). A device
nothing refers to any more is released by the garbage collector.
"""

from __future__ import annotations

import gc
import mmap
import os
import threading
import warnings
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

from ..backends import Backend, CallbackBackend, FdBackend, MemoryBackend

B = TypeVar("B", bound=Backend)

#: Size of a fake device when none is given: 16 pages of 4 KiB.
DEFAULT_SIZE = 0x10000

#: One device access as a callback backend logs it: `(offset, width, is_write, value)`, the form
#: `assert_security` and `ModelDevice.log` use.
DeviceAccess = tuple[int, int, bool, int]


class MappingKeptWarning(UserWarning):
    """A filter outlived its fake device's `close()`, so the device's memory and memfd stay
    until that filter is gone.

    Not a ResourceWarning, which Python ignores by default: a test that keeps a filter alive
    (in a global, a cache) is worth seeing.
    """


def _release(fd: int, buf: mmap.mmap) -> None:
    """Unmap and close, once nothing can reach the device any more (a weakref finalizer)."""
    try:
        buf.close()
    except BufferError:
        # A backend in the same garbage cycle still exports the buffer: the mmap unmaps itself
        # when that export goes.
        pass
    os.close(fd)


class _Hold:
    """What a backend holds of its fake device: its end retries the device's deferred close."""

    __slots__ = ("__weakref__", "device")

    def __init__(self, device: FakeDevice) -> None:
        self.device = device
        weakref.finalize(self, _retry, device)


def _retry(device: FakeDevice) -> None:
    if device.closed:
        device._try_release()


# Closed devices waiting for their filters to go. Strong references: such a device is released
# by `_try_release`, never dropped unreleased.
_pending: set[FakeDevice] = set()


def sweep() -> int:
    """Release every closed fake device no filter uses any more; how many are still kept."""
    for device in list(_pending):
        device._try_release()
    return len(_pending)


class FakeDevice:
    """A BAR of `size` bytes in a memfd, mapped shared at `buf`; little-endian registers.

    `read`/`write` (and `read32`/`write32`) are the test's own view of the registers, which the
    filter does not see. `memory_backend()`, `fd_backend()` and `callback_backend()` are three
    ways for a filter to reach the same bytes; accesses through the callback backend are
    appended to `log`. A context manager: `with FakeDevice(0x2000) as dev: ...` closes it.
    """

    def __init__(self, size: int = DEFAULT_SIZE, *, initial: bytes | None = None) -> None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"fake device size {size!r} is not a positive integer")
        if initial is not None and len(initial) > size:
            raise ValueError(f"{len(initial)} initial bytes do not fit in {size:#x}")
        sweep()  # devices whose release had to wait for their filters
        self.size = size
        self.log: list[DeviceAccess] = []
        self.closed = False
        self._backends: weakref.WeakSet[Backend] = weakref.WeakSet()
        self._lock = threading.Lock()
        self.fd = os.memfd_create("mmiofilter-fake-bar", os.MFD_CLOEXEC)
        try:
            os.ftruncate(self.fd, size)  # sparse: a 64 GiB BAR costs the pages touched
            self.buf = mmap.mmap(self.fd, size)
        except BaseException:
            os.close(self.fd)
            raise
        if initial:
            self.buf[: len(initial)] = initial
        self._finalizer = weakref.finalize(self, _release, self.fd, self.buf)

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"fd {self.fd}"
        return f"FakeDevice(size={self.size:#x}, {state})"

    def __enter__(self) -> FakeDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        # No warning: `with FakeDevice() as d` leaves the filters made in the block bound in
        # the caller's frame, which is no leak (they release the device when they go).
        self.close(warn=False)

    # ---- the test's view of the registers ---------------------------------------------------

    def _check(self, offset: int, width: int) -> None:
        if width not in (1, 2, 4, 8) or not 0 <= offset <= self.size - width:
            raise ValueError(f"{width}-byte register at {offset:#x} is not inside {self!r}")
        if not self._finalizer.alive:
            raise ValueError(f"{self!r} is released")

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

    def adopt(self, backend: B) -> B:
        """Count `backend` (one that reaches this device's memory, made some other way) as this
        device's: the device stays until it is gone. Every backend below is adopted."""
        if self.closed:
            raise ValueError(f"{self!r}: no new backend over a closed device")
        # The backend keeps the device (its memory, its fd number) alive as long as it lives.
        # Set last, so that when the backend goes its other attributes (a MemoryBackend's
        # export of `buf`) are dropped before this one, whose end retries a deferred close.
        backend._fake_device = _Hold(self)  # type: ignore[attr-defined]
        self._backends.add(backend)
        return backend

    def memory_backend(self) -> MemoryBackend:
        """Exact-width loads and stores into the mapping: the VMM's fast path."""
        return self.adopt(MemoryBackend(self.buf))

    def fd_backend(self) -> FdBackend:
        """pread/pwrite on the memfd: the VFIO slow path."""
        return self.adopt(FdBackend(self.fd))

    def callback_backend(self) -> CallbackBackend:
        """The filter's device accesses, logged in `log`, then made on the mapping."""

        def read(offset: int, width: int) -> int:
            value = self.read(offset, width)
            with self._lock:
                self.log.append((offset, width, False, value))
            return value

        def write(offset: int, width: int, value: int) -> None:
            with self._lock:
                self.log.append((offset, width, True, value))
            self.write(offset, width, value)

        return self.adopt(CallbackBackend(read, write))

    # ---- teardown ---------------------------------------------------------------------------

    @property
    def in_use(self) -> bool:
        """Whether a backend this device handed out (so a filter over it) is still alive."""
        return any(True for _ in self._backends)  # iteration skips the dead

    def close(self, *, warn: bool = True) -> bool:
        """Unmap and close the memfd; True when done now. While a filter over one of this
        device's backends is alive, the release waits until the last one goes (and `warn`
        says whether to warn, `MappingKeptWarning`): nothing is unmapped or closed under a
        live filter."""
        if self.closed:
            return self.released
        self.closed = True
        if self.in_use:
            # A filter in a reference cycle (a callback backend, a traceback) goes only when
            # the collector runs.
            gc.collect()
        if self._try_release():
            return True
        if warn:
            warnings.warn(
                f"{self!r}: a filter over it outlived close(); its memory and memfd are kept "
                "until that filter is gone",
                MappingKeptWarning,
                stacklevel=2,
            )
        return False

    def _try_release(self) -> bool:
        """Release a closed device if no filter can reach it any more; else try again when the
        last of its backends goes (or at the next `sweep()`)."""
        if self.released:
            _pending.discard(self)
            return True
        if not self.closed or self.in_use:
            _pending.add(self)
            return False
        try:
            self.buf.close()
        except BufferError:
            # A buffer export outlives the backends (a backend made from `buf` directly).
            _pending.add(self)
            return False
        self._finalizer()  # closes the fd, once
        _pending.discard(self)
        return True

    @property
    def released(self) -> bool:
        """Whether the memory and the memfd are gone."""
        return not self._finalizer.alive


@contextmanager
def fake_device(size: int = DEFAULT_SIZE, *, initial: bytes | None = None) -> Iterator[FakeDevice]:
    """A fresh `FakeDevice`, closed at the end of the block (released then, or as soon as the
    last filter over it goes)."""
    device = FakeDevice(size, initial=initial)
    try:
        yield device
    finally:
        device.close(warn=False)


class DeviceFactory:
    """`make(size=DEFAULT_SIZE, *, initial=None) -> FakeDevice`: a fresh device on every call.

    The factory holds its devices weakly: one the caller drops is released by the collector as
    soon as no filter uses it, so a factory that lives for a whole test session (as the pytest
    fixture does, for `@given` tests) does not pile up memfds. `close()` closes those left.
    """

    def __init__(self) -> None:
        self._devices: weakref.WeakSet[FakeDevice] = weakref.WeakSet()

    def __call__(self, size: int = DEFAULT_SIZE, *, initial: bytes | None = None) -> FakeDevice:
        device = FakeDevice(size, initial=initial)
        self._devices.add(device)
        return device

    @property
    def devices(self) -> list[FakeDevice]:
        """The devices made and not yet released."""
        return [d for d in self._devices if not d.released]

    def close(self, *, warn: bool = True) -> None:
        for device in self.devices:
            device.close(warn=warn)

    def __enter__(self) -> DeviceFactory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
