"""Attacks on the FSP guard, each against the simulated FSP as the public sources document it
(eight ports on one EMEM that wraps at its size, a packet read from its channel's base), and
the PRC messages that change NVLink and persistent settings (issue 11). Each test ends by
checking what the simulated FSP took.
"""

from __future__ import annotations

import pytest
from mmiofilter._core import ffi, lib

import mmiofilter as mf
from mmiofilter.filter import _Table
from mmiofilter.guards import PRC_SUBMESSAGES
from mmiofilter.simulated.fsp import (
    AINCW,
    ERR_NOT_SUPPORTED,
    ERR_OK,
    FspDriver,
    FspTimeout,
    GatDriver,
    SimFsp,
    message_header,
    packets_of,
)

from .fsp_helpers import (
    AUDIT,
    BAR,
    COT,
    EMEMC,
    EMEMD,
    FW,
    KNOB,
    ONE_SHOT,
    PERSISTENT,
    PRC,
    firmware_update_taken,
    gh100,
    guarded,
    prc,
    ring,
    words_of,
    write_words,
)

# ---- 1. PRC: decided on the sub-message ----------------------------------------------------


@pytest.mark.parametrize(
    ("sub", "scope"),
    [
        (0x0A, ONE_SHOT),  # prc_block_nvlinks(persistent=False): what block_nvlinks sends
        (0x0A, PERSISTENT),
        (0x01, ONE_SHOT),  # prc_ecc
        (0x01, PERSISTENT),
        (0x04, ONE_SHOT),  # prc_couple_reset
        (0x04, PERSISTENT),
        (0x0D, KNOB),  # prc_knob_write (CC mode, PPCIe, ...)
    ],
)
@pytest.mark.parametrize("client", ["driver", "gat"])
def test_prc_that_changes_nvlink_or_persistent_settings_is_refused(
    sub: int, scope: int, client: str
) -> None:
    fsp = SimFsp()
    f = gh100(fsp)
    drv = FspDriver(f) if client == "driver" else GatDriver(f, channel=1)
    resp = drv.transact(PRC, prc(sub, scope, bytes(8)))
    assert (resp.command_type, resp.error_code) == (PRC, ERR_NOT_SUPPORTED)
    assert fsp.messages == [] and fsp.packets == []
    details = [e.detail for e in f.drain_events() if e.outcome is mf.Outcome.BLOCKED]
    assert f"prc {sub:#04x} (scope {scope:#x}) refused" in details
    # the knob read the open driver sends still passes, and so does COT
    assert drv.transact(PRC, prc(0x0C, KNOB)).error_code == ERR_OK
    assert drv.transact(COT, b"boot").error_code == ERR_OK
    assert [(m.nvdm_type, m.body[:1]) for m in fsp.messages] == [(PRC, b"\x0c"), (COT, b"b")]


def test_the_admin_may_allow_nvlink_and_persistent_settings() -> None:
    fsp = SimFsp()
    f = gh100(fsp, 'nvlink = "allow"\npersistent_settings = "allow"')
    drv = FspDriver(f)
    for sub in (0x0A, 0x01, 0x04, 0x0D):
        assert drv.transact(PRC, prc(sub, PERSISTENT)).error_code == ERR_OK
    assert [m.body[0] for m in fsp.messages] == [0x0A, 0x01, 0x04, 0x0D]


def test_nvlink_isolate_alone_refuses_only_the_link_mask() -> None:
    fsp = SimFsp()
    f = gh100(fsp, 'persistent_settings = "allow"')
    drv = FspDriver(f)
    assert drv.transact(PRC, prc(0x0A, ONE_SHOT)).error_code == ERR_NOT_SUPPORTED
    assert drv.transact(PRC, prc(0x01, PERSISTENT)).error_code == ERR_OK
    assert [m.body[0] for m in fsp.messages] == [0x01]


def test_a_prc_message_must_carry_its_sub_message_in_its_first_packet() -> None:
    """A PRC first packet of two dwords, its sub-message in the continuation: the guard
    cannot decide on it, so it refuses the whole message."""
    fsp = SimFsp()
    f = gh100(fsp)
    first = words_of((0x80000000).to_bytes(4, "little") + message_header(PRC).to_bytes(4, "little"))
    write_words(f, 0, 0, first)  # SOM, no EOM, SEQ 0
    ring(f, 0, 0, 4)
    cont = [0x40000000 | 1 << 28, 0x0A | PERSISTENT << 8]  # EOM, SEQ 1, then "nvlink_mask"
    write_words(f, 0, 0, cont)
    ring(f, 0, 0, 4)
    assert fsp.packets == []
    details = [e.detail for e in f.drain_events() if e.outcome is mf.Outcome.BLOCKED]
    assert "prc without its sub-message refused" in details


def test_prc_sub_messages_have_admin_facing_names() -> None:
    text = """
[[guard]]
name = "fsp"
kind = "fsp"
deny_prc = ["nvlink_mask", "ecc", 0x04, "KNOB_WRITE"]
"""
    guard = mf.Policy.from_toml(text).rules[0]
    assert isinstance(guard, mf.FspGuard)
    assert guard.deny_prc == {0x0A, 0x01, 0x04, 0x0D}
    assert PRC_SUBMESSAGES["knob_read"] == 0x0C
    with pytest.raises(mf.PolicyError, match="PRC sub-message 'nvlink' is neither"):
        mf.FspGuard.at("fsp", deny_prc=["nvlink"])


# ---- 2. a doorbell whose head is not the channel base ---------------------------------------


def test_a_head_off_the_channel_base_cannot_smuggle_a_firmware_update() -> None:
    """The FSP reads a packet from its channel's base. The guest leaves a FIRMWARE_UPDATE
    packet there, writes a COT packet further on and rings the doorbell with the COT's head:
    a guard that checks [head, tail] lets the FSP take the firmware update."""
    fsp = SimFsp()
    f = guarded(fsp)
    fw = words_of(packets_of(FW, bytes(24))[0])
    cot = words_of(packets_of(COT, bytes(24))[0])
    write_words(f, 0, 0, fw)  # at the base: never rung
    write_words(f, 0, 0x100, cot)
    ring(f, 0, 0x100, 0x100 + 4 * len(cot) - 4)
    assert not firmware_update_taken(fsp)
    assert fsp.packets == []
    details = [e.detail for e in f.drain_events() if e.outcome is mf.Outcome.BLOCKED]
    assert "doorbell 0: head 0x100 off base" in details


def test_a_tail_outside_the_channel_is_refused() -> None:
    fsp = SimFsp()
    f = guarded(fsp)
    cot = words_of(packets_of(COT, bytes(24))[0])
    write_words(f, 1, 1024, cot)
    for tail in (1024 + 1024, 2048 + 4, 0xFFFC, 1020):  # past the channel; before the base
        ring(f, 1, 1024, tail)
    assert fsp.packets == []
    ring(f, 1, 1024, 1024 + 4 * len(cot) - 4)
    assert [c for c, _ in fsp.packets] == [1]


# ---- 3. all eight ports write the same EMEM --------------------------------------------------


def test_a_guard_over_one_channel_still_owns_every_port() -> None:
    """`channels = 1` in a policy file: a guard that owned only port 0 let the guest rewrite a
    checked packet's NVDM type through port 1 (all ports reach the same EMEM)."""
    text = '[[guard]]\nname = "fsp"\nkind = "fsp"\nchannels = 1\npriority = 1\n'
    [rule] = mf.Policy.from_toml(text).rules
    assert isinstance(rule, mf.FspGuard)
    fsp = SimFsp()
    f = mf.BarFilter(BAR, mf.Policy([AUDIT, rule]), fsp.backend(), page_size=4096)
    cot = words_of(packets_of(COT, bytes(24))[0])
    write_words(f, 0, 0, cot)
    assert f.write(EMEMC + 8, 4, 4 | AINCW) is mf.Outcome.BLOCKED  # port 1: not the guest's
    assert f.write(EMEMD + 8, 4, message_header(FW)) is mf.Outcome.BLOCKED
    ring(f, 0, 0, 4 * len(cot) - 4)  # the packet as checked: COT
    assert not firmware_update_taken(fsp)
    # the queues past `channels` are closed: a doorbell there is refused
    write_words(f, 3, 3072, words_of(packets_of(FW, bytes(8))[0]))
    ring(f, 3, 3072, 3072 + 8)
    assert not firmware_update_taken(fsp)
    assert fsp.odd_accesses == []
    # the guest's own channel still works
    drv = FspDriver(f)
    assert drv.read_response().error_code == ERR_OK
    assert drv.transact(COT, b"ok").error_code == ERR_OK


# ---- 4. a retired table published again ------------------------------------------------------


def test_a_retired_table_published_again_gets_a_fresh_guard_state() -> None:
    """Through the C API: table A (with the guard) is retired by an update to B (no guard),
    then published again with the pointer the first update handed back. A's old state still
    held a checked COT packet in its shadow; under B the guest rewrote it into a
    FIRMWARE_UPDATE. The stale state let the doorbell through."""
    fsp = SimFsp()
    f = guarded(fsp)
    table_a = f._table
    cot = words_of(packets_of(COT, bytes(24))[0])
    write_words(f, 0, 0, cot)  # checked into A's shadow
    b = _Table(mf.Policy([AUDIT]), 0, BAR, 4096, {})
    old = ffi.new("struct mf_table **")
    assert lib.mf_filter_update(f._f, b.ptr, old, ffi.NULL) == lib.MF_OK
    assert old[0] == table_a.ptr
    f.write(EMEMC, 4, 4 | AINCW)  # under B: nothing guards the mailbox
    f.write(EMEMD, 4, message_header(FW))
    assert lib.mf_filter_update(f._f, table_a.ptr, old, ffi.NULL) == lib.MF_OK  # A again
    assert old[0] == b.ptr
    b.free()
    ring(f, 0, 0, 4 * len(cot) - 4)
    assert not firmware_update_taken(fsp)
    assert fsp.packets == []
    # a fresh state: the refusal is answered, the guest writes the packet again, it passes
    drv = FspDriver(f)
    assert drv.read_response().error_code == ERR_NOT_SUPPORTED
    assert drv.transact(COT, b"again").error_code == ERR_OK


# ---- 5. EMEM smaller than the 64 KiB a port can address --------------------------------------


def test_an_alias_past_a_small_emem_cannot_rewrite_a_checked_packet() -> None:
    """The EMEM is 8 KiB (the channel areas): a port addressing 8 KiB + 4 wraps to EMEM 4,
    the message header of a checked COT packet. The shadow saw a write at 0x2004."""
    fsp = SimFsp(emem_size=8192)
    f = guarded(fsp)
    cot = words_of(packets_of(COT, bytes(24))[0])
    write_words(f, 0, 0, cot)
    f.write(EMEMC + 8 * 2, 4, (8192 + 4) | AINCW)
    assert f.write(EMEMD + 8 * 2, 4, message_header(FW)) is mf.Outcome.BLOCKED
    ring(f, 0, 0, 4 * len(cot) - 4)
    assert not firmware_update_taken(fsp)
    assert [m.nvdm_type for m in fsp.messages] == [COT]


def test_a_guard_whose_channels_exceed_the_emem_is_refused() -> None:
    with pytest.raises(mf.PolicyError, match="exceed the 65536-byte EMEM"):
        mf.FspGuard.at("fsp", channels=8, max_packet=16384)


# ---- 6. gpu-admin-tools as a client ----------------------------------------------------------


@pytest.mark.parametrize("channel", [1, 2])
def test_gpu_admin_tools_is_not_wedged_by_a_refusal(channel: int) -> None:
    """gpu-admin-tools consumes a reply with MSGQ_TAIL = MSGQ_HEAD alone: the emulated reply
    to a refused message must end there, or its next message waits forever."""
    fsp = SimFsp()
    f = guarded(fsp)
    gat = GatDriver(f, channel=channel, polls=20)
    resp = gat.transact(FW, bytes(40))
    assert (resp.command_type, resp.error_code) == (FW, ERR_NOT_SUPPORTED)
    try:
        assert gat.transact(COT, b"next").error_code == ERR_OK
    except FspTimeout:
        pytest.fail("the refusal wedged gpu-admin-tools' queue")
    assert [(m.channel, m.nvdm_type) for m in fsp.messages] == [(channel, COT)]
    # and the open driver on channel 0 alongside
    assert FspDriver(f).transact(COT, b"rm").error_code == ERR_OK
    assert not firmware_update_taken(fsp)
