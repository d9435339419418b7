"""The FSP guard model (mmiofilter.testing.fsp_model) against the C guard on fixed sequences.

Each test drives the C filter and the model, each over its own SimFsp, with the same accesses
(the `Twin` bar compares every access as it goes), so a model bug shows up here simply, before
the stateful test (tests/test_fsp_guard_stateful.py) buries it in a long run.

The last tests are findings of the model against the C guard, fixed since: a continuation of
no message named the queue's previous type, and a message denied mid-way could be completed
through a reply landing on a checked packet.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field

import mmiofilter as mf
from mmiofilter.guards import GH100_EMEMC0, GH100_MSGQ_HEAD0, GH100_QUEUE_HEAD0, FspGuard
from mmiofilter.simulated.fsp import (
    AINCW,
    ERR_NOT_SUPPORTED,
    NVDM_FSP_RESPONSE,
    FspDriver,
    SimFsp,
    mctp_header,
    message_header,
    packets_of,
)
from mmiofilter.testing.fsp_model import FspGuardModel

BAR_SIZE = 16 << 20
COT, FIRMWARE_UPDATE, INFOROM = 0x14, 0x12, 0x17


def nvdm_named(detail: str) -> int | None:
    """The NVDM type a reason names ("nvdm 0x12 refused"), if any. C prints type 0 as 0000."""
    m = re.search(r"nvdm (?:0x)?([0-9a-f]+)", detail)
    return None if m is None else int(m.group(1), 16)


def decide_both(
    f: mf.BarFilter,
    m: FspGuardModel,
    msim: SimFsp,
    offset: int,
    width: int,
    is_write: bool,
    value: int = 0,
) -> tuple[mf.Result, list[mf.Event], str]:
    """One access through the C filter and through the model (over its own SimFsp); they must
    decide it alike: outcome, value and the NVDM type the reason names. Returns the C result,
    its events and the last event's reason."""
    want = m.access(offset, width, is_write, value, msim)
    got = f.access(offset, width, is_write, value)
    events = f.drain_events()
    detail = events[-1].detail if events else ""
    where = f"{'W' if is_write else 'R'} {offset:#x}/{width} {value:#x}"
    assert (got.outcome, got.value) == want[:2], f"{where}: C {got} {detail!r}, model {want}"
    assert nvdm_named(detail) == nvdm_named(want[2]), f"{where}: C {detail!r}, model {want}"
    return got, events, detail


@dataclass
class Twin:
    """A bar for FspDriver: every access goes to the C filter and to the model, each over its
    own SimFsp, and must be decided the same way (outcome, value, NVDM type named)."""

    guard: FspGuard
    auto_take: bool = True
    respond: bool = True
    queued: tuple[int, int, int] | None = None  # (queue, head, tail) queued before the guard
    csim: SimFsp = field(init=False)
    msim: SimFsp = field(init=False)
    f: mf.BarFilter = field(init=False)
    m: FspGuardModel = field(init=False)
    details: list[str] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.csim = SimFsp(auto_take=self.auto_take, respond=self.respond)
        self.msim = SimFsp(auto_take=self.auto_take, respond=self.respond)
        if self.queued is not None:
            q, head, tail = self.queued
            for sim in (self.csim, self.msim):
                sim.qhead[q], sim.qtail[q] = head, tail
                sim.pending.append(q)
        self.f = mf.BarFilter(
            BAR_SIZE, mf.Policy([self.guard]), self.csim.backend(), page_size=4096
        )
        self.m = FspGuardModel(self.guard, 0xFF)
        self.m.arm(self.msim)  # the filter armed the C guard as it was made

    def access(self, offset: int, width: int, is_write: bool, value: int = 0) -> mf.Result:
        got, _, detail = decide_both(self.f, self.m, self.msim, offset, width, is_write, value)
        self.details.append(detail)
        return got

    def read(self, offset: int, width: int) -> int:
        return self.access(offset, width, False).value

    def write(self, offset: int, width: int, value: int) -> mf.Outcome:
        return self.access(offset, width, True, value).outcome

    def take(self) -> None:
        self.csim.take()
        self.msim.take()

    def swap(self, guard: FspGuard) -> None:
        self.f.update(mf.Policy([guard]))
        self.m.swap(guard)

    def assert_same_devices(self) -> None:
        c, m = self.csim, self.msim
        assert c.packets == m.packets
        assert c.messages == m.messages
        assert c.emem == m.emem
        assert (c.ememc, c.qhead, c.qtail, c.mhead, c.mtail) == (
            m.ememc,
            m.qhead,
            m.qtail,
            m.mhead,
            m.mtail,
        )
        assert c.odd_accesses == m.odd_accesses == []


def packet_bytes(*words: int) -> bytes:
    return b"".join(w.to_bytes(4, "little") for w in words)


# ---- the model and the C guard agree -------------------------------------------------------


def test_driver_cot_send_passes() -> None:
    twin = Twin(FspGuard.at("fsp"))
    drv = FspDriver(twin)
    resp = drv.transact(COT, bytes(range(40)))
    assert (resp.nvdm_type, resp.command_type, resp.error_code) == (NVDM_FSP_RESPONSE, COT, 0)
    assert [m.nvdm_type for m in twin.csim.messages] == [COT]
    assert twin.m.doorbells[-1].packet == twin.csim.packets[-1][1]
    twin.assert_same_devices()


def test_firmware_update_refused_with_an_emulated_reply() -> None:
    twin = Twin(FspGuard.at("fsp"))
    drv = FspDriver(twin)
    resp = drv.transact(FIRMWARE_UPDATE, bytes(64))
    assert (resp.nvdm_type, resp.task_id) == (NVDM_FSP_RESPONSE, 0)
    assert (resp.command_type, resp.error_code) == (FIRMWARE_UPDATE, ERR_NOT_SUPPORTED)
    assert twin.csim.packets == [] and twin.csim.messages == []
    assert any(nvdm_named(d) == FIRMWARE_UPDATE for d in twin.details)
    # The reply is gone and the device's MSGQ untouched: the next boot message goes through.
    assert drv.transact(COT, b"").error_code == 0
    assert [m.nvdm_type for m in twin.csim.messages] == [COT]
    twin.assert_same_devices()


def test_continuation_refused_after_a_refused_first_packet() -> None:
    twin = Twin(FspGuard.at("fsp"))
    drv = FspDriver(twin)
    for p in packets_of(FIRMWARE_UPDATE, bytes(40), max_packet=16):  # SOM, 2 more, EOM
        drv.send_packet(p)
    refusals = [d for d in twin.details if nvdm_named(d) == FIRMWARE_UPDATE]
    assert len(refusals) == 4 and "continuation" in refusals[-1]
    resp = drv.read_response()  # the reply comes at EOM
    assert (resp.command_type, resp.error_code) == (FIRMWARE_UPDATE, ERR_NOT_SUPPORTED)
    assert twin.csim.packets == []
    twin.assert_same_devices()


def test_a_swap_to_deny_refuses_the_rest_of_a_message() -> None:
    twin = Twin(FspGuard.at("fsp"))
    drv = FspDriver(twin)
    first, *rest = packets_of(INFOROM, bytes(20), max_packet=16)
    drv.send_packet(first)
    twin.swap(FspGuard.at("fsp", deny_types=(FIRMWARE_UPDATE, INFOROM)))
    for p in rest:
        drv.send_packet(p)
    assert nvdm_named(twin.details[-1]) == INFOROM
    assert [p for _, p in twin.csim.packets] == [first]
    assert drv.read_response().command_type == INFOROM
    twin.assert_same_devices()


def test_a_packet_queued_before_the_guard_is_untouchable_until_taken() -> None:
    twin = Twin(FspGuard.at("fsp"), auto_take=False, queued=(2, 0x100, 0x10C))
    twin.write(GH100_EMEMC0, 4, 0x104 | AINCW)
    assert twin.write(GH100_EMEMC0 + 4, 4, 0xDEAD) is mf.Outcome.BLOCKED
    twin.take()  # HEAD = TAIL: the range is the guest's again
    assert twin.write(GH100_EMEMC0 + 4, 4, 0xDEAD) is mf.Outcome.PASS
    twin.assert_same_devices()


def test_odd_accesses_and_block_edges() -> None:
    twin = Twin(FspGuard.at("fsp"))
    for offset, width in ((GH100_EMEMC0, 8), (GH100_EMEMC0 + 2, 4), (GH100_EMEMC0 + 60, 8)):
        assert twin.access(offset, width, False).value == (1 << 8 * width) - 1
        assert twin.access(offset, width, True, 1).outcome is mf.Outcome.BLOCKED
    gap = GH100_EMEMC0 + 64  # between the EMEM and queue blocks: not the guard's
    assert twin.access(gap, 4, True, 7).outcome is mf.Outcome.PASS
    twin.assert_same_devices()


# ---- the C guard's open departures from the doc -------------------------------------------


def orphan_continuation() -> tuple[Twin, int]:
    twin = Twin(FspGuard.at("fsp"))
    drv = FspDriver(twin)
    drv.transact(COT, b"")
    drv.send_packet(packet_bytes(mctp_header(False, True, 1), 0))  # a continuation of nothing
    return twin, drv.read_response().command_type


def test_orphan_continuation_reply_names_no_type() -> None:
    _, named = orphan_continuation()
    assert named == 0


def test_a_message_denied_mid_way_cannot_be_completed() -> None:
    twin = Twin(FspGuard.at("fsp"), auto_take=False, respond=False)
    rm, other = FspDriver(twin, channel=0), FspDriver(twin, channel=1)
    rm.send_packet(packet_bytes(mctp_header(True, False, 0), message_header(INFOROM), 1))
    twin.take()  # the FSP has the first packet of an INFOROM message
    twin.swap(FspGuard.at("fsp", deny_types=(FIRMWARE_UPDATE, INFOROM)))  # denied from now
    other.send_message(COT, b"")  # queue 1, EMEM 1024: the FSP owes a reply there
    twin.take()
    # queue 1 again, before the FSP answered: refused, the driver reads a reply before it
    # sends again (it would also move the channel where that reply is due)
    FspDriver(twin, channel=1).send_packet(packets_of(COT, bytes(2000))[0])
    assert twin.details[-1] == "doorbell 1: reply not consumed yet"
    # queue 0's next packet, off its channel's base at EMEM 1024 + 16, where that reply
    # lands: refused before anything else is looked at (the FSP reads from the base)
    first = packet_bytes(mctp_header(True, False, 0), message_header(COT), 2)
    twin.write(GH100_EMEMC0, 4, (1024 + 16) | AINCW)
    for i in range(0, len(first), 4):
        twin.write(GH100_EMEMC0 + 4, 4, int.from_bytes(first[i : i + 4], "little"))
    for sim in (twin.csim, twin.msim):
        sim._reply(1, 1024, COT)
    twin.m.fsp_wrote(1024, 20)
    twin.write(GH100_QUEUE_HEAD0 + 4, 4, 1024 + 16 + len(first) - 4)
    assert twin.write(GH100_QUEUE_HEAD0, 4, 1024 + 16) is mf.Outcome.BLOCKED
    assert twin.details[-1] == "doorbell 0: head 0x410 off base"
    # an honest continuation with EOM cannot finish the INFOROM message either
    FspDriver(twin, polls=1).send_packet(packet_bytes(mctp_header(False, True, 1), 3))
    twin.take()
    twin.assert_same_devices()
    assert INFOROM not in [m.nvdm_type for m in twin.csim.messages]


# ---- fixed since: regressions --------------------------------------------------------------


def test_the_guest_cannot_publish_a_reply_the_fsp_has_not_written() -> None:
    """A due reply counted as published once the guest read MSGQ_HEAD != MSGQ_TAIL, and the
    guest's own MSGQ writes reached the device: it could fake a reply, consume it, and free
    the channel before the FSP answered over its next packet (found here and by the guard
    fuzzer; fixed in 444d136: a MSGQ write may only empty MSGQ)."""
    twin = Twin(FspGuard.at("fsp"), auto_take=False, respond=False)
    FspDriver(twin, channel=1).send_message(COT, b"")  # queue 1 owes a reply at [1024, 2048)
    twin.take()
    assert twin.write(GH100_MSGQ_HEAD0 + 8, 4, 4) is mf.Outcome.BLOCKED  # would fake a reply
    assert "reply" in twin.details[-1]
    assert twin.read(GH100_MSGQ_HEAD0 + 8, 4) == twin.read(GH100_MSGQ_HEAD0 + 12, 4) == 0
    # queue 1 cannot send again until the FSP's reply is published and consumed
    first = packet_bytes(mctp_header(True, True, 0), message_header(COT), 7)
    FspDriver(twin, channel=1, polls=1).send_packet(first)
    assert "reply not consumed yet" in twin.details[-1]
    twin.assert_same_devices()
    assert len(twin.csim.packets) == 1


def test_a_packet_the_fsp_answered_over_is_refused() -> None:
    """The FSP answers late, after the guest wrote its next packet where the answer lands; the
    guest empties MSGQ with MSGQ_TAIL = MSGQ_HEAD alone and rings. Before e419733/1d841ff the
    shadow kept the guest's bytes and the FSP took the reply's (found here); now the MSGQ
    write consumes the reply the guard saw published, which invalidates the channel."""
    twin = Twin(FspGuard.at("fsp"), auto_take=False, respond=False)
    FspDriver(twin).send_message(COT, b"")
    twin.take()
    pkt = packets_of(COT, bytes(12))[0]
    twin.write(GH100_EMEMC0, 4, AINCW)
    for i in range(0, len(pkt), 4):
        twin.write(GH100_EMEMC0 + 4, 4, int.from_bytes(pkt[i : i + 4], "little"))
    for sim in (twin.csim, twin.msim):
        sim._reply(0, 0, COT)  # EMEM 0..20 and MSGQ(0) = 0, 16
    twin.m.fsp_wrote(0, 20)
    twin.write(GH100_MSGQ_HEAD0 + 4, 4, 0)
    twin.write(GH100_QUEUE_HEAD0 + 4, 4, len(pkt) - 4)
    assert twin.write(GH100_QUEUE_HEAD0, 4, 0) is mf.Outcome.BLOCKED  # (not written: the
    twin.take()  # MSGQ_TAIL write consumed the reply, which the guard saw published)
    assert len(twin.csim.packets) == 1
    twin.assert_same_devices()


WRAP = """
import mmiofilter as mf
from mmiofilter.guards import FspGuard, GH100_QUEUE_HEAD0 as Q
from mmiofilter.simulated.fsp import SimFsp
sim = SimFsp()
f = mf.BarFilter(16 << 20, mf.Policy([FspGuard.at("fsp")]), sim.backend(), page_size=4096)
f.write(Q + 4, 4, 0x100)  # QUEUE_TAIL(0) = 0x100, held
r = f.access(Q, 4, True, 0xFFFFFFFC)  # the doorbell with head 0xFFFFFFFC: h + 4 wraps to 0
print(r.outcome.name, sim.packets)
"""


def test_a_doorbell_whose_head_wraps_is_out_of_bounds() -> None:
    """`tail < head + 4` wrapped for head 0xFFFFFFFC: the doorbell passed the bounds check and
    the packet check read the shadow 4 GiB past its end (SIGSEGV; fixed in 991dac7). In a
    subprocess, so that a regression fails this test instead of killing the run. The model
    refuses it as out of bounds too."""
    run = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(WRAP)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, f"exit {run.returncode}: {run.stderr[-400:]}"
    assert run.stdout.split() == ["BLOCKED", "[]"]
    twin = Twin(FspGuard.at("fsp"))
    twin.write(GH100_QUEUE_HEAD0 + 4, 4, 0x100)
    outcome, _, _ = twin.m.access(GH100_QUEUE_HEAD0, 4, True, 0xFFFFFFFC, twin.msim)
    assert outcome is mf.Outcome.BLOCKED
