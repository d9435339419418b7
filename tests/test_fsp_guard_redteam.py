"""Red-team attacks on the FSP mailbox guard (docs/fsp-guard.md), against the simulated FSP.

The attacker is a guest under the GH100 profile's policy (firmware_update deny, nvlink isolate,
persistent_settings deny) whose mailbox accesses all go through the filter, at any width and
alignment, in any order, and who may time a policy swap or a VMM restart. Each test writes one
attack and ends by checking what the simulated FSP took. Attacks the guard refuses are named
`test_refused_...`; an attack that succeeds is marked xfail(strict=True) with what breaks, so the
suite stays green and the finding is on record until the guard is fixed.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from mmiofilter._core import ffi, lib

import mmiofilter as mf
from mmiofilter.backends import CallbackBackend
from mmiofilter.simulated.fsp import (
    AINCR,
    AINCW,
    ERR_NOT_SUPPORTED,
    ERR_OK,
    FspDriver,
    FspTimeout,
    SimFsp,
    mctp_header,
    message_header,
    packets_of,
)

from .fsp_helpers import (
    COT,
    EMEMC,
    EMEMD,
    FW,
    KNOB,
    MHEAD,
    MTAIL,
    ONE_SHOT,
    PERSISTENT,
    PRC,
    QHEAD,
    QTAIL,
    firmware_update_taken,
    gh100,
    gh100_policy,
    prc,
    ring,
    words_of,
    write_words,
)

#: OGKM gh100 dev_fsp_addendum.h: "PMU/SOE use channel 4 for FSP EMEM on GH100", at 4096.
PMU_CHANNEL, PMU_OFFSET = 4, 4096


# ---- helpers ---------------------------------------------------------------------------------


def send(f: mf.BarFilter, queue: int, packet: bytes) -> mf.Outcome:
    """The packet at the queue's channel base through the queue's own port, then its doorbell."""
    words = words_of(packet)
    base = 1024 * queue
    write_words(f, queue, base, words)
    return ring(f, queue, base, base + 4 * len(words) - 4)


def denied_prc_taken(fsp: SimFsp) -> bool:
    """A PRC message whose sub-message (payload byte 0, packet byte 8) the profile denies."""
    firsts = [p for _, p in fsp.packets if len(p) >= 9 and p[3] & 0x80 and p[7] == PRC]
    return any(p[8] in (0x0A, 0x01, 0x04, 0x0D) for p in firsts) or any(
        m.nvdm_type == PRC and m.body[:1] in (b"\x0a", b"\x01", b"\x04", b"\x0d")
        for m in fsp.messages
    )


def blocked_details(f: mf.BarFilter) -> list[str]:
    return [e.detail for e in f.drain_events() if e.outcome is mf.Outcome.BLOCKED]


class Hooked(CallbackBackend):
    """The simulated FSP's backend, with a hook run after chosen device accesses: the FSP acting
    between two accesses the guard makes under its lock (the FSP is not under that lock)."""

    def __init__(self, fsp: SimFsp) -> None:
        self.fsp = fsp
        self.after_read: dict[int, Callable[[], None]] = {}
        self.fail_write: set[int] = set()
        self.fail_landed: set[int] = set()
        super().__init__(self._read, self._write)

    def _read(self, offset: int, width: int) -> int:
        v = self.fsp.read(offset, width)
        hook = self.after_read.pop(offset, None)
        if hook:
            hook()
        return v

    def _write(self, offset: int, width: int, value: int) -> None:
        if offset in self.fail_landed:  # the write lands, then the bus reports an error
            self.fail_landed.discard(offset)
            self.fsp.write(offset, width, value)
            raise OSError("write landed, then failed")
        if offset in self.fail_write:
            self.fail_write.discard(offset)
            raise OSError("write failed")
        self.fsp.write(offset, width, value)


# ---- 1. widths, alignment, straddling: nothing but whole registers reaches the device ----------


@pytest.mark.parametrize(
    ("offset", "width"),
    [
        (QTAIL, 1),
        (QTAIL + 1, 1),
        (QTAIL + 2, 2),
        (QHEAD, 8),  # QUEUE_HEAD and QUEUE_TAIL at once: tail and doorbell in one write
        (QHEAD + 2, 4),  # misaligned across HEAD/TAIL
        (EMEMC, 8),  # EMEMC and EMEMD at once
        (EMEMC - 4, 8),  # an audited byte range and EMEMC(0)
        (EMEMC + 8 * 7 + 4, 8),  # EMEMD(7) and the audited bytes after the block
        (MTAIL, 2),
        (MHEAD, 8),
        (QHEAD - 4, 8),  # the audited bytes before QUEUE_HEAD(0)
    ],
)
def test_refused_accesses_that_are_not_one_whole_register(offset: int, width: int) -> None:
    fsp = SimFsp()
    f = gh100(fsp)
    cot = words_of(packets_of(COT, bytes(24))[0])
    write_words(f, 0, 0, cot)
    value = (1 << (8 * width)) - 1 if width < 8 else 0xFFFF_FFFF_FFFF_FFFF
    f.write(offset, width, value & (4 * len(cot) - 4 if width >= 4 else 0xFF))
    f.write(offset, width, 0)
    f.read(offset, width)
    assert fsp.odd_accesses == []
    assert fsp.qtail == [0] * 8 and fsp.qhead == [0] * 8 and fsp.packets == []
    assert fsp.mhead == [0] * 8 and fsp.mtail == [0] * 8


@pytest.mark.parametrize("length", [3, 5, 6, 7])
def test_refused_kvm_fragments_over_the_doorbell(length: int) -> None:
    """KVM hands a VMM 1..8 bytes (mf_access_mmio): a fragment of 3, 5, 6 or 7 bytes over
    QUEUE_TAIL/QUEUE_HEAD is split into aligned pieces, none a whole guard register."""
    fsp = SimFsp()
    f = gh100(fsp)
    send(f, 0, packets_of(COT, bytes(24))[0])  # a passed doorbell: queue 0 in use
    FspDriver(f).read_response()
    write_words(f, 0, 0, words_of(packets_of(FW, bytes(24))[0]))
    res = ffi.new("struct mf_result *")
    for off in range(QHEAD - 4, QTAIL + 4):
        data = ffi.new("uint8_t[8]", [0x1C, 0, 0, 0, 0, 0, 0, 0])
        lib.mf_access_mmio(f._f, off, length, 1, data, res)
        lib.mf_access_mmio(f._f, off, length, 0, data, res)
    assert not firmware_update_taken(fsp)
    assert fsp.odd_accesses == []
    assert [m.nvdm_type for m in fsp.messages] == [COT]


# ---- 2. guard registers the guard holds or refuses ------------------------------------------


def test_refused_queue_tail_without_its_doorbell() -> None:
    """QUEUE_TAIL is held: a tail written and read back never reaches the device unless a
    doorbell passes, and a refused doorbell discards it."""
    fsp = SimFsp()
    f = gh100(fsp)
    assert f.write(QTAIL, 4, 0x1C) is mf.Outcome.EMULATED
    assert f.read(QTAIL, 4) == 0x1C and fsp.qtail[0] == 0
    assert f.write(QHEAD, 4, 0x100) is mf.Outcome.BLOCKED  # head off base: tail discarded
    assert fsp.qtail[0] == 0 and fsp.qhead[0] == 0
    assert f.read(QTAIL, 4) == 0  # the device's
    assert f.write(QTAIL + 8 * 3, 4, 3 * 1024 + 0x1C) is mf.Outcome.EMULATED  # channel 3: held
    assert f.write(QHEAD + 8 * 3, 4, 0x100) is mf.Outcome.BLOCKED  # off base: nothing written
    assert f.write(QTAIL + 8 * 5, 4, 0x1C) is mf.Outcome.BLOCKED  # channel 5: not the guest's
    assert f.write(QHEAD + 8 * 5, 4, 5 * 1024) is mf.Outcome.BLOCKED
    assert fsp.qtail == [0] * 8 and fsp.packets == []


def test_refused_msgq_writes_that_would_queue_a_reply() -> None:
    """A guest that queues its own 'reply' in MSGQ would make the guard take a reply for
    published (and consumed) that the FSP never sent, freeing a channel where the FSP's real
    reply is still due."""
    fsp = SimFsp(auto_take=False)
    f = gh100(fsp)
    send(f, 0, packets_of(COT, bytes(24))[0])  # rung, not yet taken: its reply is due
    assert f.write(MTAIL, 4, 16) is mf.Outcome.BLOCKED
    assert f.write(MHEAD, 4, 0x40) is mf.Outcome.BLOCKED
    assert fsp.mhead[0] == fsp.mtail[0] == 0
    fsp.take()  # the FSP answers: now a rewrite of channel 0 must wait for the consumption
    write_words(f, 1, 8, [0xDEAD])  # the FSP's reply lands at 0..20: shadow still invalid
    assert f.write(QTAIL, 4, 0x1C) is mf.Outcome.EMULATED
    assert f.write(QHEAD, 4, 0) is mf.Outcome.BLOCKED
    assert fsp.packets[1:] == []


# ---- 3. rewriting checked bytes between the check and the FSP's read ------------------------


@pytest.mark.parametrize("port", [0, 1, 4, 7])
def test_refused_rewrite_of_a_packet_in_flight_through_any_port(port: int) -> None:
    fsp = SimFsp(auto_take=False)
    f = gh100(fsp)
    assert send(f, 0, packets_of(COT, bytes(24))[0]) is mf.Outcome.PASS
    if port == 0:  # its own port: EMEMC refused while the packet is in flight
        assert f.write(EMEMC, 4, 4 | AINCW) is mf.Outcome.BLOCKED
    else:
        f.write(EMEMC + 8 * port, 4, 4 | AINCW)
    f.write(EMEMD + 8 * port, 4, message_header(FW))
    fsp.take()
    assert not firmware_update_taken(fsp)
    assert fsp.odd_accesses == []


def test_refused_read_steps_and_emulated_reply_desync_a_port() -> None:
    """A port reads the emulated refusal (the guard answers, the device's address does not
    step), then writes without a new EMEMC: the guard's and the device's addresses differ."""
    fsp = SimFsp()
    f = gh100(fsp)
    send(f, 0, packets_of(FW, bytes(24))[0])  # refused: an emulated reply at EMEM 0
    f.write(EMEMC + 8 * 2, 4, 0 | AINCR | AINCW)
    for _ in range(5):  # the guard steps to 20; the device stays at 0
        f.read(EMEMD + 8 * 2, 4)
    assert f.read(EMEMC + 8 * 2, 4) & 0xFFFC == 20  # answered from the guard
    # EMEM 0 on the device is where port 2 really points: try to write a header there
    assert f.write(EMEMD + 8 * 2, 4, mctp_header(True, True, 0)) is mf.Outcome.BLOCKED
    assert f.write(EMEMD + 8 * 2, 4, message_header(FW)) is mf.Outcome.BLOCKED
    cot = words_of(packets_of(COT, bytes(24))[0])
    write_words(f, 3, 0, cot)
    FspDriver(f).read_response()  # consume the refusal
    assert ring(f, 0, 0, 4 * len(cot) - 4) is mf.Outcome.PASS
    assert fsp.types_received() == [COT]


def test_refused_aincw_stepping_out_of_the_channel_areas() -> None:
    """The auto-increment carries OFFS into BLK; a write stepping past the channel areas or past
    0xFFFC (wrapping to 0 on the device) must not land on a checked packet."""
    fsp = SimFsp(emem_size=8192)
    f = gh100(fsp)
    cot = words_of(packets_of(COT, bytes(24))[0])
    write_words(f, 0, 0, cot)
    f.write(EMEMC + 8 * 2, 4, (4096 - 4) | AINCW)  # the last dword of the guest's channels
    assert f.write(EMEMD + 8 * 2, 4, 0) is mf.Outcome.PASS
    assert f.write(EMEMD + 8 * 2, 4, message_header(FW)) is mf.Outcome.BLOCKED  # 4096: PMU/SOE's
    f.write(EMEMC + 8 * 2, 4, 0xFFFC | AINCW | AINCR)
    f.read(EMEMD + 8 * 2, 4)  # refused: past the guest's channels, the device's port stays put
    assert f.write(EMEMD + 8 * 2, 4, message_header(FW)) is mf.Outcome.BLOCKED
    assert ring(f, 0, 0, 4 * len(cot) - 4) is mf.Outcome.PASS
    assert fsp.types_received() == [COT]


@pytest.mark.parametrize(
    ("head", "tail"),
    [
        (0, 0xFFFF_FFFC),  # tail - head wraps nothing: far past the channel
        (0, 0),  # one dword: no message header
        (0, 1024),  # one dword past the channel
        (0, 0x1E),  # misaligned tail
        (0xFFFF_FC00, 0x18),  # head past tail
    ],
)
def test_refused_head_and_tail_arithmetic(head: int, tail: int) -> None:
    fsp = SimFsp()
    f = gh100(fsp)
    write_words(f, 0, 0, words_of(packets_of(COT, bytes(1020))[0])[:256])
    f.write(EMEMC + 8, 4, 4 | AINCW)
    f.write(EMEMD + 8, 4, message_header(FW))  # a denied header at dword 1
    assert ring(f, 0, head, tail) is mf.Outcome.BLOCKED
    assert fsp.packets == [] and fsp.qtail[0] == 0


# ---- 4. message and continuation tracking ----------------------------------------------------


def test_refused_continuation_of_a_message_on_another_queue() -> None:
    """A COT message opened on queue 0; its 'continuation' on queue 1 (whose FSP channel has no
    message in progress) and a denied first packet between two COT continuations."""
    fsp = SimFsp()
    f = gh100(fsp)
    assert (
        send(
            f,
            0,
            mctp_header(True, False, 0).to_bytes(4, "little")
            + message_header(COT).to_bytes(4, "little")
            + bytes(8),
        )
        is mf.Outcome.PASS
    )
    cont = mctp_header(False, True, 1).to_bytes(4, "little") + bytes(8)
    assert send(f, 1, cont) is mf.Outcome.BLOCKED
    # a denied first packet on queue 0 in the middle of the COT message, then its SEQ 1
    fw_first = (
        mctp_header(True, False, 1).to_bytes(4, "little")
        + message_header(FW).to_bytes(4, "little")
        + bytes(8)
    )
    assert send(f, 0, fw_first) is mf.Outcome.BLOCKED
    assert send(f, 0, mctp_header(False, True, 1).to_bytes(4, "little") + bytes(8)) is (
        mf.Outcome.BLOCKED
    )
    assert not firmware_update_taken(fsp)
    assert fsp.messages == []
    assert fsp.odd_accesses == []


def test_refused_prc_sub_message_moved_by_seq_games() -> None:
    """A knob-read PRC (allowed) as a first packet of 12 bytes, then a continuation carrying
    the bytes of a link mask: the FSP's sub-message is still byte 8 of the first packet."""
    fsp = SimFsp()
    f = gh100(fsp)
    first = (
        mctp_header(True, False, 0).to_bytes(4, "little")
        + message_header(PRC).to_bytes(4, "little")
        + prc(0x0C, KNOB)
    )
    assert send(f, 0, first) is mf.Outcome.PASS
    for seq in (0, 2, 3):  # wrong SEQ: refused
        assert (
            send(f, 0, mctp_header(False, True, seq).to_bytes(4, "little") + prc(0x0A, PERSISTENT))
            is mf.Outcome.BLOCKED
        )
    assert not denied_prc_taken(fsp)


def test_refused_swap_mid_message_to_a_denying_policy() -> None:
    """nvlink = "allow": the first packet of a link-mask PRC passes; the admin swaps to the
    profile's isolate (a guard on the same registers: state adopted); its continuation and EOM
    must be refused, and so must a fresh state after a VMM restart."""
    fsp = SimFsp()
    f = gh100(fsp, 'nvlink = "allow"')
    first = (
        mctp_header(True, False, 0).to_bytes(4, "little")
        + message_header(PRC).to_bytes(4, "little")
        + prc(0x0A, ONE_SHOT)
    )
    assert send(f, 0, first) is mf.Outcome.PASS
    f.update(gh100_policy())
    cont = mctp_header(False, True, 1).to_bytes(4, "little") + bytes(8)
    assert send(f, 0, cont) is mf.Outcome.BLOCKED
    assert "nvdm 0x13 refused (continuation)" in blocked_details(f)
    g = gh100(fsp)  # a VMM restart under the denying policy: no message in progress
    assert send(g, 0, cont) is mf.Outcome.BLOCKED
    assert fsp.messages == []  # the FSP never saw the link mask's EOM


# ---- 5. swaps and restarts with a packet in flight --------------------------------------------


def test_refused_restart_with_a_packet_in_flight() -> None:
    fsp = SimFsp(auto_take=False)
    f = gh100(fsp)
    assert send(f, 0, packets_of(COT, bytes(24))[0]) is mf.Outcome.PASS
    g = gh100(fsp)  # VMM restart: a fresh state finds the packet queued
    g.write(EMEMC + 8 * 3, 4, 4 | AINCW)
    assert g.write(EMEMD + 8 * 3, 4, message_header(FW)) is mf.Outcome.BLOCKED
    fsp.take()
    assert fsp.types_received() == [COT]
    # its reply is due: a packet written before the reply is consumed is not rung
    write_words(g, 0, 0, words_of(packets_of(FW, bytes(24))[0]))
    assert g.write(QTAIL, 4, 0x1C) is mf.Outcome.EMULATED
    assert g.write(QHEAD, 4, 0) is mf.Outcome.BLOCKED
    assert not firmware_update_taken(fsp)


def test_refused_failed_device_writes_at_the_doorbell_and_emem() -> None:
    """A device write that fails after landing (EMEMD, QUEUE_TAIL): the guard must not trust
    the shadow or the queue afterwards."""
    fsp = SimFsp(auto_take=False)
    be = Hooked(fsp)
    f = gh100(be)
    cot = words_of(packets_of(COT, bytes(24))[0])
    write_words(f, 0, 0, cot)
    be.fail_landed.add(EMEMD + 8 * 2)
    f.write(EMEMC + 8 * 2, 4, 4 | AINCW)
    with pytest.raises(mf.BackendError):
        f.write(EMEMD + 8 * 2, 4, message_header(FW))  # landed at 4: the shadow says COT
    assert ring(f, 0, 0, 4 * len(cot) - 4) is mf.Outcome.BLOCKED  # dword 4 invalid
    assert FspDriver(f).read_response().error_code == ERR_NOT_SUPPORTED  # the refusal
    write_words(f, 0, 0, cot)
    be.fail_landed.add(QTAIL)
    with pytest.raises(mf.BackendError):
        ring(f, 0, 0, 4 * len(cot) - 4)
    f.write(EMEMC + 8 * 2, 4, 4 | AINCW)
    assert f.write(EMEMD + 8 * 2, 4, message_header(FW)) is mf.Outcome.BLOCKED
    fsp.pending.append(0)  # an FSP that scans its queues finds HEAD != TAIL
    fsp.take()
    assert not firmware_update_taken(fsp)


# ---- 6. several vCPUs --------------------------------------------------------------------------


def test_refused_rewrites_from_another_vcpu_during_boot_traffic() -> None:
    import threading

    fsp = SimFsp()
    f = gh100(fsp)
    stop = threading.Event()
    errors: list[BaseException] = []

    def rewriter() -> None:
        try:
            while not stop.is_set():
                for at in (4, 8):  # the message header and a PRC sub-message
                    f.write(EMEMC + 8 * 5, 4, at | AINCW)
                    f.write(EMEMD + 8 * 5, 4, message_header(FW) if at == 4 else 0x10A)
                f.write(QTAIL, 4, 0x1C)  # and tails, from this vCPU
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=rewriter)
    t.start()
    drv = FspDriver(f, polls=10_000)
    try:
        for i in range(100):
            try:
                drv.transact((COT, PRC)[i % 2], prc(0x0C, KNOB, bytes(20)))
            except (FspTimeout, ValueError):
                pass
    finally:
        stop.set()
        t.join(30)
    assert errors == []
    assert not firmware_update_taken(fsp) and not denied_prc_taken(fsp)
    assert fsp.odd_accesses == []


# ---- 7. findings ---------------------------------------------------------------------------------


def other_agent_send(fsp: SimFsp, channel: int, packet: bytes, ring_it: bool = True) -> None:
    """Another mailbox client the guest's filter does not see, on its own channel, port and
    queue, in the drivers' order (EMEMC, EMEMD, QUEUE_TAIL, QUEUE_HEAD): the GPU's PMU/SOE on
    channel 4 at EMEM 4096 (OGKM gh100 dev_fsp_addendum.h: "PMU/SOE use channel 4 for FSP EMEM
    on GH100"), or gpu-admin-tools run by the host on channel 1 (FspEmemRpc: channel N at EMEM
    N * 1024)."""
    base = 1024 * channel
    fsp.write(EMEMC + 8 * channel, 4, base | AINCW)
    words = words_of(packet)
    for w in words:
        fsp.write(EMEMD + 8 * channel, 4, w)
    if ring_it:
        fsp.write(QTAIL + 8 * channel, 4, base + 4 * len(words) - 4)
        fsp.write(QHEAD + 8 * channel, 4, base)


# Fixed: the GH100 profile gave the guest all 8 channels, channel 4 (PMU/SOE's, OGKM
# dev_fsp_addendum.h) included, and the guard, which once it has seen a queue idle never reads
# it again, let the guest rewrite a packet the PMU/SOE rang. The guest now gets channels 0..3
# and every access to the others is refused. The host running gpu-admin-tools on one of the
# guest's own channels while the guard is in force stays outside what the guard can see
# (docs/fsp-guard.md, "What the guard assumes").
@pytest.mark.parametrize(
    "channel",
    [
        PMU_CHANNEL,
        pytest.param(
            1,
            marks=pytest.mark.xfail(
                strict=True,
                reason="assumed away: a channel the guest is given is the guest's alone; the "
                "guard cannot see another client on it (docs/fsp-guard.md)",
            ),
        ),
    ],
    ids=["pmu-soe", "host-gat"],
)
def test_another_agents_packet_in_flight_rewritten_into_a_firmware_update(channel: int) -> None:
    fsp = SimFsp(auto_take=False)
    f = gh100(fsp)
    write_words(f, 0, 0, [0])  # any guest EMEMD write: the guard looks at every queue once
    other_agent_send(fsp, channel, packets_of(COT, bytes(24))[0])
    f.read(QHEAD + 8 * channel, 4)  # the guest sees the doorbell (HEAD != TAIL)...
    f.write(EMEMC, 4, (1024 * channel + 4) | AINCW)
    f.write(EMEMD, 4, message_header(FW))  # ...and rewrites: the guard thinks the queue idle
    fsp.take()
    assert not firmware_update_taken(fsp)
    assert fsp.odd_accesses == []


def test_pmu_soe_reply_consumed_by_the_guest() -> None:
    # fixed: MSGQ(4) is not one of the guest's channels (it was: the profile gave all 8)
    fsp = SimFsp()
    f = gh100(fsp)
    other_agent_send(fsp, PMU_CHANNEL, packets_of(COT, bytes(24))[0])  # answered at once
    head = fsp.mhead[PMU_CHANNEL]
    assert fsp.mtail[PMU_CHANNEL] != head  # the PMU/SOE's reply waits
    assert f.read(MHEAD + 8 * PMU_CHANNEL, 4) == 0xFFFFFFFF  # the guest does not even see it
    assert f.write(MTAIL + 8 * PMU_CHANNEL, 4, head) is mf.Outcome.BLOCKED
    assert fsp.mtail[PMU_CHANNEL] != fsp.mhead[PMU_CHANNEL]  # still there for the PMU/SOE


def test_pmu_soe_port_moved_mid_send_so_the_fsp_takes_the_guests_packet() -> None:
    # fixed: port 4 and channel 4's EMEM are not the guest's (EMEMC(4) writes passed while the
    # guard's cached state of queue 4 said idle)
    fsp = SimFsp()
    f = gh100(fsp)
    fw = words_of(packets_of(FW, bytes(24))[0])
    write_words(f, 0, PMU_OFFSET, fw)  # planted at channel 4's base, never rung
    # the PMU/SOE starts its send: EMEMC(4) = 4096 | AINCW, its MCTP header...
    cot = packets_of(COT, bytes(24))[0]
    other_agent_send(fsp, PMU_CHANNEL, cot[:4], ring_it=False)
    # ...the guest moves port 4 past the packet (the guard allows: queue 4 looks idle)
    f.write(EMEMC + 8 * PMU_CHANNEL, 4, (PMU_OFFSET + 0x200) | AINCW)
    for w in words_of(cot)[1:]:
        fsp.write(EMEMD + 8 * PMU_CHANNEL, 4, w)
    fsp.write(QTAIL + 8 * PMU_CHANNEL, 4, PMU_OFFSET + len(cot) - 4)
    fsp.write(QHEAD + 8 * PMU_CHANNEL, 4, PMU_OFFSET)  # the FSP reads 4096..: the guest's bytes
    assert not firmware_update_taken(fsp)


def recovers(drv: FspDriver, f: mf.BarFilter, tries: int = 3) -> list[str]:
    """The open driver's next messages (kfspSendAndReadMessage): [] once one is answered, else
    why the guard refused their doorbells."""
    f.drain_events()
    for _ in range(tries):
        try:
            if drv.transact(COT, b"again").error_code == ERR_OK:
                return []
        except FspTimeout:
            pass
    return sorted({d for d in blocked_details(f) if d.startswith("doorbell")})


def race_msgq_write_with_the_reply(fsp: SimFsp, be: Hooked, f: mf.BarFilter) -> FspDriver:
    drv = FspDriver(f, polls=5, poll=fsp.take)
    drv.send_message(COT, b"boot")  # rung; the FSP has not taken it yet
    # another vCPU spins on MSGQ_TAIL = 0 (= HEAD): one write lands just as the FSP answers
    be.after_read[MTAIL] = fsp.take  # the FSP takes and replies after the guard read TAIL
    assert f.write(MTAIL, 4, 0) is mf.Outcome.PASS
    assert [m.nvdm_type for m in fsp.messages] == [COT]
    assert fsp.mhead[0] == fsp.mtail[0]  # the FSP's reply is gone
    with pytest.raises(FspTimeout):
        drv.read_response()
    return drv


@pytest.mark.xfail(
    strict=True,
    reason="wedge: a MSGQ write is checked against MSGQ as the guard read it, then written; the "
    "FSP publishing its reply in between (mf_fsp_msgq_reg, guard_fsp_queue.c) lets a guest "
    "MSGQ_TAIL = HEAD erase a reply the guard never saw, which stays 'due' forever: every "
    "doorbell on the queue is refused ('reply not consumed yet') until a VMM restart",
)
def test_msgq_write_racing_the_fsps_reply_wedges_the_queue() -> None:
    fsp = SimFsp(auto_take=False)
    be = Hooked(fsp)
    f = gh100(be)
    drv = race_msgq_write_with_the_reply(fsp, be, f)
    assert recovers(drv, f) == []  # ['doorbell 0: reply not consumed yet']


def test_a_vmm_restart_ends_the_msgq_race_wedge() -> None:
    """The wedge above lasts until a fresh state: it finds queue 0 idle and MSGQ empty."""
    fsp = SimFsp(auto_take=False)
    be = Hooked(fsp)
    f = gh100(be)
    race_msgq_write_with_the_reply(fsp, be, f)
    assert recovers(FspDriver(f, polls=5, poll=fsp.take), f) == [
        "doorbell 0: reply not consumed yet"
    ]
    g = gh100(fsp)
    assert recovers(FspDriver(g, polls=5, poll=fsp.take), g) == []
    assert not firmware_update_taken(fsp)


# Fixed: the first look read QUEUE_HEAD/TAIL (packet queued), then MSGQ (answered in between)
# and took the answer for an earlier message's (mq_stale); its consumption ended 'stale' and
# the reply due never came: queue 0 was closed until a restart. A first look now reads MSGQ
# first (mf_fsp_queue_idle, guard_fsp.c). The FSP acts after each of the first look's reads.
@pytest.mark.parametrize(
    "after", [MHEAD, MTAIL, QHEAD, QTAIL], ids=["mhead", "mtail", "qhead", "qtail"]
)
def test_a_restart_timed_with_the_fsps_answer_does_not_wedge_the_queue(after: int) -> None:
    fsp = SimFsp(auto_take=False)
    f = gh100(fsp)
    FspDriver(f).send_message(COT, b"boot")  # rung under the guard
    be = Hooked(fsp)
    be.after_read[after] = fsp.take  # the FSP acts between the first look's reads
    g = gh100(be)  # the VMM restart
    drv = FspDriver(g, polls=5, poll=fsp.take)
    assert drv.read_response().error_code == ERR_OK  # the FSP's own answer, consumed
    assert recovers(drv, g) == []  # ['doorbell 0: reply not consumed yet']


def test_refused_restart_timed_without_the_race() -> None:
    """The same restart, the FSP answering after the first look: nothing wedges."""
    fsp = SimFsp(auto_take=False)
    f = gh100(fsp)
    FspDriver(f).send_message(COT, b"boot")
    g = gh100(fsp)
    drv = FspDriver(g, polls=5, poll=fsp.take)
    assert drv.read_response().error_code == ERR_OK
    assert drv.transact(COT, b"again").error_code == ERR_OK
    assert drv.transact(FW, bytes(8)).error_code == ERR_NOT_SUPPORTED
    assert not firmware_update_taken(fsp)
    assert fsp.odd_accesses == []
