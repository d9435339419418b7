"""Real guests under KVM: direct pages cost no exit, trapped accesses are filtered exactly as the
contract says, and vCPUs hammering one BAR while its policy is swapped never see a torn
decision. Skipped, with the reason, where /dev/kvm or nasm is missing."""

from __future__ import annotations

import gc
import mmap
import os
import shutil
import threading
from collections.abc import Iterator

import pytest

import mmiofilter as mf
from mmiofilter import Rule
from mmiofilter.testing.model import ModelDevice, ModelFilter

kvm = pytest.importorskip("mmiofilter.kvm")
REASON = kvm.kvm_available() or (None if shutil.which("nasm") else "nasm is not installed")
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"no KVM guest: {REASON}")

GPA = 0xC0000000
SIZE = 0x10000


@pytest.fixture
def bar() -> Iterator[mmap.mmap]:
    fd = os.memfd_create("kvm-test-bar")
    os.ftruncate(fd, SIZE)
    buf = mmap.mmap(fd, SIZE)
    buf[:] = bytes((i * 7 + 3) & 0xFF for i in range(SIZE))
    yield buf
    gc.collect()  # filters and machines hold the mapping until they are gone
    buf.close()
    os.close(fd)


POLICY = mf.Policy(
    [
        Rule("deny", 0x1000, 4, "deny"),
        Rule("ro", 0x1010, 4, "readonly"),
        Rule("mask", 0x1020, 4, "mask", mask=0x0000FF00, value=0x00005A00),
        Rule("emu", 0x1030, 4, "emulate", value=0xC0FFEE11),
        Rule("audit", 0x1040, 4, "audit"),
    ],
    fill=0xEE,
)


def test_direct_pages_cost_no_exit(bar: mmap.mmap) -> None:
    f = mf.BarFilter(SIZE, POLICY, mf.MemoryBackend(bar), page_size=4096)
    with kvm.Machine() as m:
        m.add_bar(GPA, f)
        prog = (
            kvm.Program()
            .read(GPA + 0x3000)
            .write(GPA + 0x3004, 0xABCD)
            .loop_read(GPA + 0x5000, 500)
        )
        (res,) = m.run([prog])
    assert res.error is None, res.error
    assert res.mmio_in_c == 0 and res.mmio_in_python == 0
    lines = kvm.parse_transcript(res.transcript)
    assert lines[0].value == int.from_bytes(bar[0x3000:0x3004], "little")
    assert bar[0x3004:0x3006] == b"\xcd\xab"  # the guest wrote the BAR's memory itself
    assert f.drain_events() == []


def trapped_program() -> tuple[kvm.Program, list[tuple[int, int, bool, int]]]:
    """Accesses on the trapped page, every width, at and across every rule edge."""
    accs: list[tuple[int, int, bool, int]] = []
    for base in (0x1000, 0x1010, 0x1020, 0x1030, 0x1040):
        for delta in (0, 1, 2, 3, 4) if base == 0x1000 else (-2, -1, 0, 1, 2, 3, 4):
            for w in (1, 2, 4):
                off = base + delta
                accs.append((off, w, False, 0))
                accs.append((off, w, True, (0x11223344 + off) & ((1 << (8 * w)) - 1)))
                accs.append((off, w, False, 0))
    prog = kvm.Program()
    for off, w, is_write, value in accs:
        if is_write:
            prog.write(GPA + off, value, w)
        else:
            prog.read(GPA + off, w)
    return prog, accs


@pytest.mark.parametrize("in_c", [True, False], ids=["c-loop", "python-loop"])
@pytest.mark.parametrize("partial", ["deny", "split"])
def test_trapped_accesses_follow_the_contract(bar: mmap.mmap, in_c: bool, partial: str) -> None:
    policy = mf.Policy(POLICY.rules, fill=POLICY.fill, partial=partial)
    model_dev = ModelDevice(bytes(bar))
    model = ModelFilter(SIZE, policy, model_dev, page_size=4096, ring_capacity=1 << 16)
    f = mf.BarFilter(SIZE, policy, mf.MemoryBackend(bar), page_size=4096, ring_capacity=1 << 16)
    prog, accs = trapped_program()
    with kvm.Machine() as m:
        m.add_bar(GPA, f)
        (res,) = m.run([prog], in_c=in_c)
    assert res.error is None, res.error
    lines = [ln for ln in kvm.parse_transcript(res.transcript) if ln.kind in "RW"]
    assert len(lines) == len(accs)
    for (off, w, is_write, value), line in zip(accs, lines, strict=True):
        want = model.access(off, w, is_write, value)
        if not is_write:
            assert line.value == want.value, (hex(off), w, hex(line.value), want)
    assert (res.mmio_in_c if in_c else res.mmio_in_python) == len(accs)
    assert bytes(bar[0x1000:0x1100]) == bytes(model_dev.byte(i) for i in range(0x1000, 0x1100))
    assert f.drain_events() == model.drain_events()


def test_access_crossing_into_a_trapped_page(bar: mmap.mmap) -> None:
    """KVM delivers only the fragment in the trapped page (3 bytes at 0x1000 of a 4-byte read
    at 0xFFF); the loop splits it into aligned accesses, each filtered: no denied byte is
    read from the device, the mapped byte comes from memory."""
    seen: list[tuple[int, int]] = []

    def read(off: int, w: int) -> int:
        seen.append((off, w))
        return int.from_bytes(bar[off : off + w], "little")

    def write(off: int, w: int, v: int) -> None:
        bar[off : off + w] = v.to_bytes(w, "little")

    for in_c in (True, False):
        f = mf.BarFilter(SIZE, mf.Policy([Rule("d", 0x1002, 1, "deny")], fill=0xEE),
                         mf.CallbackBackend(read, write), page_size=4096)  # fmt: skip
        backed = mf.BarFilter(SIZE, f.policy, mf.MemoryBackend(bar), page_size=4096)
        seen.clear()
        with kvm.Machine() as m:
            w = m.add_bar(GPA, backed)
            w.filter = f  # the slots are the memory's; the exits go to the recording filter
            m._c_cache = None
            (res,) = m.run([kvm.Program().read(GPA + 0xFFF, 4)], in_c=in_c)
        assert res.error is None, res.error
        (line,) = [ln for ln in kvm.parse_transcript(res.transcript) if ln.kind == "R"]
        want = bytes([bar[0xFFF], bar[0x1000], bar[0x1001], 0xEE])
        assert line.value.to_bytes(4, "little") == want
        assert seen == [(0x1000, 2)]  # an aligned piece of the fragment; never the denied byte
        del f, backed, w


def test_two_vcpus_never_see_a_torn_decision(bar: mmap.mmap) -> None:
    """Policy k answers with k in every byte (its fill and its emulated value), and an extra
    rule moves, so the layout (and the memory slots) change with every swap."""

    def policy(k: int) -> mf.Policy:
        return mf.Policy(
            [
                Rule("emu", 0x1000, 2, "emulate", value=0x0101 * k),
                Rule("deny", 0x1002, 2, "deny"),
                Rule("moving", 0x2000 + 0x1000 * (k % 4), 4, "deny"),
            ],
            fill=k,
            partial="split",
        )

    f = mf.BarFilter(SIZE, policy(1), mf.MemoryBackend(bar), page_size=4096)
    progs = []
    for _ in range(2):
        p = kvm.Program()
        for _ in range(400):
            p.read(GPA + 0x1000, 4).read(GPA + 0x1001, 2)
        progs.append(p)
    with kvm.Machine() as m:
        window = m.add_bar(GPA, f)
        stop = threading.Event()
        swaps = 0
        failures: list[BaseException] = []

        def swapper() -> None:
            nonlocal swaps
            k = 2
            try:
                # a breath between swaps: a swap pauses every vCPU, and back-to-back swaps
                # would pause them again before they re-enter the guest (no progress at all)
                while not stop.wait(0.0005):
                    m.update_policy(window, policy(k))
                    swaps += 1
                    k = k % 250 + 1
            except BaseException as e:  # reported by the test below
                failures.append(e)

        t = threading.Thread(target=swapper)
        t.start()
        try:
            results = m.run(progs)
        finally:
            stop.set()
            t.join()
    assert failures == []
    assert swaps > 5
    for res in results:
        assert res.error is None, res.error
        for line in kvm.parse_transcript(res.transcript):
            if line.kind != "R":
                continue
            raw = line.value.to_bytes(line.width, "little")
            assert len(set(raw)) == 1, f"torn decision: {line}"


def test_the_fsp_guard_answers_a_real_guest(bar: mmap.mmap) -> None:
    """A guest's FIRMWARE_UPDATE doorbell is refused from the C vCPU loop and answered with an
    emulated reply; its COT message then passes. The guard sits on a 64 KiB BAR here."""
    emem, queue, msgq = 0x2AC0, 0x2C00, 0x2C80
    bar[0x2000:0x3000] = bytes(0x1000)  # an idle mailbox
    guard = mf.FspGuard.at("fsp", emem=emem, queue=queue, msgq=msgq)
    f = mf.BarFilter(SIZE, mf.Policy([guard]), mf.MemoryBackend(bar), page_size=4096)
    som_eom, aincw = 0xC0000000, 1 << 24
    p = kvm.Program()
    for nvdm in (0x12, 0x14):
        p.write(GPA + emem, aincw).write(GPA + emem + 4, som_eom)
        p.write(GPA + emem + 4, 0x7E | 0x10DE << 8 | nvdm << 24)
        p.write(GPA + queue + 4, 4).write(GPA + queue, 0)
        p.read(GPA + msgq).read(GPA + msgq + 4)  # the reply queue: head, tail
        p.write(GPA + msgq + 4, 0).write(GPA + msgq, 0)  # consumed
    with kvm.Machine() as m:
        m.add_bar(GPA, f)
        (res,) = m.run([p], in_c=True)
    assert res.error is None, res.error
    assert res.mmio_in_python == 0 and res.mmio_in_c == 18  # every access decided in C
    reads = [line.value for line in kvm.parse_transcript(res.transcript) if line.kind == "R"]
    assert reads == [0, 16, 0, 0]  # an emulated reply to the refusal; none to the COT
    assert int.from_bytes(bar[queue + 4 : queue + 8], "little") == 4  # the COT's tail arrived
    refused = [e for e in f.drain_events() if e.outcome is mf.Outcome.BLOCKED]
    assert [e.detail for e in refused] == ["nvdm 0x12 refused"]
    del f


def test_layout_changes_reuse_memory_slots(bar: mmap.mmap) -> None:
    """Each swap that moves a trapped page deletes the window's memory slots and makes new
    ones. KVM has at most 32,764 slot ids (KVM_CAP_NR_MEMSLOTS; 509 on older kernels), so they
    must be used again: 20,000 swaps of two slots each would exhaust them."""

    def policy(k: int) -> mf.Policy:
        return mf.Policy([Rule("moving", 0x1000 * (1 + k % 8), 4, "deny")])

    f = mf.BarFilter(SIZE, policy(0), mf.MemoryBackend(bar), page_size=4096)
    with kvm.Machine() as m:
        window = m.add_bar(GPA, f)
        for k in range(20_000):
            m.update_policy(window, policy(k))
        assert len(window.slots) == 2  # the areas before and after the trapped page
        # a guest still sees the last layout: a read of the trapped page exits to the filter
        (res,) = m.run([kvm.Program().read(GPA + 0x1000 * (1 + 19_999 % 8), 4)])
    assert res.error is None, res.error
    assert res.mmio_in_c == 1
    del f
