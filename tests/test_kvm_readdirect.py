"""Read-direct pages in real guests under KVM: a page whose bytes are only `allow`, `readonly`
and `mask` is mapped read-only (KVM_MEM_READONLY over a read-only alias of the BAR), so reads
take no exit and see the device, while every write exits and is filtered exactly as the
reference model says, read-modify-write instructions included. Exits are counted, so each test
fails where such pages are trapped. Skipped, with the reason, where /dev/kvm, nasm or
KVM_CAP_READONLY_MEM is missing."""

from __future__ import annotations

import gc
import mmap
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import mmiofilter as mf
from mmiofilter import Rule
from mmiofilter.testing.model import ModelDevice, ModelFilter

from .kvm_helpers import guest_unavailable, memfd_bar

kvm = pytest.importorskip("mmiofilter.kvm")
REASON = guest_unavailable()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"no KVM guest: {REASON}")

GPA = 0xC0000000
SIZE = 0x10000
PAGE = 0x1000
RO, MASK, FREE = 0x1010, 0x1020, 0x1030  # on the read-direct page 1
MASK_BITS, MASK_VALUE = 0x0000FF00, 0x00005A00
DOORBELL = 0x2000  # page 2: trapped (deny)

POLICY = mf.Policy(
    [
        Rule("ro", RO, 4, "readonly"),
        Rule("mask", MASK, 4, "mask", mask=MASK_BITS, value=MASK_VALUE),
        Rule("doorbell", DOORBELL, 4, "deny"),
    ],
    fill=0xEE,
)


@pytest.fixture
def bar() -> Iterator[mmap.mmap]:
    yield from memfd_bar("kvm-readdirect-bar", SIZE)


def machine() -> Any:
    m = kvm.Machine()
    if not m.readonly_mem:
        m.close()
        pytest.skip("KVM has no KVM_CAP_READONLY_MEM")
    return m


def word(buf: mmap.mmap, off: int, width: int = 4) -> int:
    return int.from_bytes(buf[off : off + width], "little")


def test_layout_makes_page_1_read_direct(bar: mmap.mmap) -> None:
    f = mf.BarFilter(SIZE, POLICY, mf.MemoryBackend(bar), page_size=PAGE)
    assert f.layout.read_direct == [(PAGE, PAGE)]
    assert f.layout.page_class(DOORBELL) == "trapped"
    del f


def test_reads_on_a_read_direct_page_take_no_exit(bar: mmap.mmap) -> None:
    f = mf.BarFilter(SIZE, POLICY, mf.MemoryBackend(bar), page_size=PAGE)
    bar[FREE : FREE + 4] = (0x600DF00D).to_bytes(4, "little")  # the device changed it
    prog = kvm.Program()
    for off in (RO, MASK, FREE, PAGE, 2 * PAGE - 4):
        for w in (1, 2, 4):
            prog.read(GPA + off, w)
    prog.loop_read(GPA + RO, 2000)
    with machine() as m:
        w = m.add_bar(GPA, f)
        assert w.read_direct_note is None and len(w.read_only_slots) == 1
        (res,) = m.run([prog])
    assert res.error is None, res.error
    assert res.mmio_in_c == 0 and res.mmio_in_python == 0
    reads = [ln for ln in kvm.parse_transcript(res.transcript) if ln.kind == "R"]
    assert len(reads) == 15
    for ln in reads:
        assert ln.value == word(bar, ln.address - GPA, ln.width), ln
    assert f.drain_events() == []
    del f, w


def write_accesses() -> list[tuple[int, int, int]]:
    """Writes of every width at and across the edges of the protected registers, and on
    allowed bytes of the same page."""
    out = []
    for base in (RO, MASK, FREE):
        for delta in (-2, -1, 0, 1, 2, 3):
            for w in (1, 2, 4):
                off = base + delta
                if off % w == 0 or w == 1 or delta in (-1, 1):  # aligned and straddling ones
                    out.append((off, w, (0xA5C3E1F7 ^ (off * 0x01010101)) & ((1 << 8 * w) - 1)))
    return out


@pytest.mark.parametrize("in_c", [True, False], ids=["c-loop", "python-loop"])
def test_writes_exit_are_filtered_and_reads_see_them(bar: mmap.mmap, in_c: bool) -> None:
    model_dev = ModelDevice(bytes(bar))
    model = ModelFilter(SIZE, POLICY, model_dev, page_size=PAGE, ring_capacity=1 << 12)
    f = mf.BarFilter(SIZE, POLICY, mf.MemoryBackend(bar), page_size=PAGE, ring_capacity=1 << 12)
    accs = write_accesses()
    prog = kvm.Program()
    for off, w, value in accs:
        prog.write(GPA + off, value, w).read(GPA + (off & ~3), 4)
    ro_before = word(bar, RO)
    with machine() as m:
        m.add_bar(GPA, f)
        (res,) = m.run([prog], in_c=in_c)
    assert res.error is None, res.error
    # every write exits (one exit each), no read does
    assert (res.mmio_in_c if in_c else res.mmio_in_python) == len(accs)
    reads = [ln for ln in kvm.parse_transcript(res.transcript) if ln.kind == "R"]
    for (off, w, value), ln in zip(accs, reads, strict=True):
        model.access(off, w, True, value)
        want = model.access(off & ~3, 4, False, 0).value
        assert ln.value == want, (hex(off), w, hex(value), hex(ln.value), hex(want))
    assert bytes(bar[PAGE : 2 * PAGE]) == bytes(model_dev.byte(i) for i in range(PAGE, 2 * PAGE))
    assert word(bar, RO) == ro_before  # the protected bits stay
    assert word(bar, MASK) & MASK_BITS == MASK_VALUE
    assert f.drain_events() == model.drain_events()
    del f


def rmw_expected(model: ModelFilter, kind: str, off: int, value: int, src: list[int]) -> int:
    """What the instruction writes, through the model: the CPU reads the device (the read
    passes), computes, and writes the result, which the filter decides. Returns the register
    the guest holds after it (xchg: the old value)."""
    if kind == "rep movsd":
        for i, dword in enumerate(src):
            model.access(off + 4 * i, 4, True, dword)
        return value
    width = {"or word": 2, "or byte": 1}.get(kind, 4)
    old = model.access(off, width, False, 0).value
    new = {"lock bts": old | 1 << value, "xchg": value}.get(kind, old | value)
    model.access(off, width, True, new & ((1 << 8 * width) - 1))
    return old if kind == "xchg" else value


@pytest.mark.parametrize("in_c", [True, False], ids=["c-loop", "python-loop"])
def test_read_modify_write_instructions_keep_protected_bits(bar: mmap.mmap, in_c: bool) -> None:
    model_dev = ModelDevice(bytes(bar))
    model = ModelFilter(SIZE, POLICY, model_dev, page_size=PAGE, ring_capacity=1 << 12)
    f = mf.BarFilter(SIZE, POLICY, mf.MemoryBackend(bar), page_size=PAGE, ring_capacity=1 << 12)
    src_at, src = 0x8000, [0xFFFFFFFF, 0x00000000, 0x13579BDF, 0xFFFF00FF]
    ops: list[tuple[str, int, int]] = []
    for off in (RO, MASK, FREE):
        ops += [("or", off, 0xFFFFFFFF), ("lock bts", off, 9), ("lock bts", off, 30),
                ("lock or", off, 0x00FF00F0), ("xchg", off, 0x0BADCAFE), ("or word", off, 0xFFFF),
                ("or byte", off + 1, 0xFF), ("xchg", off, 0)]  # fmt: skip
    ops += [("rep movsd", MASK - 4, src_at), ("rep movsd", RO, src_at)]
    prog = kvm.Program()
    for kind, off, value in ops:
        prog.rmw(GPA + off, kind, value, len(src) if kind == "rep movsd" else 0)
    with machine() as m:
        m.add_bar(GPA, f)
        m.ram[src_at : src_at + 4 * len(src)] = b"".join(d.to_bytes(4, "little") for d in src)
        (res,) = m.run([prog], in_c=in_c)
    assert res.error is None, res.error
    lines = [ln for ln in kvm.parse_transcript(res.transcript) if ln.kind == "M"]
    assert len(lines) == len(ops)
    for (kind, off, value), ln in zip(ops, lines, strict=True):
        assert ln.value == rmw_expected(model, kind, off, value, src), (kind, hex(off))
    # only the writes exit: one per instruction, one per dword moved
    writes = len(ops) - 2 + 2 * len(src)
    assert (res.mmio_in_c if in_c else res.mmio_in_python) == writes
    assert bytes(bar[PAGE : 2 * PAGE]) == bytes(model_dev.byte(i) for i in range(PAGE, 2 * PAGE))
    assert word(bar, MASK) & MASK_BITS == MASK_VALUE
    assert f.drain_events() == model.drain_events()
    del f


SWITCH_GPA = GPA + 0x100000  # a second, trapped BAR the guest polls while the host swaps


def test_swap_to_trapped_takes_effect_before_the_next_instruction(bar: mmap.mmap) -> None:
    """Page 1 is read-direct. The guest reads RO (from the mapping, no exit), then polls a
    second BAR; on its first poll the host swaps the first BAR's policy so that RO is emulated
    (Machine.update_policy: every vCPU paused, the slots remapped). The guest's very next read
    of RO, right after the poll loop, is the emulated value and exits."""
    emulated = mf.Policy([Rule("ro", RO, 4, "emulate", value=0xC0FFEE11), *POLICY.rules[1:]])
    f = mf.BarFilter(SIZE, POLICY, mf.MemoryBackend(bar), page_size=PAGE)
    polled = threading.Event()
    swapped = threading.Event()

    def poll(off: int, width: int) -> int:
        polled.set()
        return 1 if swapped.is_set() else 0

    switch_policy = mf.Policy([Rule("switch", 0, 4, "deny")])
    switch_filter = mf.BarFilter(
        PAGE, mf.Policy([]), mf.CallbackBackend(poll, lambda *_: None), page_size=PAGE
    )
    switch_mem = mmap.mmap(-1, PAGE)
    prog = kvm.Program().read(GPA + RO).loop_read(SWITCH_GPA + 8, 20000)
    prog.read(GPA + RO).read(GPA + RO, 1)
    with machine() as m:
        window = m.add_bar(GPA, f)
        # a window needs a memory backend to be placed; its exits then go to the callback
        sw = m.add_bar(SWITCH_GPA, mf.BarFilter(PAGE, switch_policy, mf.MemoryBackend(switch_mem)))
        sw.filter = switch_filter
        m._c_cache = None

        def swapper() -> None:
            if polled.wait(60):
                m.update_policy(window, emulated)
                swapped.set()

        t = threading.Thread(target=swapper)
        t.start()
        (res,) = m.run([prog], in_c=False)
        t.join()
        assert swapped.is_set()
        assert window.read_only_slots == []  # the page lost its read-only slot
    assert res.error is None, res.error
    reads = [ln.value for ln in kvm.parse_transcript(res.transcript) if ln.kind == "R"]
    assert reads == [word(bar, RO), 0xC0FFEE11, 0x11]
    del sw


def test_swap_under_a_running_guest_never_goes_back(bar: mmap.mmap) -> None:
    """update_policy while the guest reads RO in a loop: once a read has seen the emulated
    value (the page trapped), none sees the device again (no stale read-only slot)."""
    emulated = mf.Policy([Rule("ro", RO, 4, "emulate", value=0xC0FFEE11), *POLICY.rules[1:]])
    f = mf.BarFilter(SIZE, POLICY, mf.MemoryBackend(bar), page_size=PAGE)
    prog = kvm.Program()
    for _ in range(6000):  # each read prints a line through ~20 port exits: over a second
        prog.read(GPA + RO)
    with machine() as m:
        window = m.add_bar(GPA, f)
        started = threading.Event()
        failures: list[BaseException] = []

        def swapper() -> None:
            try:
                started.wait(10)
                time.sleep(0.2)  # well inside the guest's run
                m.update_policy(window, emulated)
            except BaseException as e:  # reported below
                failures.append(e)

        t = threading.Thread(target=swapper)
        t.start()
        started.set()
        try:
            (res,) = m.run([prog])
        finally:
            t.join()
    assert failures == []
    assert res.error is None, res.error
    reads = [ln.value for ln in kvm.parse_transcript(res.transcript) if ln.kind == "R"]
    device = word(bar, RO)
    assert set(reads) <= {device, 0xC0FFEE11}
    first = reads.index(0xC0FFEE11) if 0xC0FFEE11 in reads else len(reads)
    assert 0 < first < len(reads), "the swap did not land while the guest was reading"
    assert all(v == 0xC0FFEE11 for v in reads[first:])
    assert res.mmio_in_c == len(reads) - first  # only the reads after the swap exited
    del f


def test_swap_to_read_direct_maps_the_page_read_only(bar: mmap.mmap) -> None:
    """A page trapped by a deny becomes read-direct when the deny turns readonly: the swap
    gives it a read-only slot, and the guest's reads of it no longer exit."""
    denied = mf.Policy([Rule("ro", RO, 4, "deny"), *POLICY.rules[1:]], fill=0xEE)
    f = mf.BarFilter(SIZE, denied, mf.MemoryBackend(bar), page_size=PAGE)
    with machine() as m:
        window = m.add_bar(GPA, f)
        assert window.read_only_slots == []
        m.update_policy(window, POLICY)
        assert len(window.read_only_slots) == 1
        (res,) = m.run([kvm.Program().loop_read(GPA + RO, 1000).read(GPA + RO)])
    assert res.error is None, res.error
    assert res.mmio_in_c == 0
    (line,) = [ln for ln in kvm.parse_transcript(res.transcript) if ln.kind == "R"]
    assert line.value == word(bar, RO)
    del f


def test_without_a_read_only_alias_read_direct_pages_trap(bar: mmap.mmap) -> None:
    """A private mapping has no read-only alias: read-direct pages are trapped instead (never
    mapped writable), and the filter decides their accesses the same way."""
    private = mmap.mmap(-1, SIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    private[:] = bytes(bar)
    f = mf.BarFilter(SIZE, POLICY, mf.MemoryBackend(private), page_size=PAGE)
    with machine() as m:
        window = m.add_bar(GPA, f)
        assert window.read_direct_note is not None and window.read_only_slots == []
        prog = kvm.Program().read(GPA + RO).write(GPA + RO, 0).read(GPA + RO)
        (res,) = m.run([prog])
    assert res.error is None, res.error
    assert res.mmio_in_c == 3
    reads = [ln.value for ln in kvm.parse_transcript(res.transcript) if ln.kind == "R"]
    assert reads == [word(bar, RO)] * 2
    del f, window
    gc.collect()
    private.close()
