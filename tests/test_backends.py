"""The three backends reach the device with exactly the guest's width, and fail cleanly."""

from __future__ import annotations

import mmap
import os

import pytest

import mmiofilter as mf
from mmiofilter import Outcome, Rule


def memfd(size: int) -> int:
    fd = os.memfd_create("bar0")
    os.ftruncate(fd, size)
    return fd


def test_memory_backend_over_a_memfd_mapping() -> None:
    fd = memfd(0x2000)
    try:
        with mmap.mmap(fd, 0x2000) as m:
            m[0x10:0x18] = bytes(range(1, 9))
            f = mf.BarFilter(0x2000, mf.Policy([]), mf.MemoryBackend(m), page_size=4096)
            assert f.read(0x10, 8) == 0x0807060504030201
            assert f.read(0x11, 4) == 0x05040302  # unaligned: one access, little-endian
            assert f.write(0x1003, 2, 0xBEEF) is Outcome.PASS
            assert m[0x1003:0x1005] == b"\xef\xbe"
            assert os.pread(fd, 2, 0x1003) == b"\xef\xbe"  # the same memory, as a VMM maps it
            del f
    finally:
        os.close(fd)


def test_fd_backend_reads_and_writes_at_its_offset() -> None:
    fd = memfd(0x3000)
    try:
        os.pwrite(fd, bytes(range(16)), 0x1000)
        f = mf.BarFilter(
            0x1000, mf.Policy([Rule("ro", 8, 8, "readonly")]), mf.FdBackend(fd, 0x1000)
        )
        assert f.read(0, 4) == 0x03020100
        assert f.read(6, 2) == 0x0706
        assert f.write(8, 4, 0xAABBCCDD) is Outcome.BLOCKED
        assert f.write(4, 4, 0xAABBCCDD) is Outcome.PASS
        assert os.pread(fd, 16, 0x1000) == bytes(
            [0, 1, 2, 3, 0xDD, 0xCC, 0xBB, 0xAA, *range(8, 16)]
        )
    finally:
        os.close(fd)


def test_fd_backend_short_read_is_a_backend_error() -> None:
    fd = memfd(0x800)  # the "BAR" extends past the end of the file
    try:
        f = mf.BarFilter(0x1000, mf.Policy([]), mf.FdBackend(fd))
        with pytest.raises(mf.BackendError, match="offset 0xffc"):
            f.read(0xFFC, 4)
        assert f.drain_events() == []
    finally:
        os.close(fd)


def test_callback_exception_fails_the_access_with_its_cause() -> None:
    def read(offset: int, width: int) -> int:
        raise RuntimeError("device fell off the bus")

    f = mf.BarFilter(0x1000, mf.Policy([]), mf.CallbackBackend(read, lambda o, w, v: None))
    with pytest.raises(mf.BackendError, match="fell off the bus") as e:
        f.read(0x40, 4)
    assert isinstance(e.value.__cause__, RuntimeError)
    assert f.drain_events() == []


@pytest.mark.parametrize("bad", [-1, 2**32, "0", None])
def test_callback_returning_a_bad_value_fails(bad: object) -> None:
    f = mf.BarFilter(
        0x1000, mf.Policy([]), mf.CallbackBackend(lambda o, w: bad, lambda o, w, v: None)
    )
    with pytest.raises(mf.BackendError, match="not a 4-byte value"):
        f.read(0, 4)


def test_callback_sees_exact_widths_and_offsets() -> None:
    seen: list[tuple[str, int, int]] = []

    def read(offset: int, width: int) -> int:
        seen.append(("r", offset, width))
        return 0

    def write(offset: int, width: int, value: int) -> None:
        seen.append(("w", offset, width))

    f = mf.BarFilter(0x1000, mf.Policy([]), mf.CallbackBackend(read, write))
    for w in (1, 2, 4, 8):
        f.read(0x101, w)
        f.write(0x203, w, 0)
    assert seen == [x for w in (1, 2, 4, 8) for x in (("r", 0x101, w), ("w", 0x203, w))]


def test_nested_filters_in_a_callback() -> None:
    """A device model behind one filter may itself go through another filter."""
    inner = mf.BarFilter(
        0x1000, mf.Policy([Rule("d", 0, 4, "deny")]), mf.MemoryBackend(bytearray(0x1000))
    )
    outer = mf.BarFilter(
        0x1000,
        mf.Policy([]),
        mf.CallbackBackend(lambda o, w: inner.read(o, w), lambda o, w, v: inner.write(o, w, v)),
    )
    assert outer.read(0, 4) == 0xFFFFFFFF
    assert outer.read(4, 4) == 0


def test_update_from_inside_a_callback_is_refused_not_a_deadlock() -> None:
    holder: list[mf.BarFilter] = []
    errors: list[BaseException] = []

    def read(offset: int, width: int) -> int:
        try:
            holder[0].update(mf.Policy([]))
        except RuntimeError as e:
            errors.append(e)
        return 0

    f = mf.BarFilter(0x1000, mf.Policy([]), mf.CallbackBackend(read, lambda o, w, v: None))
    holder.append(f)
    assert f.read(0, 4) == 0
    assert len(errors) == 1 and "would wait for itself" in str(errors[0])
