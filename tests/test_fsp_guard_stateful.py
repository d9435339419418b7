"""The FSP mailbox guard in C and its Python model side by side, step by step.

A hypothesis state machine builds a BarFilter whose policy is one FspGuard over a simulated FSP
(`SimFsp`, doorbells waiting for `take()`), and an `FspGuardModel` over a second, identical
SimFsp. Its steps are what a guest and an FSP do to the mailbox, well-formed or not: raw
register accesses (odd widths and offsets included), driver-like packet sends through any port
and queue, multi-packet messages, reading and consuming replies, the FSP taking packets and
answering (at once or late), and policy swaps that keep the registers and change the denied
types or the packet size. After every step:

- every access was decided alike: outcome, value, and the NVDM type the reason names;
- the two SimFsps are in the same state: EMEM, registers, packets and messages taken;
- security, checked on the C side's SimFsp: no packet the FSP took starts or continues a
  message of a type denied when its doorbell passed; every packet the FSP took is the one the
  guard checked (the shadow at its doorbell); no access the guard let through was not one
  aligned 32-bit register access (`odd_accesses`).

The FSP's own writes (its answers, `fsp_wrote` in the model) must never land on a packet the
guard has checked before the FSP takes it: the test fails on such a `stale` doorbell.

Deny sets are drawn (FIRMWARE_UPDATE in most, not all), and sets of denied PRC sub-messages
(packet byte 8 of an NVDM 0x13 message), so the security check is made against the sets in
force at each doorbell. Heads are drawn at the channels' bases and off them (the FSP reads a
packet from its channel's base, as SimFsp does), and the guard's channel count varies (the
guard owns all eight ports whatever it is).
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import mmiofilter as mf
from mmiofilter.guards import GH100_EMEMC0, GH100_MSGQ_HEAD0, GH100_QUEUE_HEAD0, FspGuard
from mmiofilter.simulated.fsp import (
    AINCR,
    AINCW,
    EOM,
    MSG_HEADER_BASE,
    SOM,
    SimFsp,
    mctp_header,
    message_header,
    packets_of,
)
from mmiofilter.testing.fsp_model import REPLY_BYTES, Doorbell, FspGuardModel

from .test_fsp_guard_model import decide_both

BAR_SIZE = 16 << 20
CHANNELS = 8  # ports, queues and message queues: the guard owns all eight
U32 = 2**32
TYPES = (0x12, 0x13, 0x14, 0x17)
PRC = 0x13
PRC_SUBS = (0x01, 0x04, 0x0A, 0x0C, 0x0D)  # ECC, reset coupling, NVLink mask, knob read/write
BASES = {
    "EMEMC": GH100_EMEMC0,
    "EMEMD": GH100_EMEMC0 + 4,
    "QHEAD": GH100_QUEUE_HEAD0,
    "QTAIL": GH100_QUEUE_HEAD0 + 4,
    "MHEAD": GH100_MSGQ_HEAD0,
    "MTAIL": GH100_MSGQ_HEAD0 + 4,
}

# ---- strategies ----------------------------------------------------------------------------

dword_addrs = st.one_of(
    st.sampled_from((0, 4096)),  # the channels' own offsets (RM 0, channel 4): collisions
    st.integers(0, CHANNELS - 1).map(lambda q: 1024 * q),  # every channel's base
    st.integers(0, CHANNELS - 1).map(lambda q: 1024 * q + 8),  # just off a base
    st.sampled_from((8192, 8196, 0x8000)),  # past the channel areas (an alias on a small EMEM)
    st.integers(0, 24).map(lambda d: 4 * d),
    st.integers(0, 8).map(lambda d: 4096 + 4 * d),
    st.integers(0, 3).map(lambda d: 0xFFFC - 4 * d),
)
any_u32 = st.integers(0, U32 - 1)
ememc_values = st.one_of(
    st.builds(int.__or__, dword_addrs, st.sampled_from((0, AINCW, AINCR, AINCW | AINCR))),
    st.builds(int.__or__, dword_addrs, st.sampled_from((1, 2, 1 << 16, 1 << 26, 1 << 31))),
    any_u32,
)
mctp_headers = st.builds(mctp_header, st.booleans(), st.booleans(), st.integers(0, 3))
msg_headers = st.sampled_from((*TYPES, 0x15)).map(message_header)
ememd_values = st.one_of(
    mctp_headers,
    msg_headers,
    msg_headers.map(lambda h: h ^ 0x100),  # a bad vendor
    st.just(0),
    any_u32,
)
queue_values = st.one_of(
    dword_addrs,
    st.integers(0, 64),  # misaligned too
    st.sampled_from((0x10000, 0xFFFFFFF8, 0xFFFFFFFC)),  # 0xFFFFFFFC + 4 wraps to 0
    any_u32,
)
msgq_values = st.one_of(dword_addrs, st.sampled_from((16, 20, 4096 + 16)), any_u32)
VALUES = {
    "EMEMC": ememc_values,
    "EMEMD": ememd_values,
    "QHEAD": queue_values,
    "QTAIL": queue_values,
    "MHEAD": msgq_values,
    "MTAIL": msgq_values,
}
deny_sets = st.one_of(
    st.sets(st.sampled_from(TYPES[1:])).map(lambda s: frozenset({0x12, *s})),
    st.sets(st.sampled_from(TYPES)).map(frozenset),
)
prc_deny_sets = st.one_of(
    st.just(frozenset({0x01, 0x04, 0x0A, 0x0D})),  # the GH100 profile's defaults
    st.sets(st.sampled_from(PRC_SUBS)).map(frozenset),
)
max_packets = st.sampled_from((1024, 1024, 64, 4096))
channel_counts = st.sampled_from((8, 8, 1, 3))


@st.composite
def raw_accesses(draw: st.DrawFn) -> tuple[int, int, bool, int]:
    reg = draw(st.sampled_from(sorted(BASES)), label="register")
    offset = BASES[reg] + 8 * draw(st.integers(0, CHANNELS - 1), label="index")
    width = 4
    if draw(st.integers(0, 7)) == 0:  # an odd one: narrow, wide, misaligned, across an edge
        width = draw(st.sampled_from((1, 2, 4, 8)), label="width")
        offset += draw(st.integers(-4, 7), label="shift")
    is_write = draw(st.booleans(), label="write")
    value = draw(VALUES[reg], label="value") & ((1 << 8 * width) - 1) if is_write else 0
    return offset, width, is_write, value


@st.composite
def packets(draw: st.DrawFn) -> list[int]:
    """The dwords of one packet: a first packet (sometimes with a bad header) or a
    continuation, with a few payload dwords or nearly max_packet of them."""
    som = draw(st.integers(0, 3)) > 0
    words = [mctp_header(som, draw(st.booleans()), draw(st.integers(0, 3)))]
    if som:
        nvdm = draw(st.sampled_from(TYPES))
        header = message_header(nvdm)
        if draw(st.integers(0, 9)) == 0:
            header ^= draw(st.sampled_from((0x1, 0x80, 0x100)))  # bit 7 is not checked
        words.append(header)
        if nvdm == PRC and draw(st.integers(0, 5)):  # its sub-message (byte 8), scope (byte 9)
            sub = draw(st.sampled_from(PRC_SUBS) | st.integers(0, 255))
            scope = draw(st.sampled_from((1, 2, 3)) | st.integers(0, 255))
            words.append(sub | scope << 8 | draw(st.integers(0, 0xFFFF)) << 16)
    n = (
        draw(st.integers(0, 6))
        if draw(st.integers(0, 9))
        else draw(st.sampled_from((253, 254, 255)))
    )
    return words + draw(st.lists(any_u32, min_size=n, max_size=n))


# ---- the machine ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    """A doorbell the device saw: the packet the guard checked (None: queued before the guard
    existed) and the types denied at that moment."""

    doorbell: Doorbell | None
    deny: frozenset[int]
    deny_prc: frozenset[int] = frozenset()


def le32(b: bytes, at: int = 0) -> int:
    return int.from_bytes(b[at : at + 4], "little")


class FspGuardLife(RuleBasedStateMachine):
    csim: SimFsp
    msim: SimFsp
    f: mf.BarFilter
    m: FspGuardModel
    deny: frozenset[int]
    deny_prc: frozenset[int]
    max_packet: int
    channels: int

    def __init__(self) -> None:
        super().__init__()
        self.sent: dict[int, list[Sent]] = {c: [] for c in range(CHANNELS)}
        self.fsp_type: dict[int, int] = {}  # the message the FSP is assembling, per channel
        self.fsp_sub: dict[int, int] = {}  # its PRC sub-message
        self.unanswered: list[tuple[int, int, int]] = []  # (channel, type, head) taken, no reply
        self.written: tuple[int, int] | None = None  # the last packet `write_only` wrote

    @initialize(
        deny=deny_sets,
        deny_prc=prc_deny_sets,
        max_packet=max_packets,
        channels=channel_counts,
        queued=st.none()
        | st.tuples(st.integers(0, CHANNELS - 1), queue_values, queue_values, mctp_headers),
    )
    def start(
        self,
        deny: frozenset[int],
        deny_prc: frozenset[int],
        max_packet: int,
        channels: int,
        queued: tuple[int, int, int, int] | None,
    ) -> None:
        # The FSP's channels are as wide as the guard's max_packet says (the admin's fact).
        self.csim = SimFsp(auto_take=False, respond=False, channel_bytes=max_packet)
        self.msim = SimFsp(auto_take=False, respond=False, channel_bytes=max_packet)
        channels = min(channels, 65536 // max_packet)
        if queued is not None and queued[1] != queued[2]:  # a packet queued before the guard
            c, head, tail, mctp = queued
            base = c * max_packet
            for sim in (self.csim, self.msim):
                sim.qhead[c], sim.qtail[c] = head, tail
                sim.pending.append(c)
                if base <= 0xFFFC:
                    sim.emem[base : base + 4] = mctp.to_bytes(4, "little")
            self.sent[c].append(Sent(None, deny))
        self.deny, self.deny_prc = deny, deny_prc
        self.max_packet, self.channels = max_packet, channels
        guard = FspGuard.at(
            "fsp", deny_types=deny, deny_prc=deny_prc, max_packet=max_packet, channels=channels
        )
        self.f = mf.BarFilter(BAR_SIZE, mf.Policy([guard]), self.csim.backend(), page_size=4096)
        self.m = FspGuardModel(guard, 0xFF)
        self.m.arm(self.msim)  # BarFilter armed the C guard as it was made

    # ---- one access, both sides ------------------------------------------------------------

    def do(self, offset: int, width: int, is_write: bool, value: int = 0) -> mf.Result:
        doorbells = len(self.m.doorbells)
        got, events, _ = decide_both(self.f, self.m, self.msim, offset, width, is_write, value)
        where = f"{'W' if is_write else 'R'} {offset:#x}/{width} {value:#x}"
        assert len(events) == int(got.outcome is not mf.Outcome.PASS), f"{where}: {events}"
        if len(self.m.doorbells) > doorbells:  # the model passed a doorbell, so did C
            db = self.m.doorbells[-1]
            self.sent[db.queue].append(Sent(db, self.deny, self.deny_prc))
        return got

    def write_packet(self, port: int, at: int, words: list[int]) -> None:
        """The first half of the driver's send (kern_fsp_gh100.c): EMEMC, the dwords."""
        self.do(BASES["EMEMC"] + 8 * port, 4, True, at | AINCW)
        for w in words:
            self.do(BASES["EMEMD"] + 8 * port, 4, True, w)

    def ring(self, queue: int, at: int, size: int, tail_shift: int = 0) -> None:
        """The second half: QUEUE_TAIL = the last dword, QUEUE_HEAD = the first."""
        self.do(BASES["QTAIL"] + 8 * queue, 4, True, (at + size - 4 + tail_shift) % U32)
        self.do(BASES["QHEAD"] + 8 * queue, 4, True, at)

    def send(self, port: int, queue: int, at: int, words: list[int], tail_shift: int = 0) -> None:
        self.write_packet(port, at, words)
        self.ring(queue, at, 4 * len(words), tail_shift)

    # ---- the guest -------------------------------------------------------------------------

    @rule(access=raw_accesses())
    def raw(self, access: tuple[int, int, bool, int]) -> None:
        self.do(*access)

    @rule(accs=st.lists(raw_accesses(), min_size=2, max_size=12))
    def raw_burst(self, accs: list[tuple[int, int, bool, int]]) -> None:
        for a in accs:
            self.do(*a)

    @rule(
        port=st.integers(0, CHANNELS - 1),
        queue=st.integers(0, CHANNELS - 1),
        same=st.booleans(),
        at=dword_addrs,
        words=packets(),
        tail_shift=st.sampled_from((0, 0, 0, 0, 0, -4, 4, 2)),
    )
    def send_packet(
        self, port: int, queue: int, same: bool, at: int, words: list[int], tail_shift: int
    ) -> None:
        self.send(queue if same else port, queue, at, words, tail_shift)

    @rule(port=st.integers(0, CHANNELS - 1), at=dword_addrs, words=packets())
    def write_only(self, port: int, at: int, words: list[int]) -> None:
        """A packet written, its doorbell rung by a later step (`ring_last`), if any."""
        self.write_packet(port, at, words)
        self.written = (at, 4 * len(words))

    @precondition(lambda self: bool(self.unanswered) and not self.csim.pending)
    @rule(
        port=st.integers(0, CHANNELS - 1),
        near=st.sampled_from((-4, 0, 4, 16)),
        words=packets(),
        other=st.integers(1, CHANNELS - 1),
        ring=st.booleans(),
    )
    def race_the_answer(
        self, port: int, near: int, words: list[int], other: int, ring: bool
    ) -> None:
        """The guest writes a packet where the FSP is about to answer a message (`near` bytes
        from it); the FSP answers over it; then (or later, `ring_last`) the doorbell of another
        queue than the answer's. The shadow is stale: the guard cannot see the FSP's write."""
        c, _, head = self.unanswered[-1]
        at = max(0, head + near)
        self.write_packet(port, at, words)
        self.written = (at, 4 * len(words))
        self.answer(len(self.unanswered) - 1)
        if ring:
            self.ring((c + other) % CHANNELS, *self.written)

    @precondition(lambda self: self.written is not None)
    @rule(queue=st.integers(0, CHANNELS - 1))
    def ring_last(self, queue: int) -> None:
        assert self.written is not None
        self.ring(queue, *self.written)

    @rule(
        queue=st.integers(0, CHANNELS - 1),
        off=st.sampled_from((0, 0, 0, 4096, 64)),
        nvdm=st.sampled_from(TYPES),
        sub=st.sampled_from(PRC_SUBS),
        size=st.integers(0, 60),
        packet=st.sampled_from((12, 16, 32, 1024)),
        respond=st.booleans(),
        first=st.sampled_from(("receive", "receive", "take", "nothing")),
    )
    def send_message(
        self,
        queue: int,
        off: int,
        nvdm: int,
        sub: int,
        size: int,
        packet: int,
        respond: bool,
        first: str,
    ) -> None:
        """A whole message, split into packets, at its channel's base (or `off` bytes past
        it), the FSP taking each one. The driver first reads a reply that waits (or the FSP
        takes what waits, or neither). A PRC message starts with its sub-message."""
        if first == "receive":
            self.receive(queue, queue)
        elif first == "take" and self.csim.pending:
            self.take(respond)
        at = (queue * self.max_packet + off) % 0x10000
        body = bytes(range(size))
        if nvdm == PRC:
            body = bytes([sub, 1 + size % 3]) + body
        for p in packets_of(nvdm, body, max_packet=packet):
            p += bytes(-len(p) % 4)
            self.send(queue, queue, at, [le32(p, i) for i in range(0, len(p), 4)])
            self.take(respond)

    def receive(self, port: int, queue: int, whole: bool = True) -> None:
        """The driver's receive: MSGQ, EMEMC = head | AINCR, the reply, MSGQ_TAIL = head, then
        MSGQ_HEAD = head (unless not `whole`)."""
        head = self.do(BASES["MHEAD"] + 8 * queue, 4, False).value
        tail = self.do(BASES["MTAIL"] + 8 * queue, 4, False).value
        size = (tail - head) % U32 + 4
        if head == tail or size > 64 or head > 0xFFFC or head % 4:
            return
        self.do(BASES["EMEMC"] + 8 * port, 4, True, head | AINCR)
        for _ in range(size // 4):
            self.do(BASES["EMEMD"] + 8 * port, 4, False)
        self.do(BASES["MTAIL"] + 8 * queue, 4, True, head)
        if whole:
            self.do(BASES["MHEAD"] + 8 * queue, 4, True, head)

    @rule(
        port=st.integers(0, CHANNELS - 1), queue=st.integers(0, CHANNELS - 1), whole=st.booleans()
    )
    def read_reply(self, port: int, queue: int, whole: bool) -> None:
        self.receive(port, queue, whole)

    @rule(deny=deny_sets, deny_prc=prc_deny_sets, channels=channel_counts)
    def swap(self, deny: frozenset[int], deny_prc: frozenset[int], channels: int) -> None:
        """A policy update on the same registers: the state is kept (the channel count is not
        a register; the channels' size is the FSP's, kept)."""
        channels = min(channels, 65536 // self.max_packet)
        guard = FspGuard.at(
            "fsp",
            deny_types=deny,
            deny_prc=deny_prc,
            max_packet=self.max_packet,
            channels=channels,
        )
        self.f.update(mf.Policy([guard]))
        self.m.swap(guard)
        self.deny, self.deny_prc, self.channels = deny, deny_prc, channels

    # ---- the FSP ---------------------------------------------------------------------------

    @precondition(lambda self: bool(self.csim.pending))
    @rule(respond=st.booleans())
    def take(self, respond: bool) -> None:
        """The FSP takes every packet whose doorbell rang, in order, and answers each message
        at once (into EMEM at the head of its last packet) or not yet."""
        order = list(self.csim.pending)
        before = len(self.csim.packets)
        heads = {c: self.csim.qhead[c] for c in order}
        for sim in (self.csim, self.msim):
            sim.respond = respond
            sim.take()
        taken = iter(self.csim.packets[before:])
        answers: list[range] = []  # EMEM the FSP has answered into during this take
        for c in order:
            sent = self.sent[c].pop(0)
            if sent.doorbell is None:  # queued before the guard: not its packet
                head, tail = heads[c], self.csim.qtail[c]
                end = self.csim.channel_base(c) + tail - head + 4
                if not (head % 4 or tail % 4 or tail < head or end > len(self.csim.emem)):
                    next(taken)
                continue
            channel, packet = next(taken)
            assert channel == c
            h = sent.doorbell.head
            overwritten = any(r.start < h + len(packet) and h < r.stop for r in answers)
            nvdm = self.check_taken(c, packet, sent, overwritten)
            if nvdm is None:
                continue
            if respond:
                answers.append(range(h, h + REPLY_BYTES))
                self.m.fsp_wrote(h, REPLY_BYTES)
            else:
                self.unanswered.append((c, nvdm, h))
        assert next(taken, None) is None

    def check_taken(self, c: int, packet: bytes, sent: Sent, overwritten: bool) -> int | None:
        """Check a packet the FSP took; follow the message the FSP assembles (as SimFsp does)
        and return its type when this packet completed it."""
        db = sent.doorbell
        assert db is not None
        # The FSP takes exactly what the guard checked: no answer of the FSP's (to this queue or
        # another) may land on a packet between its check and its take.
        assert not (db.stale or overwritten), f"the FSP's answer overwrote a checked packet: {db}"
        assert packet == db.packet, f"the FSP took {packet.hex()}, the guard checked {db}"
        mctp = le32(packet)
        if mctp & SOM:
            assert packet[7] not in sent.deny, f"a denied first packet reached the FSP: {db}"
            if packet[7] == PRC:  # decided on its sub-message: it must be in this packet
                assert len(packet) > 8, f"a PRC message without its sub-message passed: {db}"
                assert packet[8] not in sent.deny_prc, f"a denied PRC message reached: {db}"
            if le32(packet, 4) & 0x00FFFF7F != MSG_HEADER_BASE:
                return None  # SimFsp ignores it
            self.fsp_type[c] = packet[7]
            self.fsp_sub[c] = packet[8] if len(packet) > 8 else -1
        elif c in self.fsp_type:
            assert self.fsp_type[c] not in sent.deny, f"a denied message continued: {db}"
            if self.fsp_type[c] == PRC:
                assert self.fsp_sub[c] not in sent.deny_prc, f"a denied PRC continued: {db}"
        else:
            return None  # SimFsp ignores a continuation of no message
        if not mctp & EOM:
            return None
        return self.fsp_type.pop(c)

    @precondition(lambda self: bool(self.unanswered) and not self.csim.pending)
    @rule(data=st.data())
    def late_reply(self, data: st.DataObject) -> None:
        """The FSP answers a message it took earlier: EMEM at the packet's head, and MSGQ."""
        self.answer(data.draw(st.integers(0, len(self.unanswered) - 1)))

    def answer(self, index: int) -> None:
        c, nvdm, head = self.unanswered.pop(index)
        for sim in (self.csim, self.msim):
            sim._reply(c, head, nvdm)
        self.m.fsp_wrote(head, REPLY_BYTES)

    # ---- after every step ------------------------------------------------------------------

    @invariant()
    def same_devices(self) -> None:
        if not hasattr(self, "f"):
            return
        c, m = self.csim, self.msim
        assert c.odd_accesses == [] and m.odd_accesses == []
        assert c.packets == m.packets
        assert c.messages == m.messages
        assert c.pending == m.pending
        assert c.emem == m.emem
        assert c.ememc == m.ememc
        assert (c.qhead, c.qtail, c.mhead, c.mtail) == (m.qhead, m.qtail, m.mhead, m.mtail)
        assert c.other == m.other
        assert c._partial == m._partial


FspGuardLife.TestCase.settings = settings(
    max_examples=250,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestFspGuardLife = FspGuardLife.TestCase
