#!/usr/bin/env python3
"""Write the seed corpus of the FSP guard harness: python fuzz/make_guard_seeds.py [DIR].

Each seed is a short scenario in guard_fuzz.c's input encoding (a header, then operations),
named after what it exercises: a COT message, a FIRMWARE_UPDATE message (refused and
answered), a multi-packet message, a policy swap in the middle of a message, raw register
accesses, a filter restart, a device fault, the FSP replying late, PRC sub-messages, a head
off the channel's base, a port past the guard's channels, a retired table published again, a
small EMEM, gpu-admin-tools' reply consumption. The default DIR is fuzz/corpus/guard.

`--findings [DIR]` writes instead the hand-made reproducers of the guard bugs the harness found
that are not fixed yet (`FINDINGS`; default DIR fuzz/findings/guard, where
tests/test_fuzz_findings.py replays them). Once a bug is fixed, its reproducer moves to `SEEDS`
as a regression seed (`regression-*`).
"""

from __future__ import annotations

import sys
from pathlib import Path

# header: mode, layout, max_packet, denied types, denied PRC sub-messages, plain rules
FOUR_CHANNELS, ALLOW_FW, AUTO_TAKE, LATE_REPLY = 0x08 | 3, 0x10, 0x20, 0x40
ONE_CHANNEL = 0x08
SMALL_EMEM = 0x10  # layout bit 4: the EMEM only as large as the channel areas
# decode_prc: no PRC sub-message denied, or the GH100 profile's (0x01, 0x04, 0x0A, 0x0D)
PRC_NONE, PRC_PROFILE = b"\0", b"\1"
# operations (guard_fuzz.c's LLVMFuzzerTestOneInput: op % 16)
RAW_READ, RAW_WRITE = 0x01, 0x81
OTHER_CLIENT = 0x3E  # op 14, high nibble 3: op_other_client
SEND, MESSAGE, TAKE, REPLY, RECEIVE, SWAP, LIVENESS, RESTART, FAULT, REPUBLISH = (
    5,
    7,
    8,
    10,
    11,
    12,
    13,
    14,
    30,
    46,
)
# registers (guard_fuzz.c's enum reg)
EMEMC, EMEMD, QHEAD, QTAIL, MHEAD, MTAIL = range(6)
# indexes into guard_fuzz.c's TYPES and ADDRS
FW, COT, PRC = 0, 1, 2
ADDRS = [0, 4, 8, 12, 16, 20, 0x3FC, 0x400, 0x1000, 0x100, 0x800, 0xFFF0, 0xFFF8, 0xFFFC]
SOM, EOM = 1, 2
ANY_PORT, ANY_QUEUE = 0x10, 0x20  # op_send's flags: a port (and a queue) given apart
# seeds into guard_fuzz.c's packet_words: seed % 8 picks PRC_SUBS (0x01, 0x04, 0x0A, 0x0C,
# 0x0D, ...), seed / 8 % 3 the scope (one-shot, knob, persistent)
PRC_NVLINK_ONE_SHOT, PRC_KNOB_READ, PRC_ECC_PERSISTENT = 2, 3 + 8, 0 + 16


def header(
    mode: int = AUTO_TAKE,
    layout: int = 0,
    max_packet: bytes = b"\0",
    deny: bytes = b"\0",
    prc: bytes = PRC_NONE,
) -> bytes:
    return bytes([mode, layout]) + max_packet + deny + prc + b"\0"  # no plain rules


def send(flags: int, type_index: int, *, queue: int = 0, dwords: int = 4, seed: int = 1) -> bytes:
    """The driver's send of one packet at its queue's channel base: `dwords` is 2..9."""
    return sent(flags, type_index, queue=queue, at=None, dwords=dwords, seed=seed)


def sent(
    flags: int,
    type_index: int,
    *,
    queue: int,
    at: int | None,
    dwords: int,
    seed: int,
    port: int | None = None,
    any_queue: bool = False,
) -> bytes:
    """The driver's send of one packet at EMEM `at` (None: the channel's base), through
    `port` (None: the queue's own); `any_queue`: the queue may be one the guard closes."""
    where = b"\0" if at is None else bytes([3]) + at.to_bytes(2, "little")
    flags |= (ANY_PORT if port is not None else 0) | (ANY_QUEUE if any_queue else 0)
    head = bytes([SEND, flags, 0 if any_queue else queue])
    head += bytes([port]) if port is not None else b""
    head += bytes([queue]) if any_queue else b""
    return head + where + bytes([dwords - 2, type_index, seed])


def message(type_index: int, body_dwords: int, max_packet: int, *, queue: int = 0) -> bytes:
    """A whole message, max_packet at a time (body_dwords = 2 + 4 * n, n < 256)."""
    n = (body_dwords - 2) // 4
    room = min(max_packet // 4 - 1, 256)
    packets = min(-(-body_dwords // room), 8)
    return bytes([MESSAGE, queue, type_index, n, 0]) + bytes(range(1, packets + 1))


def other_client(channel: int, *, dwords: int, channels: int = 4) -> bytes:
    """A step of another client's send on a channel past `channels` (op_other_client)."""
    return bytes([OTHER_CLIENT, (channel - channels) | (dwords - 2) << 4])


def take(queue: int = 0) -> bytes:
    return bytes([TAKE, queue])


def receive(queue: int = 0, *, tail_only: bool = False) -> bytes:
    """The driver reads the reply; then MSGQ_TAIL = MSGQ_HEAD = head (or only the tail)."""
    return bytes([RECEIVE, queue, 2 if tail_only else 0])


def liveness(queue: int = 0, where: int = 0) -> bytes:
    return bytes([LIVENESS, queue, where])


def swap_deny(
    *type_indexes: int, firmware_update: bool = True, keep_old: bool = False, toggle: bool = False
) -> bytes:
    """A swap whose policy denies these types (and 0x12, unless the run allows it); with
    `keep_old` the table it retires is kept to be published again (REPUBLISH); with `toggle`
    the new table has no guard (or has it again)."""
    how = 1 | (32 if keep_old else 0) | (64 if toggle else 0)
    return bytes([SWAP, how, len(type_indexes) | (0x40 if firmware_update else 0), *type_indexes])


def fault(nth: int, *, lands: bool) -> bytes:
    """The nth device access from here fails; `lands`: it took effect all the same."""
    return bytes([FAULT, (nth - 1) | (0x80 if lands else 0)])


# raw register accesses (guard_fuzz.c's op_raw and pick_value)
def write(reg: int, channel: int, value: bytes) -> bytes:
    return bytes([RAW_WRITE, reg + 6 * channel, 0]) + value


def read(reg: int, channel: int, shape: int = 0) -> bytes:
    """shape 0: the register; 4: its first byte; 6: eight bytes from it."""
    return bytes([RAW_READ, reg + 6 * channel, shape])


def ememc(at: int, *, aincw: bool = True, aincr: bool = False) -> bytes:
    return bytes([2 | (8 if aincw else 0) | (16 if aincr else 0), 4 * ADDRS.index(at)])


def mctp(flags: int, seq: int = 0) -> bytes:
    return bytes([2, flags | seq << 2])


def msg_header(type_index: int) -> bytes:
    return bytes([2 | 8, type_index])


def queue_at(at: int) -> bytes:
    return bytes([2, 4 * ADDRS.index(at), 0])


SEEDS: dict[str, bytes] = {
    "cot": header() + send(SOM | EOM, COT) + take() + receive() + liveness(),
    "firmware-update": header() + send(SOM | EOM, FW) + receive() + liveness(),
    "firmware-update-allowed": header(mode=AUTO_TAKE | ALLOW_FW) + send(SOM | EOM, FW) + receive(),
    # max_packet 20 + 4 * 14 = 76
    "multi-packet": header(max_packet=bytes([1, 14])) + message(COT, 62, 76) + receive(),
    "multi-packet-firmware-update": header(max_packet=bytes([1, 14]))
    + message(FW, 62, 76)
    + receive()
    + liveness(),
    "swap-mid-message": header()
    + send(SOM, COT)
    + swap_deny(COT)
    + send(1 << 2, COT, seed=2)  # SEQ 1
    + send(EOM | 2 << 2, COT, seed=3)  # SEQ 2, the end
    + receive()
    + swap_deny()
    + liveness(1, 9),
    "raw-registers": header(mode=FOUR_CHANNELS)  # the FSP takes when told
    + write(EMEMC, 0, ememc(0))
    + write(EMEMD, 0, mctp(SOM | EOM))
    + write(EMEMD, 0, msg_header(COT))
    + write(QTAIL, 0, queue_at(4))
    + write(QHEAD, 0, queue_at(0))
    + read(QHEAD, 0, 4)  # one byte of QUEUE_HEAD(0)
    + read(QTAIL, 0, 6)  # eight bytes: QUEUE_TAIL(0) and QUEUE_HEAD(1)
    + take()
    + liveness(2, 3),
    "restart": header(mode=0) + send(SOM | EOM, COT) + bytes([RESTART]) + take() + liveness(),
    # EMEMC(0) fails without effect: it is the 3rd device access (after HEAD and TAIL reads)
    "device-fault": header() + fault(3, lands=False) + send(SOM | EOM, COT) + take() + receive(),
    "late-reply": header(mode=LATE_REPLY)
    + send(SOM | EOM, COT)
    + take()
    + bytes([REPLY, 0])
    + receive()
    + liveness(),
    "adjacent-blocks": header(layout=2) + send(SOM | EOM, PRC, queue=3) + take(8) + liveness(3),
    "reversed-blocks": header(mode=0x08 | 1, layout=3)
    + send(SOM | EOM, COT, queue=1)
    + liveness(1),
    # PRC: decided on the sub-message (byte 8); the knob read passes
    "prc-denied-sub-messages": header(prc=PRC_PROFILE)
    + send(SOM | EOM, PRC, seed=PRC_NVLINK_ONE_SHOT)
    + receive()
    + send(SOM | EOM, PRC, seed=PRC_ECC_PERSISTENT)
    + receive()
    + send(SOM | EOM, PRC, seed=PRC_KNOB_READ)
    + receive()
    + liveness(),
    "prc-two-dwords": header(prc=PRC_PROFILE) + send(SOM | EOM, PRC, dwords=2) + receive(),
    "prc-multi-packet": header(max_packet=bytes([1, 14]), prc=PRC_PROFILE)
    + message(PRC, 62, 76)
    + receive()
    + liveness(),
    # issue 11's attacks
    # a FIRMWARE_UPDATE packet at the channel base, a COT packet at 0x100 rung with its head
    "attack-head-off-base": header()
    + write(EMEMC, 0, ememc(0))
    + write(EMEMD, 0, mctp(SOM | EOM))
    + write(EMEMD, 0, msg_header(FW))  # never rung: the FSP would read it from the base
    + sent(SOM | EOM, COT, queue=0, at=0x100, dwords=4, seed=2, port=0)
    + receive()
    + liveness(),
    # channels = 1: port 1 rewrites the message header of a checked COT packet
    "attack-port-past-channels": header(mode=ONE_CHANNEL)
    + write(EMEMC, 0, ememc(0))
    + write(EMEMD, 0, mctp(SOM | EOM))
    + write(EMEMD, 0, msg_header(COT))
    + write(EMEMC, 1, ememc(4))
    + write(EMEMD, 1, msg_header(FW))
    + write(QTAIL, 0, queue_at(4))
    + write(QHEAD, 0, queue_at(0))
    + sent(SOM | EOM, FW, queue=3, at=0xC00, dwords=2, seed=3, any_queue=True)  # closed
    + receive()
    + liveness(),
    # a COT packet checked under table A; under B (no guard) the guest rewrites it; A is
    # published again: its old state must not be trusted
    "attack-republish-retired-table": header()
    + write(EMEMC, 0, ememc(0))
    + write(EMEMD, 0, mctp(SOM | EOM))
    + write(EMEMD, 0, msg_header(COT))
    + swap_deny(firmware_update=True, keep_old=True, toggle=True)
    + write(EMEMC, 0, ememc(4))
    + write(EMEMD, 0, msg_header(FW))
    + bytes([REPUBLISH])
    + write(QTAIL, 0, queue_at(4))
    + write(QHEAD, 0, queue_at(0))
    + receive()
    + liveness(),
    # EMEM as large as the channel areas: a port at 0xFFF0 (past them) aliases into them
    "attack-alias-past-small-emem": header(layout=SMALL_EMEM)
    + write(EMEMC, 0, ememc(0))
    + write(EMEMD, 0, mctp(SOM | EOM))
    + write(EMEMD, 0, msg_header(COT))
    + write(EMEMC, 2, ememc(0xFFF0))
    + write(EMEMD, 2, msg_header(FW))
    + write(QTAIL, 0, queue_at(4))
    + write(QHEAD, 0, queue_at(0))
    + liveness(),
    # gpu-admin-tools on channel 1: a refusal answered, consumed by MSGQ_TAIL alone
    "gat-tail-only-consumption": header()
    + send(SOM | EOM, FW, queue=1)
    + receive(1, tail_only=True)
    + send(SOM | EOM, COT, queue=1, seed=2)
    + receive(1, tail_only=True)
    + liveness(1),
    # regression seeds: bugs the harness found (fuzz/README.md), fixed in 1d841ff
    # queue 1's packet [0xc, 0x1c) waits; queue 2's [0, 8) is taken and answered at [0, 0x14)
    "regression-reply-overlaps-queued-packet": header(mode=0)
    + sent(SOM | EOM, COT, queue=1, at=12, dwords=4, seed=1)
    + sent(SOM | EOM, COT, queue=2, at=0, dwords=2, seed=2)
    + take(2)
    + take(1),
    # a FIRMWARE_UPDATE message started while allowed is continued after a swap denies it
    "regression-stale-shadow-revoked-firmware-update": header(mode=ALLOW_FW)
    + sent(SOM, FW, queue=1, at=0x400, dwords=4, seed=1)
    + take(1)
    + sent(SOM | EOM, COT, queue=0, at=0, dwords=2, seed=2)
    + write(EMEMC, 2, ememc(8))  # while queue 0's packet [0, 8) is in flight
    + write(EMEMD, 2, mctp(SOM))
    + write(EMEMD, 2, msg_header(COT))
    + take(0)  # the FSP replies at [0, 0x14)
    + receive(0, tail_only=True)
    + swap_deny()  # 0x12 denied from here
    + write(QTAIL, 1, queue_at(12))
    + write(QHEAD, 1, queue_at(8))
    + take(1),
    # the EMEMD write of the 0x12 header fails but lands; the shadow keeps the COT header
    "regression-failed-ememd-write-landed": header()
    + write(EMEMC, 0, ememc(0))
    + write(EMEMD, 0, mctp(SOM | EOM))
    + write(EMEMD, 0, msg_header(COT))
    + write(EMEMC, 0, ememc(4))
    + fault(1, lands=True)
    + write(EMEMD, 0, msg_header(FW))
    + write(QTAIL, 0, queue_at(4))
    + write(QHEAD, 0, queue_at(0)),
    # an EMEMD read with AINCR fails but steps the device's address; the guard's stays behind
    "regression-failed-ememd-read-landed": header()
    + write(EMEMC, 0, ememc(0))
    + write(EMEMD, 0, mctp(SOM | EOM))
    + write(EMEMD, 0, msg_header(FW))
    + write(EMEMC, 0, ememc(4, aincr=True))
    + fault(1, lands=True)
    + read(EMEMD, 0)
    + write(EMEMD, 0, msg_header(COT))
    + write(QTAIL, 0, queue_at(4))
    + write(QHEAD, 0, queue_at(0)),
    # an FSP that replies after HEAD = TAIL: its reply must not land on a second packet
    "regression-late-reply-over-next-packet": header(mode=LATE_REPLY | AUTO_TAKE)
    + send(SOM | EOM, COT)
    + send(SOM | EOM, COT, seed=2),
    # fixed in baafe5d
    # the guest empties MSGQ(0) without reading it; the guard never sees the reply published
    "regression-blind-reply-consumption-wedges-channel": header()
    + send(SOM | EOM, COT)  # taken and answered at once: MSGQ(0) = 0 / 0x10
    + write(MHEAD, 0, bytes([2 | 2 << 3, 0]))  # MSGQ_HEAD(0) = MSGQ_HEAD + 16 = the tail
    + liveness(0),
    # a packet queued before a restart ends a message: the fresh state does not expect a reply
    "regression-restart-forgets-queued-packets-reply": header(mode=LATE_REPLY)
    + send(SOM | EOM, COT)  # queued; the FSP has not taken it
    + bytes([RESTART])  # a fresh guard state: it sees queue 0 busy, not that a reply will come
    + take(0)  # taken; the FSP will answer at EMEM 0, later
    + send(SOM | EOM, COT, seed=2)  # passes
    + take(0),  # the FSP answers first, over the packet, then reads it
    # fixed in 444d136
    # a restart while a message's first packet (no EOM) waits: no reply will ever come
    "regression-restart-mid-message-wedges-channel": header(mode=0)
    + send(SOM, COT)  # the first packet of a longer message, queued
    + bytes([RESTART])  # a fresh state counts a reply as due for the queued packet
    + take(0)  # taken; it does not end a message, so the FSP will not answer
    + liveness(0),  # every queue and MSGQ idle: a COT packet at EMEM 0 is refused
    # the guest fakes a published reply by writing MSGQ_TAIL itself, before the FSP replies
    "regression-forged-reply-publication": header(mode=LATE_REPLY | AUTO_TAKE)
    + send(SOM | EOM, COT)  # taken at once; the FSP will answer at EMEM 0, later
    + write(MTAIL, 0, bytes([2 | 2 << 3, 0]))  # MSGQ_TAIL(0) = 0x10: MSGQ looks non-empty
    + write(MTAIL, 0, bytes([1]))  # MSGQ_TAIL(0) = 0: the guard takes it for a consumed reply
    + send(SOM | EOM, COT, seed=2),  # passes; the FSP answers over it, then reads it
    # not a guard bug, a harness false positive (fuzz/README.md): a packet queued under the
    # guard is rewritten while no guard is in force into a continuation of no message with
    # EOM; a fresh state counts its reply as due, the FSP never answers: failing closed
    "regression-unguarded-rewrite-before-restart": header(mode=0)
    + send(SOM | EOM, COT)  # queued; the FSP has not taken it
    + swap_deny(toggle=True)  # no guard from here
    + write(EMEMC, 0, ememc(0))
    + write(EMEMD, 0, mctp(EOM))  # its MCTP header now: no SOM, EOM
    + bytes([RESTART])  # a fresh guard state: queue 0 busy, its header says EOM
    + liveness(0),  # the FSP ignores the packet and never answers: the channel stays closed
    # not a guard bug either: a doorbell the FSP has not acted on, its queue made to look idle
    # while no guard is in force; a fresh state cannot know of it (fuzz/README.md)
    "regression-unguarded-idle-queue-before-restart": header(mode=0)
    + send(SOM | EOM, COT)  # rung; the FSP has not taken it
    + swap_deny(toggle=True)  # no guard from here
    + write(QTAIL, 0, queue_at(0))  # QUEUE_TAIL(0) = 0 = QUEUE_HEAD(0): the queue looks idle
    + bytes([RESTART])  # a fresh guard state: queue 0 idle
    + send(SOM | EOM, COT, seed=2),  # passes: the FSP acted on the old doorbell before
    # a doorbell rung under the guard waits; with no guard its registers are moved off the
    # channel's base; a fresh state read the MCTP header at the moved HEAD (no EOM) and did
    # not count the reply the FSP then owed for the packet at the base (fuzz/README.md)
    "regression-queued-off-base-before-restart": header(mode=LATE_REPLY)
    + send(SOM | EOM, COT)  # queued at EMEM 0; the FSP has not taken it
    + swap_deny(toggle=True)  # no guard from here
    + write(QTAIL, 0, bytes([2, 4 * ADDRS.index(0x100), 3, 3]))  # QUEUE_TAIL(0) = 0x10c
    + write(QHEAD, 0, queue_at(0x100))  # QUEUE_HEAD(0) = 0x100 (the FSP ignores it)
    + bytes([RESTART])  # a fresh guard state: queue 0 busy at 0x100..0x10c
    + take(0)  # the FSP takes [0, 0x10) from the base; it will answer there, later
    + send(SOM | EOM, COT, seed=2)  # must be refused: that reply would land on it
    + take(0),
    # not a guard bug: with no guard the guest makes MSGQ(0) non-empty while a packet waits; a
    # fresh state takes it for an earlier reply, the FSP answers the packet over it, and the
    # guard waits for a reply that already came: failing closed, as documented (fuzz/README.md)
    "regression-unguarded-msgq-before-restart": header(mode=0)
    + send(SOM | EOM, COT)  # queued; the FSP has not taken it
    + swap_deny(toggle=True)  # no guard from here
    + write(MHEAD, 0, bytes([0]) + (0x0A000000).to_bytes(4, "little"))  # MSGQ_HEAD(0)
    + bytes([RESTART])  # a fresh state: queue 0 busy, a reply (it thinks) already waiting
    + liveness(0),  # the FSP answers; its reply's consumption is taken for the earlier one's
    # another client on a channel the guest does not have (GH100's PMU/SOE on channel 4): the
    # guest moved its port between the client's EMEMC write and its EMEMD writes
    "regression-other-clients-port-moved": header(mode=FOUR_CHANNELS)
    + other_client(4, dwords=4)  # EMEMC(4) = 4096 | AINCW, the MCTP header
    + bytes([RAW_WRITE, 0x80 | 6 * 28, 0])
    + ememc(0x100)  # EMEMC(4) = 0x100 | AINCW
    + other_client(4, dwords=4)  # the rest through port 4, then its doorbell
    + take(4)
    + liveness(0),
}

#: The smallest inputs showing the guard bugs still open (fuzz/README.md has the list): none.
FINDINGS: dict[str, bytes] = {}


def main() -> int:
    args = sys.argv[1:]
    findings = bool(args) and args[0] == "--findings"
    if findings:
        args = args[1:]
    default = Path(__file__).parent / ("findings" if findings else "corpus") / "guard"
    out = Path(args[0]) if args else default
    out.mkdir(parents=True, exist_ok=True)
    inputs = FINDINGS if findings else SEEDS
    for name, data in inputs.items():
        (out / name).write_bytes(data)
    print(f"{len(inputs)} {'findings' if findings else 'seeds'} in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
