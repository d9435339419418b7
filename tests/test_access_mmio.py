"""mf_access_mmio: a KVM_EXIT_MMIO as KVM gives it (len 1..8, data little-endian, filled in
for reads). A width is one access; a fragment of 3, 5, 6 or 7 bytes is taken apart into
naturally aligned accesses, each decided as the reference model decides it
(docs/contract-details.md, item 11); an invalid exit touches nothing."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from mmiofilter._core import ffi, lib

import mmiofilter as mf
from mmiofilter import Rule
from mmiofilter.testing.model import ModelDevice, ModelFilter

SIZE = 0x2000
POLICY = mf.Policy(
    [
        Rule("deny", 0x1002, 2, "deny"),
        Rule("ro", 0x1008, 4, "readonly"),
        Rule("mask", 0x1010, 4, "mask", mask=0x00FF00FF, value=0x00120034),
        Rule("emu", 0x1018, 3, "emulate", value=0xABCDEF),
        Rule("audit", 0x1020, 4, "audit"),
    ],
    fill=0xEE,
    partial="split",
)
INITIAL = bytes((i * 13 + 5) & 0xFF for i in range(SIZE))


def pieces(offset: int, length: int) -> list[tuple[int, int]]:
    """The fragment rule, written out: the access itself for a width, else the widest
    naturally aligned pieces from the left."""
    if length in (1, 2, 4, 8):
        return [(offset, length)]
    out, end = [], offset + length
    while offset < end:
        w = 8
        while w > 1 and (offset % w or offset + w > end):
            w //= 2
        out.append((offset, w))
        offset += w
    return out


def recording() -> tuple[mf.BarFilter, list[tuple], bytearray]:
    mem = bytearray(INITIAL)
    seen: list[tuple] = []

    def read(off: int, w: int) -> int:
        seen.append(("r", off, w))
        return int.from_bytes(mem[off : off + w], "little")

    def write(off: int, w: int, v: int) -> None:
        seen.append(("w", off, w, v))
        mem[off : off + w] = v.to_bytes(w, "little")

    f = mf.BarFilter(SIZE, POLICY, mf.CallbackBackend(read, write), ring_capacity=1 << 12)
    return f, seen, mem


def mmio(
    f: mf.BarFilter, off: int, length: int, is_write: bool, value: int
) -> tuple[int, bytes, int]:
    data = ffi.new("uint8_t[8]", list(value.to_bytes(8, "little")))
    res = ffi.new("struct mf_result *")
    rc = lib.mf_access_mmio(f._f, off, length, is_write, data, res)
    assert rc == res.status
    return rc, bytes(data[0:8]), int(res.value)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0x0FF8, 0x1028),
    st.integers(1, 8),
    st.booleans(),
    st.integers(0, (1 << 64) - 1),
)
def test_fragments_follow_the_model(off: int, length: int, is_write: bool, raw: int) -> None:
    value = raw & ((1 << (8 * length)) - 1) if is_write else 0
    f, _, mem = recording()
    model_dev = ModelDevice(INITIAL)
    model = ModelFilter(SIZE, POLICY, model_dev, ring_capacity=1 << 12)
    want = 0
    for at, w in pieces(off, length):
        shift = 8 * (at - off)
        r = model.access(at, w, is_write, (value >> shift) & ((1 << (8 * w)) - 1))
        want |= r.value << shift
    rc, data, got = mmio(f, off, length, is_write, value)
    assert rc == lib.MF_OK
    assert got == want
    if not is_write:
        assert int.from_bytes(data[:length], "little") == want
    else:
        assert data == value.to_bytes(8, "little")  # a write's data is left as it was
    assert bytes(mem) == bytes(model_dev.byte(i) for i in range(SIZE))
    assert f.drain_events() == model.drain_events()


def test_a_fragment_is_taken_apart_into_aligned_accesses() -> None:
    """3 bytes at 0x1001: 1 byte at 0x1001, then 2 at 0x1002 (denied): the device sees one
    read, the guest the device byte and two fill bytes, and the outcome says it was mixed."""
    f, seen, mem = recording()
    rc, data, got = mmio(f, 0x1001, 3, False, 0)
    assert rc == lib.MF_OK and seen == [("r", 0x1001, 1)]
    assert data[:3] == bytes([mem[0x1001], 0xEE, 0xEE])
    assert got == int.from_bytes(data[:3], "little")
    res = ffi.new("struct mf_result *")
    buf = ffi.new("uint8_t[8]")
    lib.mf_access_mmio(f._f, 0x1001, 3, False, buf, res)
    assert res.outcome == lib.MF_PARTIAL


def test_invalid_exits_touch_nothing() -> None:
    f, seen, _ = recording()
    for off, length, code in [
        (0x1000, 0, lib.MF_EWIDTH),
        (0x1000, 9, lib.MF_EWIDTH),
        (SIZE - 2, 3, lib.MF_ERANGE),  # its first piece is in range: still nothing happens
        (SIZE, 1, lib.MF_ERANGE),
        ((1 << 64) - 2, 5, lib.MF_ERANGE),  # wraps
    ]:
        for is_write in (False, True):
            rc, _, got = mmio(f, off, length, is_write, 0x11)
            assert (rc, got) == (code, 0), (hex(off), length)
    assert seen == [] and f.drain_events() == []
    assert all(n == 0 for n in f.counters().values())
