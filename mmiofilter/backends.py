"""How the filter reaches the device (contract §1): memory, fd, or a Python callback.

A backend only describes the device to the C core; the core does every device access itself
(exact width, little-endian), so what passes the filter is exactly what the device sees.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ._core import ffi, lib
from .errors import BackendError


class Backend:
    """Base class: fills a `struct mf_backend` for the C core."""

    def _configure(self, be: Any, bar_size: int) -> None:
        raise NotImplementedError

    def _raise_failure(self, where: str) -> None:
        raise BackendError(f"{where}: the backend failed")

    def _has_failure(self) -> bool:
        """Did this backend fail the calling thread's last access (a callback that raised)?"""
        return False


class MemoryBackend(Backend):
    """A writable buffer holding the BAR: an mmap of a sysfs `resourceN` file, a VFIO region,
    a memfd, or a bytearray in tests. The core uses exact-width volatile loads and stores."""

    def __init__(self, buffer: Any) -> None:
        try:
            self._cbuf = ffi.from_buffer(buffer, require_writable=True)
        except (TypeError, BufferError) as e:
            raise TypeError(f"MemoryBackend needs a writable buffer: {e}") from None
        self.buffer = buffer  # keeps the memory alive as long as the backend
        self.length = len(self._cbuf)

    def _configure(self, be: Any, bar_size: int) -> None:
        if self.length < bar_size:
            raise ValueError(
                f"MemoryBackend: buffer of {self.length:#x} bytes is smaller than the BAR "
                f"({bar_size:#x} bytes)"
            )
        be.kind = lib.MF_BACKEND_MEMORY
        be.base = self._cbuf
        be.length = self.length


class FdBackend(Backend):
    """pread/pwrite of exactly the access width at `offset` + BAR offset: the VFIO slow path
    (a region of a VFIO device fd) or a sysfs `resourceN` file."""

    def __init__(self, fd: int, offset: int = 0) -> None:
        if not isinstance(fd, int) or fd < 0:
            raise ValueError(f"FdBackend: fd must be a non-negative integer, not {fd!r}")
        if not isinstance(offset, int) or not 0 <= offset < 2**63:
            raise ValueError(f"FdBackend: offset must be in 0..2**63-1, not {offset!r}")
        self.fd = fd
        self.offset = offset

    def _configure(self, be: Any, bar_size: int) -> None:
        if self.offset + bar_size > 2**63 - 1:
            raise ValueError(
                f"FdBackend: offset {self.offset:#x} + BAR size {bar_size:#x} passes 2**63"
            )
        be.kind = lib.MF_BACKEND_FD
        be.fd = self.fd
        be.fd_offset = self.offset


ReadFn = Callable[[int, int], int]
WriteFn = Callable[[int, int, int], object]


class CallbackBackend(Backend):
    """A device model in Python: `read(offset, width) -> int`, `write(offset, width, value)`.

    Called from the C core with exactly the widths and offsets that reach the device. An
    exception in a callback fails the access with BackendError (chained to it). The callbacks
    must not call back into the filter that uses them.
    """

    def __init__(self, read: ReadFn, write: WriteFn) -> None:
        if not callable(read) or not callable(write):
            raise TypeError("CallbackBackend needs callable read and write")
        self.read = read
        self.write = write
        self._handle = ffi.new_handle(self)
        self._failure = threading.local()  # per vCPU thread: the exception to re-raise

    def _configure(self, be: Any, bar_size: int) -> None:
        be.kind = lib.MF_BACKEND_CALLBACK
        be.read = lib.mf_py_read
        be.write = lib.mf_py_write
        be.ctx = self._handle

    def _fail(self, exc: BaseException) -> int:
        self._failure.exc = exc
        return -1

    def _has_failure(self) -> bool:
        return getattr(self._failure, "exc", None) is not None

    def _raise_failure(self, where: str) -> None:
        exc = getattr(self._failure, "exc", None)
        self._failure.exc = None
        raise BackendError(f"{where}: the device callback failed: {exc!r}") from exc


@ffi.def_extern()  # type: ignore[untyped-decorator]
def mf_py_read(ctx: Any, offset: int, width: int, value: Any) -> int:
    cb: CallbackBackend = ffi.from_handle(ctx)
    try:
        v = cb.read(offset, width)
        if not isinstance(v, int) or not 0 <= v < 1 << (8 * width):
            raise ValueError(f"read callback returned {v!r}, not a {width}-byte value")
        value[0] = v
        return 0
    except BaseException as e:  # any failure fails the access, never the VMM's thread
        return cb._fail(e)


@ffi.def_extern()  # type: ignore[untyped-decorator]
def mf_py_write(ctx: Any, offset: int, width: int, value: int) -> int:
    cb: CallbackBackend = ffi.from_handle(ctx)
    try:
        cb.write(offset, width, value)
        return 0
    except BaseException as e:
        return cb._fail(e)
