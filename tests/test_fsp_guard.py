"""The FSP mailbox guard with a simulated FSP and the open driver's send/receive order.

COT and PRC messages must reach the FSP byte for byte; FIRMWARE_UPDATE messages must never
reach it: in one packet or many, through any port and queue, rewritten after the doorbell, or
with the doorbell rung twice. Every test ends by checking what the simulated FSP saw.
"""

from __future__ import annotations

import pytest

import mmiofilter as mf
from mmiofilter.devices import load_policy_file
from mmiofilter.simulated.fsp import (
    AINCR,
    AINCW,
    ERR_NOT_SUPPORTED,
    ERR_OK,
    FspDriver,
    SimFsp,
    mctp_header,
    message_header,
    packets_of,
)

from .fsp_helpers import BAR, COT, EMEMC, EMEMD, FW, MHEAD, PRC, QHEAD, QTAIL, guarded

INFOROM = 0x17


def payload(n: int, seed: int = 1) -> bytes:
    return bytes((seed * 31 + 7 * i) & 0xFF for i in range(n))


def assert_no_firmware_update(fsp: SimFsp) -> None:
    assert FW not in fsp.types_received()
    assert all(m.nvdm_type != FW for m in fsp.messages)
    assert fsp.odd_accesses == []


def consume_reply(f: mf.BarFilter, queue: int = 0) -> None:
    """Read the (emulated) reply's head and mark it read, as the driver does."""
    head = f.read(MHEAD + 8 * queue, 4)
    f.write(MHEAD + 8 * queue + 4, 4, head)
    f.write(MHEAD + 8 * queue, 4, head)


def send_raw(f: mf.BarFilter, packet: bytes, *, port: int = 0, queue: int = 0, at: int = 0) -> None:
    """A hostile guest's send: the driver's register sequence on any port and queue."""
    f.write(EMEMC + 8 * port, 4, at | AINCW)
    padded = packet + bytes(-len(packet) % 4)
    for i in range(0, len(padded), 4):
        f.write(EMEMD + 8 * port, 4, int.from_bytes(padded[i : i + 4], "little"))
    f.write(QTAIL + 8 * queue, 4, at + len(padded) - 4)
    f.write(QHEAD + 8 * queue, 4, at)


@pytest.mark.parametrize("nvdm", [COT, PRC])
@pytest.mark.parametrize("size", [4, 100, 1016, 3000])
def test_boot_messages_reach_the_fsp_byte_for_byte(nvdm: int, size: int) -> None:
    fsp = SimFsp()
    f = guarded(fsp)
    body = payload(size, nvdm)
    resp = FspDriver(f).transact(nvdm, body)
    assert (resp.command_type, resp.error_code) == (nvdm, ERR_OK)
    assert [(m.nvdm_type, m.body.rstrip(b"\0")) for m in fsp.messages] == [
        (nvdm, body.rstrip(b"\0"))
    ]
    sent = [p + bytes(-len(p) % 4) for p in packets_of(nvdm, body)]
    assert [p for _, p in fsp.packets] == sent
    assert fsp.odd_accesses == []


@pytest.mark.parametrize("size", [8, 1016, 5000])
def test_firmware_update_never_reaches_the_fsp_and_the_driver_fails_fast(size: int) -> None:
    fsp = SimFsp()
    f = guarded(fsp)
    drv = FspDriver(f)
    resp = drv.transact(FW, payload(size))
    assert (resp.nvdm_type, resp.command_type, resp.error_code) == (0x15, FW, ERR_NOT_SUPPORTED)
    assert fsp.packets == []
    refusals = [e for e in f.drain_events() if e.outcome is mf.Outcome.BLOCKED]
    assert refusals and all("nvdm 0x12 refused" in e.detail for e in refusals)
    assert len(refusals) == len(packets_of(FW, payload(size)))
    # the mailbox still works for the next boot message
    assert drv.transact(COT, b"cot").error_code == ERR_OK
    assert [m.nvdm_type for m in fsp.messages] == [COT]
    assert_no_firmware_update(fsp)


@pytest.mark.parametrize("port", range(4))
@pytest.mark.parametrize("queue", [0, 2, 3])
def test_any_port_and_queue(port: int, queue: int) -> None:
    fsp = SimFsp()
    f = guarded(fsp)
    at = 1024 * queue  # channel q lives at EMEM q * 1 KiB
    for p in packets_of(FW, payload(2500)):
        send_raw(f, p, port=port, queue=queue, at=at)
    assert fsp.packets == []
    # the refusal's reply waits in MSGQ: no new message is accepted until it is consumed
    send_raw(f, packets_of(COT, b"ok")[0], port=port, queue=queue, at=at)
    assert fsp.packets == []
    head = f.read(MHEAD + 8 * queue, 4)
    assert f.read(MHEAD + 8 * queue + 4, 4) == head + 16
    consume_reply(f, queue)
    send_raw(f, packets_of(COT, b"ok")[0], port=port, queue=queue, at=at)
    assert [c for c, _ in fsp.packets] == [queue]
    assert fsp.messages[0].nvdm_type == COT
    assert_no_firmware_update(fsp)


@pytest.mark.parametrize("channel", [4, 7])
def test_channels_past_the_guests_are_closed_to_every_access(channel: int) -> None:
    # channel 4 is the PMU's and SOE's on GH100 (OGKM gh100 dev_fsp_addendum.h): the guest
    # must not move its port, step it by reading, ring its queue, consume its replies, or
    # write its EMEM through its own port; and nothing of it may reach the device
    fsp = SimFsp()
    f = guarded(fsp)
    regs = [EMEMC, EMEMD, QHEAD, QTAIL, MHEAD, MHEAD + 4]
    for r in regs:
        assert f.read(r + 8 * channel, 4) == 0xFFFFFFFF
        assert f.write(r + 8 * channel, 4, 1024 * channel | AINCW) is mf.Outcome.BLOCKED
    before = bytes(fsp.emem)
    f.write(EMEMC, 4, 1024 * channel | AINCW | AINCR)  # the guest's own port, at channel's EMEM
    assert f.write(EMEMD, 4, message_header(FW)) is mf.Outcome.BLOCKED
    assert f.read(EMEMD, 4) == 0xFFFFFFFF and fsp.ememc[0] == 1024 * channel | AINCW | AINCR
    assert fsp.emem == before and fsp.pending == [] and fsp.odd_accesses == []
    assert fsp.ememc[channel] == fsp.qhead[channel] == fsp.qtail[channel] == 0
    assert fsp.mhead[channel] == fsp.mtail[channel] == 0
    assert FspDriver(f).transact(COT, b"ok").error_code == ERR_OK  # the guest's own works


def test_a_packet_cannot_be_rewritten_after_its_doorbell() -> None:
    fsp = SimFsp(auto_take=False)
    f = guarded(fsp)
    cot = packets_of(COT, payload(40))[0]
    send_raw(f, cot)
    assert fsp.pending == [0]
    fw_header = message_header(FW)
    # through the same port, another port, by moving the port, or by moving the tail
    assert f.write(EMEMC, 4, 4 | AINCW) is mf.Outcome.BLOCKED
    assert f.write(EMEMC + 8, 4, 4 | AINCW) is mf.Outcome.PASS
    assert f.write(EMEMD + 8, 4, fw_header) is mf.Outcome.BLOCKED
    assert f.write(QTAIL, 4, 0x3FC) is mf.Outcome.BLOCKED
    assert f.write(QHEAD, 4, 0) is mf.Outcome.BLOCKED  # the doorbell rung again, in flight
    fsp.take()
    assert [p for _, p in fsp.packets] == [cot + bytes(-len(cot) % 4)]
    # once taken, the guest may write EMEM again (and its next packet is checked afresh)
    assert f.write(EMEMD + 8, 4, fw_header) is mf.Outcome.PASS
    assert_no_firmware_update(fsp)


def test_the_doorbell_rung_twice_sends_nothing_new() -> None:
    fsp = SimFsp()
    f = guarded(fsp)
    send_raw(f, packets_of(COT, b"first")[0])
    assert len(fsp.packets) == 1
    # rewrite the (taken) packet into a firmware update, then ring without a new tail
    f.write(EMEMC, 4, 4 | AINCW)
    assert f.write(EMEMD, 4, message_header(FW)) is mf.Outcome.PASS
    assert f.write(QHEAD, 4, 0) is mf.Outcome.BLOCKED
    # and with a tail: the packet is checked from the shadow, where dword 0 is stale
    assert f.write(QTAIL, 4, 4) is mf.Outcome.EMULATED
    assert f.write(QHEAD, 4, 0) is mf.Outcome.BLOCKED
    assert len(fsp.packets) == 1
    assert_no_firmware_update(fsp)


@pytest.mark.parametrize("width", [1, 2, 8])
def test_odd_widths_and_alignments_never_reach_the_mailbox(width: int) -> None:
    fsp = SimFsp()
    f = guarded(fsp)
    for base in (EMEMC, QHEAD, MHEAD):
        for off in range(base - 8, base + 64 + 8):
            if off % width and width == 8:
                continue
            for is_write in (False, True):
                r = f.access(off, width, is_write, 0x12 if is_write else 0)
                touches = any(base <= off + k < base + 64 for k in range(width))
                if touches:
                    assert r.outcome is mf.Outcome.BLOCKED
    for off in range(EMEMC, EMEMC + 64, 2):
        assert f.access(off + 1, 4, True, 1).outcome is mf.Outcome.BLOCKED
    assert fsp.odd_accesses == []
    assert fsp.ememc == [0] * 8 and fsp.qhead == [0] * 8


def test_malformed_doorbells_are_refused() -> None:
    fsp = SimFsp()
    f = guarded(fsp, max_packet=1024)
    som_eom = mctp_header(True, True, 0).to_bytes(4, "little")
    sends = [
        som_eom + (0x10DE7F).to_bytes(4, "little"),  # message type 0x7F
        som_eom + (0x10DF7E).to_bytes(4, "little"),  # vendor 0x10DF
        packets_of(COT, payload(1100), max_packet=2048)[0],  # longer than the channel
        mctp_header(False, True, 1).to_bytes(4, "little") + b"cont",  # no message started
    ]
    assert f.write(QHEAD, 4, 0) is mf.Outcome.BLOCKED  # no packet
    for packet in sends:
        send_raw(f, packet)
        consume_reply(f)
    # one dword; past the channel; misaligned; a tail before the head (once wrapped to a
    # "small" packet whose check read past the shadow)
    for head, tail in ((0, 0), (0, 0xFFFC), (0, 2), (0, 0xFFFFFFFC)):
        f.write(QTAIL, 4, tail)
        assert f.write(QHEAD, 4, head) is mf.Outcome.BLOCKED
    # heads off the channel's base (the FSP reads from the base)
    for head, tail in ((0xFFFFFFFC, 8), (0x10000, 0x10008), (4, 8), (1024, 1032)):
        f.write(QTAIL, 4, tail)
        assert f.write(QHEAD, 4, head) is mf.Outcome.BLOCKED
    assert fsp.packets == []
    details = [e.detail for e in f.drain_events() if e.outcome is mf.Outcome.BLOCKED]
    assert sum("no packet" in d for d in details) == 1
    assert sum("bad message header" in d for d in details) == 2
    assert sum("bad packet bounds" in d for d in details) == 5
    assert sum("off base" in d for d in details) == 4
    assert sum("continuation of no message" in d for d in details) == 1
    assert not any("reply" in d for d in details)
    assert FspDriver(f).transact(COT, b"fine").error_code == ERR_OK


def test_unwritten_packet_dwords_are_refused() -> None:
    fsp = SimFsp()
    f = guarded(fsp)
    # the FSP's EMEM already holds a firmware update someone wrote before the guard existed
    fsp.emem[0:8] = mctp_header(True, True, 0).to_bytes(4, "little") + message_header(FW).to_bytes(
        4, "little"
    )
    f.write(QTAIL, 4, 4)
    assert f.write(QHEAD, 4, 0) is mf.Outcome.BLOCKED
    assert fsp.packets == []


def test_firmware_update_allowed_when_the_admin_says_so() -> None:
    fsp = SimFsp()
    f = guarded(fsp, deny_types=())
    assert FspDriver(f).transact(FW, payload(3000)).error_code == ERR_OK
    assert [m.nvdm_type for m in fsp.messages] == [FW]


def test_extra_denied_types() -> None:
    fsp = SimFsp()
    f = guarded(fsp, deny_types=(FW, "inforom"))
    drv = FspDriver(f)
    assert drv.transact(INFOROM, b"x").error_code == ERR_NOT_SUPPORTED
    assert drv.transact(COT, b"x").error_code == ERR_OK
    assert [m.nvdm_type for m in fsp.messages] == [COT]


def test_a_policy_swap_keeps_the_protocol_state() -> None:
    fsp = SimFsp(auto_take=False)
    f = guarded(fsp)
    send_raw(f, packets_of(COT, payload(40))[0])
    # a new policy with the same guard registers (and one more denied type)
    f.update(mf.Policy([mf.FspGuard.at("fsp2", deny_types=(FW, INFOROM))]))
    assert f.write(EMEMC, 4, AINCW) is mf.Outcome.BLOCKED  # still in flight
    fsp.take()
    assert f.write(EMEMC, 4, AINCW) is mf.Outcome.PASS


def test_a_swap_to_deny_refuses_the_rest_of_a_message_in_progress() -> None:
    fsp = SimFsp()
    f = guarded(fsp, deny_types=())
    first, *rest = packets_of(FW, payload(3000))
    send_raw(f, first)
    assert len(fsp.packets) == 1  # allowed then
    f.update(mf.Policy([mf.FspGuard.at("fsp")]))
    for p in rest:
        send_raw(f, p)
    assert len(fsp.packets) == 1  # the message never completes
    assert fsp.messages == []


def test_a_guard_added_by_a_swap_works_once_the_swap_returns() -> None:
    fsp = SimFsp()
    f = mf.BarFilter(BAR, mf.Policy([]), fsp.backend(), page_size=4096)
    f.update(mf.Policy([mf.FspGuard.at("fsp")]))
    assert FspDriver(f).transact(COT, b"boot").error_code == ERR_OK
    assert FspDriver(f).transact(FW, b"flash").error_code == ERR_NOT_SUPPORTED
    assert_no_firmware_update(fsp)


def test_a_packet_queued_before_the_guard_is_respected() -> None:
    fsp = SimFsp(auto_take=False)
    fsp.qhead[0], fsp.qtail[0] = 0, 12  # someone's packet [0, 16) not yet taken
    fsp.pending.append(0)
    f = guarded(fsp)
    assert f.write(EMEMC, 4, AINCW) is mf.Outcome.BLOCKED  # queue 0's own port
    assert f.write(EMEMC + 8, 4, 8 | AINCW) is mf.Outcome.PASS
    assert f.write(EMEMD + 8, 4, message_header(FW)) is mf.Outcome.BLOCKED
    fsp.take()
    assert f.write(EMEMD + 8, 4, 0) is mf.Outcome.PASS


def test_a_reply_waiting_before_the_guard_is_not_the_queued_packets() -> None:
    # Left by someone the guard did not see: an earlier message's reply waits in MSGQ(0) and a
    # packet that ends a message is queued on queue 0, not taken yet (found by the guard fuzzer)
    fsp = SimFsp(auto_take=False, respond=False)
    mctp, hdr = mctp_header(True, True, 0), message_header(COT)
    fsp.emem[0:8] = mctp.to_bytes(4, "little") + hdr.to_bytes(4, "little")
    fsp.qhead[0], fsp.qtail[0], fsp.mhead[0], fsp.mtail[0] = 0, 4, 0, 16
    fsp.pending.append(0)
    f = guarded(fsp)
    consume_reply(f)  # the driver consumes the reply it sees: the earlier message's
    fsp.take()  # the queued packet is taken; its reply will come later, into channel 0
    send_raw(f, packets_of(COT, b"boot")[0])
    assert fsp.pending == []  # refused: the reply due would overwrite it
    fsp._reply(0, 0, COT)  # the reply comes
    consume_reply(f)
    send_raw(f, packets_of(COT, b"boot")[0])
    assert fsp.pending == [0]  # now it passes
    fsp.take()
    assert fsp.packets[-1] == (0, packets_of(COT, b"boot")[0])


def test_a_packet_queued_off_its_base_before_the_guard_is_placed_nowhere() -> None:
    # Left by someone the guard did not see (found by the guard fuzzer): a packet that ends a
    # message was rung at channel 0's base, then QUEUE_HEAD/TAIL were moved off the base before
    # the FSP took it. The FSP reads from the base; the registers say nothing of where.
    fsp = SimFsp(auto_take=False, respond=False)
    mctp, hdr = mctp_header(True, True, 0), message_header(COT)
    fsp.emem[0:8] = mctp.to_bytes(4, "little") + hdr.to_bytes(4, "little")
    fsp.qhead[0], fsp.qtail[0] = 0x100, 0x10C  # no packet there: no EOM at 0x100
    fsp.pending.append(0)
    f = guarded(fsp)
    assert f.write(EMEMC + 8, 4, 0 | AINCW) is mf.Outcome.PASS
    assert f.write(EMEMD + 8, 4, 0) is mf.Outcome.BLOCKED  # the FSP may be reading there
    fsp.take()  # it takes [0, 8) from the base: a message ended, a reply will come
    assert [m.nvdm_type for m in fsp.messages] == [COT]
    boot = packets_of(COT, b"boot")[0]
    send_raw(f, boot)
    send_raw(f, boot, port=1, queue=1, at=1024)  # where that reply lands is not known either
    assert fsp.pending == []
    fsp._reply(0, 0, COT)  # the reply comes
    consume_reply(f)
    send_raw(f, boot)
    assert fsp.pending == [0]  # now it passes
    fsp.take()
    assert fsp.packets[-1] == (0, boot)


def test_the_guard_must_own_all_its_registers() -> None:
    hole = mf.Rule("hole", EMEMD + 8 * 3, 4, "allow", priority=5)
    with pytest.raises(mf.PolicyError, match="guard register byte 0x8f2adc is owned by rule hole"):
        mf.BarFilter(BAR, mf.Policy([mf.FspGuard.at("fsp"), hole]), SimFsp().backend())
    same = mf.Rule("deny-all", 0x8F0000, 0x4000, "deny")  # deny outranks a guard on a tie
    with pytest.raises(mf.PolicyError, match="owned by rule deny-all"):
        mf.BarFilter(BAR, mf.Policy([mf.FspGuard.at("fsp"), same]), SimFsp().backend())
    with pytest.raises(mf.PolicyError, match="not one of allow"):
        mf.Rule("g", 0, 4, "guard")
    with pytest.raises(mf.PolicyError, match="overlap"):
        mf.FspGuard.at("g", emem=0x1000, queue=0x1020, msgq=0x2000)


def test_gh100_profile_guards_the_mailbox(tmp_path: object) -> None:
    def policy(options: str) -> mf.Policy:
        # the mirror is not this test's business: deny it rather than hand a config target
        text = f'profile = "nvidia-gh100"\n[options]\nconfig_mirror = "deny"\n{options}\n'
        return load_policy_file(text).resolve(None)[0]

    guards = [r for r in policy("").rules if isinstance(r, mf.FspGuard)]
    assert [sorted(g.deny_types) for g in guards] == [[FW]]
    # with firmware updates allowed the guard stays for the PRC sub-messages (nvlink isolate,
    # persistent_settings deny: the defaults); with nothing refused there is none
    [prc_only] = [r for r in policy('firmware_update = "allow"').rules if r.action == "guard"]
    assert isinstance(prc_only, mf.FspGuard) and not prc_only.deny_types
    nothing = 'firmware_update = "allow"\nnvlink = "allow"\npersistent_settings = "allow"'
    assert not [r for r in policy(nothing).rules if r.action == "guard"]
    extra = policy('firmware_update = "allow"\nfsp_deny_types = ["inforom", 0x18]')
    assert [sorted(g.deny_types) for g in extra.rules if isinstance(g, mf.FspGuard)] == [
        [INFOROM, 0x18]
    ]
    with pytest.raises(mf.PolicyError, match="fsp_deny_types"):
        policy('fsp_deny_types = ["nonsense"]')
    # the profile's policy boots (COT) and refuses a flash on a simulated GH100
    fsp = SimFsp()
    f = mf.BarFilter(BAR, policy(""), fsp.backend(), page_size=65536)
    assert FspDriver(f).transact(COT, b"boot").error_code == ERR_OK
    assert FspDriver(f).transact(FW, payload(2000)).error_code == ERR_NOT_SUPPORTED
    assert_no_firmware_update(fsp)


def test_guard_policy_from_toml() -> None:
    p = mf.Policy.from_toml(
        '[[guard]]\nname = "fsp"\nkind = "fsp"\ndeny_types = [0x12, "inforom"]\npriority = 1\n'
    )
    (g,) = p.rules
    assert isinstance(g, mf.FspGuard) and g.deny_types == {FW, INFOROM}
    with pytest.raises(mf.PolicyError, match="kind 'mailbox' is not one of fsp"):
        mf.Policy.from_toml('[[guard]]\nname = "g"\nkind = "mailbox"\n')
    with pytest.raises(mf.PolicyError, match="unknown field"):
        mf.Policy.from_toml('[[guard]]\nname = "g"\nkind = "fsp"\ndeny = [1]\n')
