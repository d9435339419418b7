"""The core's return codes: one meaning each, a text for each (mf_strerror), and an mf_error
saying why an update failed (mmiofilter.h states the conventions)."""

from __future__ import annotations

import pytest
from mmiofilter._core import ffi, lib

import mmiofilter as mf
from mmiofilter import _binding as cb


def test_every_error_code_has_its_own_text() -> None:
    codes = [getattr(lib, n) for n in dir(lib) if n.startswith("MF_E") and getattr(lib, n) < 0]
    assert sorted(codes) == list(range(-lib.MF_ERRORS_MAX, 0))
    texts = {cb.strerror(c) for c in codes}
    assert len(texts) == len(codes)
    assert cb.strerror(-99) == "unknown error" and cb.strerror(1) == "unknown error"
    assert cb.strerror(lib.MF_OK) == "success"


def test_nesting_too_deep_is_its_own_code_not_busy() -> None:
    """Filters whose callback backends call into the next filter, one more than the core's
    nesting limit: the innermost access fails with MF_ENESTED (MF_EBUSY is an update from
    inside an access, and nothing else)."""
    codes: list[int] = []
    chain: list[mf.BarFilter] = []

    def read_through(i: int) -> mf.CallbackBackend:
        def read(offset: int, width: int) -> int:
            if i + 1 < len(chain):
                return chain[i + 1].read(offset, width)
            res = ffi.new("struct mf_result *")
            codes.append(lib.mf_access_scalar(chain[0]._f, offset, width, 0, 0, res))
            return 0

        return mf.CallbackBackend(read, lambda o, w, v: None)

    for i in range(lib.MF_NESTING_MAX):
        chain.append(mf.BarFilter(0x1000, mf.Policy([]), read_through(i), page_size=4096))
    assert chain[0].read(0, 4) == 0
    assert codes == [lib.MF_ENESTED]


def test_deep_nesting_through_python_is_a_runtime_error_naming_it() -> None:
    chain: list[mf.BarFilter] = []

    def backend(i: int) -> mf.CallbackBackend:
        def read(offset: int, width: int) -> int:
            return chain[(i + 1) % len(chain)].read(offset, width)

        return mf.CallbackBackend(read, lambda o, w, v: None)

    for i in range(2):
        chain.append(mf.BarFilter(0x1000, mf.Policy([]), backend(i), page_size=4096))
    with pytest.raises(mf.BackendError) as e:
        chain[0].read(0, 4)
    # the innermost failure is the nesting limit, carried out through each callback
    cause: BaseException | None = e.value
    while cause is not None and not isinstance(cause, RuntimeError):
        cause = cause.__cause__
    assert cause is not None and "nested too deeply" in str(cause)


def test_a_failed_update_says_why() -> None:
    dev = bytearray(0x2000)
    f = mf.BarFilter(0x2000, mf.Policy([]), mf.MemoryBackend(dev), page_size=4096)
    name = ffi.new("char[]", b"r")
    rule = ffi.new("struct mf_rule *", {"name": name, "start": 0, "size": 4, "action": 0})
    cfg = ffi.new("struct mf_config *", {"bar_size": 0x1000, "page_size": 4096})
    err = ffi.new("struct mf_error *")
    t = lib.mf_table_compile(rule, 1, cfg, err)
    old = ffi.new("struct mf_table **")
    assert lib.mf_filter_update(f._f, t, old, err) == lib.MF_EINVAL
    assert "BAR size 0x1000" in ffi.string(err.message).decode()
    lib.mf_table_free(t)  # a refused table stays the caller's
    assert lib.mf_filter_update(f._f, ffi.NULL, old, err) == lib.MF_EINVAL
    assert ffi.string(err.message) == b"table or old is NULL"
