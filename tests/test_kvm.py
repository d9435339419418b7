"""Real guests under KVM: direct pages cost no exit, trapped accesses are filtered exactly as the
contract says, and vCPUs hammering one BAR while its policy is swapped never see a torn
decision. Skipped, with the reason, where /dev/kvm or nasm is missing."""

from __future__ import annotations

import mmap
import struct
import threading
from collections.abc import Iterator

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


@pytest.fixture
def bar() -> Iterator[mmap.mmap]:
    yield from memfd_bar("kvm-test-bar", SIZE)


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


# ---- page-crossing accesses, unsupported instructions, teardown (docs/kvm.md) --------------

# pages 0x1000 and 0x2000 trapped (a rule on each; read-direct pages are not mapped in these
# tests, so reads exit too), the rest direct
TWO_PAGES = [Rule("ro1", 0x1000, 4, "readonly"), Rule("ro2", 0x2800, 4, "readonly")]


def recording(bar: mmap.mmap, policy: mf.Policy) -> tuple[mf.BarFilter, list[tuple]]:
    """A filter over the BAR's memory whose device accesses are recorded."""
    seen: list[tuple] = []

    def read(off: int, w: int) -> int:
        seen.append(("r", off, w))
        return int.from_bytes(bar[off : off + w], "little")

    def write(off: int, w: int, v: int) -> None:
        seen.append(("w", off, w, v))
        bar[off : off + w] = v.to_bytes(w, "little")

    return mf.BarFilter(SIZE, policy, mf.CallbackBackend(read, write), page_size=4096), seen


def run_recorded(
    bar: mmap.mmap, policy: mf.Policy, prog: kvm.Program, in_c: bool
) -> tuple[kvm.RunResult, list[tuple], list[mf.Event]]:
    f, seen = recording(bar, policy)
    backed = mf.BarFilter(SIZE, policy, mf.MemoryBackend(bar), page_size=4096)
    with kvm.Machine(map_read_direct=False) as m:
        w = m.add_bar(GPA, backed)
        w.filter = f  # the slots are the memory's; the exits go to the recording filter
        m._c_cache = None
        (res,) = m.run([prog], in_c=in_c)
    return res, seen, f.drain_events()


LOOPS = pytest.mark.parametrize("in_c", [True, False], ids=["c-loop", "python-loop"])


@LOOPS
def test_page_crossing_write_is_one_access(bar: mmap.mmap, in_c: bool) -> None:
    """KVM reports a 4-byte write at 0x1FFE as 2 bytes at 0x1FFE and 2 at 0x2000; the device
    sees the guest's one 4-byte write, and a write ending at a page end with no continuation
    reaches the device before the guest's next instruction (the read that follows)."""
    policy = mf.Policy(TWO_PAGES)
    prog = kvm.Program().write(GPA + 0x1FFE, 0xA1B2C3D4).write(GPA + 0x1FFC, 0x55667788)
    prog.read(GPA + 0x1FFC)
    res, seen, events = run_recorded(bar, policy, prog, in_c)
    assert res.error is None, res.error
    assert seen == [("w", 0x1FFE, 4, 0xA1B2C3D4), ("w", 0x1FFC, 4, 0x55667788), ("r", 0x1FFC, 4)]
    assert kvm.parse_transcript(res.transcript)[2].value == 0x55667788
    assert events == []


@LOOPS
def test_page_crossing_write_under_unaligned_deny(bar: mmap.mmap, in_c: bool) -> None:
    """A 4-byte write at a page end - 2 is unaligned: refused whole, not passed as two aligned
    2-byte pieces; its event says KVM delivered it in two pieces."""
    before = bytes(bar[0x1FF0:0x2010])
    policy = mf.Policy(TWO_PAGES, unaligned="deny")
    prog = kvm.Program().write(GPA + 0x1FFE, 0xA1B2C3D4)
    res, seen, events = run_recorded(bar, policy, prog, in_c)
    assert res.error is None, res.error
    assert seen == []
    assert bytes(bar[0x1FF0:0x2010]) == before
    (e,) = events
    assert (e.offset, e.width, e.is_write, e.rule) == (0x1FFE, 4, True, "(unaligned)")
    assert e.outcome is mf.Outcome.BLOCKED
    assert e.detail == "page-crossing write, 2+2 bytes joined"


@LOOPS
def test_page_crossing_8_byte_write_with_denied_bytes(bar: mmap.mmap, in_c: bool) -> None:
    """An 8-byte write at 0x1FF9 (7 bytes in one trapped page, 1 in the next) whose bytes
    0x1FFE..0x1FFF are denied is one mixed access: partial = "deny" drops all of it."""
    before = bytes(bar[0x1FF0:0x2010])
    policy = mf.Policy([*TWO_PAGES, Rule("deny", 0x1FFE, 2, "deny")])
    prog = kvm.Program().write64(GPA + 0x1FF9, 0x1122334455667788)
    res, seen, events = run_recorded(bar, policy, prog, in_c)
    assert res.error is None, res.error
    assert seen == []
    assert bytes(bar[0x1FF0:0x2010]) == before
    (e,) = events
    assert (e.offset, e.width, e.outcome, e.rule) == (0x1FF9, 8, mf.Outcome.BLOCKED, "deny")
    assert e.detail == "page-crossing write, 7+1 bytes joined"


@LOOPS
def test_the_transcript_of_8_byte_accesses_says_what_was_written(
    bar: mmap.mmap, in_c: bool
) -> None:
    """WRITE64 prints the value it wrote and READ64 the value it read (the transcript is how
    the tests see the guest)."""
    value = 0x1122334455667788
    prog = kvm.Program().write64(GPA + 0x1008, value).read64(GPA + 0x1008)
    res, seen, _ = run_recorded(bar, mf.Policy(TWO_PAGES), prog, in_c)
    assert res.error is None, res.error
    lines = [(ln.kind, ln.width, ln.value) for ln in kvm.parse_transcript(res.transcript)[:2]]
    assert lines == [("W", 8, value), ("R", 8, value)]
    assert seen == [("w", 0x1008, 8, value), ("r", 0x1008, 8)]


@LOOPS
def test_page_crossing_read_is_decided_per_page(bar: mmap.mmap, in_c: bool) -> None:
    """A read must be answered piece by piece (KVM needs the first page's bytes before it
    reports the second): a 2-byte read at 0x1FFF with 0x2000 denied returns the device byte
    and the fill byte, a 4-byte read at 0x2FFE with 0x2FFE denied two fill bytes (its first
    piece is mixed) and two device bytes; the events record the split, the first piece's too.
    A read that ends at a page end with no continuation is not noted."""
    policy = mf.Policy(
        [*TWO_PAGES, Rule("d1", 0x2000, 1, "deny"), Rule("d2", 0x2FFE, 1, "deny"),
         Rule("a3", 0x3003, 1, "audit"), Rule("d4", 0x1FFC, 1, "deny")],
        fill=0xEE,
    )  # fmt: skip
    prog = kvm.Program().read(GPA + 0x1FFF, 2).read(GPA + 0x2FFE, 4).read(GPA + 0x1FFC, 4)
    res, seen, events = run_recorded(bar, policy, prog, in_c)
    assert res.error is None, res.error
    lines = [ln.value for ln in kvm.parse_transcript(res.transcript) if ln.kind == "R"]
    assert lines[0] == bar[0x1FFF] | 0xEE << 8
    assert lines[1] == int.from_bytes(bytes([0xEE, 0xEE]) + bar[0x3000:0x3002], "little")
    assert seen == [("r", 0x1FFF, 1), ("r", 0x3000, 2)]
    got = [(e.offset, e.width, e.outcome, e.rule, e.detail) for e in events]
    assert got == [
        (0x2000, 1, mf.Outcome.BLOCKED, "d1", "page-crossing read, 1+1 bytes per page"),
        (0x2FFE, 2, mf.Outcome.BLOCKED, "d2", "page-crossing read, 2+2 bytes per page"),
        (0x1FFC, 4, mf.Outcome.BLOCKED, "d4", ""),
    ]


@LOOPS
def test_an_instruction_kvm_cannot_emulate_stops_the_vcpu(bar: mmap.mmap, in_c: bool) -> None:
    """movss to a trapped page: KVM's emulator has no movss (KVM_EXIT_INTERNAL_ERROR). The
    vCPU stops with an error naming the instruction pointer, exit reason and suberror; the
    device saw nothing."""
    before = bytes(bar[0x1000:0x2000])
    prog = kvm.Program().sse_store(GPA + 0x1100).write(GPA + 0x1104, 1)
    res, seen, events = run_recorded(bar, mf.Policy(TWO_PAGES), prog, in_c)
    image = kvm.firmware.image()
    at = 0xFFFF0000 + image.index(bytes([0xF3, 0x0F, 0x11, 0x03]))  # movss [ebx], xmm0
    assert res.error is not None
    assert f"stopped at rip {at:#x}" in res.error
    assert "KVM_EXIT_INTERNAL_ERROR (exit reason 17, suberror 1," in res.error
    assert [ln.kind for ln in kvm.parse_transcript(res.transcript)] == []
    assert seen == [] and events == [] and bytes(bar[0x1000:0x2000]) == before


def test_the_guest_has_a_cpuid() -> None:
    """The VMM gives the guest KVM's supported CPUID: leaf 0 names the host's vendor."""
    with kvm.Machine() as m:
        (res,) = m.run([kvm.Program().cpuid(0)])
    assert res.error is None, res.error
    (line,) = [ln for ln in kvm.parse_transcript(res.transcript) if ln.kind == "C"]
    regs = [(line.value >> (32 * i)) & 0xFFFFFFFF for i in range(4)]
    vendor = b"".join(r.to_bytes(4, "little") for r in (regs[1], regs[3], regs[2])).decode()
    with open("/proc/cpuinfo") as info:
        host = next(ln.split(":")[1].strip() for ln in info if ln.startswith("vendor_id"))
    assert regs[0] >= 1 and vendor == host


@pytest.mark.parametrize("trapped", [True, False], ids=["exiting", "in-guest"])
def test_a_timed_out_run_stops_its_vcpus_before_close(bar: mmap.mmap, trapped: bool) -> None:
    """A guest that never ends: the run reports the timeout, its vCPU thread has ended when
    run() returns (so close() closes no descriptor under a running KVM_RUN), and nothing
    overwrites the timeout with a later error."""
    f = mf.BarFilter(SIZE, POLICY, mf.MemoryBackend(bar), page_size=4096)
    with kvm.Machine() as m:
        m.add_bar(GPA, f)
        at = GPA + (0x1000 if trapped else 0x3000)
        (res,) = m.run([kvm.Program().loop_read(at, 0xFFFFFFFF)], timeout=0.5)
        threads = [v.thread for v in m._vcpus]
        assert all(t is not None and not t.is_alive() for t in threads)
        # immediate_exit (byte 1 of struct kvm_run, linux/kvm.h) is cleared again
        assert kvm.machine.ffi.cast("uint8_t *", m._vcpus[0].run)[1] == 0
    assert res.error == "vCPU 0 still running after 0.5 s: stopped"
    del f


@LOOPS
def test_a_stack_on_a_trapped_page_stops_the_vcpu(bar: mmap.mmap, in_c: bool) -> None:
    """pushad with its stack on a trapped page: KVM's emulator reports only the last of its
    eight writes. The VMM does not pass that one on as if it were the instruction: it stops
    the vCPU at the access at the stack pointer, naming the instruction pointer, and the
    device sees nothing."""
    before = bytes(bar[0x1000:0x2000])
    prog = kvm.Program().pushad(GPA + 0x1100).write(GPA + 0x1104, 1)
    res, seen, events = run_recorded(bar, mf.Policy(TWO_PAGES), prog, in_c)
    image = kvm.firmware.image()
    after = 0xFFFF0000 + image.index(bytes([0x60, 0x89, 0xD4])) + 1  # pushad; mov esp, edx
    assert res.error is not None
    assert f"stopped at rip {after:#x}: MMIO write at {GPA + 0x10E0:#x}" in res.error
    assert "stack on a trapped page is unsupported" in res.error
    assert [ln.kind for ln in kvm.parse_transcript(res.transcript)] == []
    assert seen == [] and events == [] and bytes(bar[0x1000:0x2000]) == before


@LOOPS
def test_a_16_byte_store_across_trapped_pages(bar: mmap.mmap, in_c: bool) -> None:
    """movdqu at 0x1FFA: KVM reports 6 bytes at 0x1FFA, then 8 at 0x2000 and 2 at 0x2008. The
    first piece is held until the next one shows it cannot be joined (14 bytes), then decided
    alone as item 11 says (2 + 4 bytes); the rest as they come. Every byte arrives."""
    policy = mf.Policy(TWO_PAGES)
    res, seen, events = run_recorded(bar, policy, kvm.Program().store128(GPA + 0x1FFA, 7), in_c)
    assert res.error is None, res.error
    data = struct.pack("<IIII", kvm.program.STORE128, GPA + 0x1FFA, 7, 0)  # the op itself
    assert [(s[1], s[2]) for s in seen] == [(0x1FFA, 2), (0x1FFC, 4), (0x2000, 8), (0x2008, 2)]
    assert bytes(bar[0x1FFA:0x200A]) == data
    assert events == []
