"""Pure-Python model of the FSP mailbox guard: the oracle the C guard is tested against.

Written from docs/fsp-guard.md, not from csrc/guard_fsp.c, so that a differential test
compares two readings of one contract. Where the doc is silent the model takes the reading
named in a comment (`doc silent:`). Where the C guard departs from the doc, the model follows
the doc unless it is asked to reproduce the departure by name (`QUIRKS`): a test can then keep
checking everything else while a known finding is open, and the finding stays visible in one
place (tests/test_fsp_guard_model.py).

`FspGuardModel.access` decides one access of a BAR whose policy is this one guard with
`partial = "deny"` (the default): bytes outside the guard's three register blocks pass to the
device, an access mixing them with guard bytes is refused whole, and an access inside the
blocks goes to the guard. It returns what the C core reports: the outcome, the value (a read's
answer; for a write what reached the device, 0 when nothing did) and the guard's reason.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol

from ..guards import NVDM_PRC, FspGuard
from ..results import Outcome

EMEM_BYTES = 65536
EMEM_LAST_DWORD = EMEM_BYTES - 4
EMEMC_ADDR = 0xFFFC  # BLK 15:8, OFFS 7:2: a dword address
AINCW, AINCR = 1 << 24, 1 << 25
EMEMC_KNOWN = EMEMC_ADDR | AINCW | AINCR
SOM, EOM = 1 << 31, 1 << 30
MSG_TYPE_VENDOR_PCI, MSG_VENDOR_NV = 0x7E, 0x10DE
NVDM_FSP_RESPONSE = 0x15
ERR_NOT_SUPPORTED = 0xA0
REPLY_BYTES = 20
PORTS = 8  # the guard owns all eight ports, queues and message queues


class Device(Protocol):
    """The device behind the guard: what the C guard reaches through its backend."""

    def read(self, offset: int, width: int) -> int: ...

    def write(self, offset: int, width: int, value: int) -> object: ...


class Flight(enum.Enum):
    UNKNOWN = "unknown"  # a fresh state: QUEUE_HEAD and QUEUE_TAIL not read yet
    IDLE = "idle"
    BUSY = "busy"  # a packet the FSP has not taken


class Owed(enum.Enum):
    """The reply the FSP owes a queue whose last message ended (EOM passed)."""

    NONE = "none"
    DUE = "due"  # the FSP may write it into the channel at any time
    PUBLISHED = "published"  # the guest read MSGQ_HEAD and MSGQ_TAIL and saw them differ


class Msg(enum.Enum):
    NONE = "none"
    OPEN = "open"  # its first packet passed
    REFUSING = "refusing"  # refused: every packet up to EOM is refused


@dataclass
class Port:
    addr: int = 0
    known: bool = False
    aincw: bool = False
    aincr: bool = False
    out_of_step: bool = False  # it read an emulated reply: the device's address lags

    def word(self) -> int:
        return self.addr | (AINCW if self.aincw else 0) | (AINCR if self.aincr else 0)


@dataclass
class Reply:
    at: int
    data: bytes
    head: int
    tail: int


@dataclass
class Queue:
    flight: Flight = Flight.UNKNOWN
    head: int = 0
    tail: int = 0
    whole: bool = False  # BUSY with a range that cannot be placed: all of EMEM
    held: int | None = None
    last_head: int = 0  # the last passed head: where the FSP writes its reply
    owed: Owed = Owed.NONE
    # the reply due answers a packet a first look could not place: it may land anywhere
    reply_unplaced: bool = False
    seen: dict[bool, int] = field(default_factory=dict)  # MSGQ {is_tail: value} since due
    # a first look found the packet queued and a reply already in MSGQ: an earlier message's;
    # it neither publishes nor consumes the reply due, and the first MSGQ write ends it
    mq_stale: bool = False
    msg: Msg = Msg.NONE
    msg_type: int = 0
    msg_sub: int = 0  # a PRC message's sub-message (packet byte 8)
    next_seq: int = 0
    reply: Reply | None = None


@dataclass(frozen=True)
class Doorbell:
    """A doorbell the guard passed: the packet as the shadow had it, which is what the FSP
    should take. `stale`: the FSP wrote some of them after the guest did (`fsp_wrote`), and
    the shadow, which cannot see that, still called them valid."""

    queue: int
    head: int
    packet: bytes
    stale: bool = False


def _le32(b: bytes | bytearray, at: int) -> int:
    return int.from_bytes(b[at : at + 4], "little")


def reply_bytes(nvdm_type: int) -> bytes:
    """The emulated NOT_SUPPORTED answer: MCTP SOM|EOM, type 0x15, taskId 0, the type, 0xA0."""
    words = (
        SOM | EOM,
        MSG_TYPE_VENDOR_PCI | MSG_VENDOR_NV << 8 | NVDM_FSP_RESPONSE << 24,
        0,
        nvdm_type,
        ERR_NOT_SUPPORTED,
    )
    return b"".join(w.to_bytes(4, "little") for w in words)


@dataclass
class _Check:
    """What the packet check decided on a doorbell. `reply`: refused, answer now (an emulated
    reply); passed, the message ended (the FSP owes a reply)."""

    passes: bool
    nvdm_type: int = 0
    reply: bool = False
    detail: str = ""


Decision = tuple[Outcome, int, str]


@dataclass
class FspGuardModel:
    """The guard's state and decisions. `access(..., device)` reaches `device` exactly where
    the guard would (its own read-backs included); `swap` is a policy update; `fsp_wrote` is
    test bookkeeping only (the guard cannot see the FSP write). `doorbells` lists every
    doorbell passed, with the packet the shadow held."""

    guard: FspGuard
    fill: int = 0xFF
    ports: list[Port] = field(init=False)
    queues: list[Queue] = field(init=False)
    shadow: bytearray = field(init=False)
    valid: set[int] = field(init=False)  # dword addresses the guest wrote since invalidation
    stale: set[int] = field(init=False)  # valid dwords the FSP has overwritten since
    doorbells: list[Doorbell] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self._fresh()

    def _fresh(self) -> None:
        n = PORTS
        self.ports = [Port() for _ in range(n)]
        self.queues = [Queue() for _ in range(n)]
        self.shadow = bytearray(EMEM_BYTES)
        self.valid = set()
        self.stale = set()

    def arm(self, device: Device) -> None:
        """Arm a fresh state, before the guest can reach it (at attach, as mf_filter_new does):
        read every queue. A packet queued before the guard is in flight, and its reply due,
        unless its MCTP header (read through the queue's port, whose EMEMC is put back) says
        the message goes on (no EOM)."""
        for q, ch in enumerate(self.queues[: self.guard.channels]):
            if self._idle(q, device) or ch.whole:
                continue
            ememc = self.guard.emem + 8 * q
            saved = device.read(ememc, 4)
            device.write(ememc, 4, ch.head)
            mctp = device.read(ememc + 4, 4)
            device.write(ememc, 4, saved)
            self.ports[q] = self._learn(saved)
            if not mctp & EOM:
                ch.owed = Owed.NONE

    def swap(self, new_guard: FspGuard, device: Device | None = None) -> None:
        """A policy update: the same registers keep the state (judged under the new
        parameters from now on); other registers start a fresh state, armed on `device`. The
        channel count is not a register: the guard owns all eight ports whatever it is."""
        g = self.guard
        same = (g.emem, g.queue, g.msgq) == (new_guard.emem, new_guard.queue, new_guard.msgq)
        self.guard = new_guard
        if not same:
            self._fresh()
            if device is not None:
                self.arm(device)

    def fsp_wrote(self, at: int, size: int) -> None:
        """The FSP wrote EMEM [at, at + size) (a reply). The guard cannot see this: it only
        marks the shadow dwords that are valid but no longer what the device holds."""
        self.stale |= {a for a in range(at - at % 4, at + size, 4) if a in self.valid}

    # ---- the access path -------------------------------------------------------------

    def _owns(self, offset: int) -> bool:
        span = 8 * PORTS
        return any(b <= offset < b + span for b in self.guard.registers_bases())

    def _decode(self, offset: int) -> tuple[str, int]:
        """The register an aligned offset inside the blocks is, and its index."""
        g = self.guard
        for base, names in (
            (g.emem, ("EMEMC", "EMEMD")),
            (g.queue, ("QHEAD", "QTAIL")),
            (g.msgq, ("MHEAD", "MTAIL")),
        ):
            if base <= offset < base + 8 * PORTS:
                return names[(offset - base) % 8 // 4], (offset - base) // 8
        raise ValueError(f"{offset:#x} is not a register of the guard")

    def _refused(self, width: int, is_write: bool, detail: str) -> Decision:
        fill = int.from_bytes(bytes([self.fill]) * width, "little")
        return Outcome.BLOCKED, 0 if is_write else fill, detail

    def access(
        self, offset: int, width: int, is_write: bool, value: int, device: Device
    ) -> Decision:
        owned = [self._owns(offset + k) for k in range(width)]
        if not any(owned):  # not the guard's: the policy has no other rule, so it passes
            if is_write:
                device.write(offset, width, value)
                return Outcome.PASS, value, ""
            return Outcome.PASS, device.read(offset, width), ""
        if not all(owned):  # partial = "deny": a mixed access is refused whole
            return self._refused(width, is_write, "")
        if width != 4 or offset % 4:
            return self._refused(width, is_write, f"{width}-byte access at +{offset % 8:#x}")
        reg, i = self._decode(offset)
        if i >= self.guard.channels:  # someone else's (GH100: the PMU/SOE's channel 4)
            return self._refused(4, is_write, f"{reg}({i}): not one of the guest's channels")
        if reg == "EMEMC":
            out = self._ememc(i, offset, is_write, value, device)
        elif reg == "EMEMD":
            out = self._ememd(i, offset, is_write, value, device)
        elif reg == "QTAIL":
            out = self._qtail(i, offset, is_write, value, device)
        elif reg == "QHEAD":
            out = self._doorbell(i, value, device) if is_write else self._qhead(i, offset, device)
        else:
            out = self._msgq(i, offset, reg == "MTAIL", is_write, value, device)
        if out[0] is Outcome.BLOCKED:
            return self._refused(4, is_write, out[2])
        return out

    # ---- queues in flight ------------------------------------------------------------

    def _idle(self, q: int, dev: Device) -> bool:
        """Is queue q free of a packet the FSP has not taken? Read back from the device,
        lazily: only when a decision depends on it."""
        ch = self.queues[q]
        if ch.flight is Flight.IDLE:
            return True
        qreg, msgq = self.guard.queue + 8 * q, self.guard.msgq + 8 * q
        # a first look reads MSGQ before the queue: a reply there while the packet is still
        # queued afterwards is an earlier message's, never this packet's own
        mq_busy = ch.flight is not Flight.BUSY and dev.read(msgq, 4) != dev.read(msgq + 4, 4)
        head = dev.read(qreg, 4)
        if ch.flight is Flight.BUSY:
            if head != ch.tail:
                return False
        else:
            tail = dev.read(qreg + 4, 4)
            if head != tail:  # queued before this state existed
                ch.flight, ch.head, ch.tail = Flight.BUSY, head, tail
                # placed only where a guard rings a packet: at its channel's base, inside
                # the channel; elsewhere the registers may have moved since its doorbell
                base, room = q * self.guard.max_packet, self.guard.max_packet
                placed = head == base and tail % 4 == 0 and head + 4 <= tail <= head + room - 4
                ch.whole = not placed
                # it may end a message: its reply is due, into its channel (arm may know
                # more), or anywhere if the packet could not be placed
                ch.owed, ch.seen, ch.last_head = Owed.DUE, {}, base
                ch.reply_unplaced = not placed
                ch.mq_stale = mq_busy
                return False
        ch.flight = Flight.IDLE
        return True

    def _in_flight_at(self, addr: int, dev: Device) -> bool:
        for q, ch in enumerate(self.queues[: self.guard.channels]):
            if not self._idle(q, dev) and (ch.whole or ch.head <= addr <= ch.tail):
                return True
        return False

    # ---- EMEM ports ------------------------------------------------------------------

    @staticmethod
    def _step(pt: Port) -> None:
        # A step past 0xFFFC makes the address unknown (the carry out of bit 15).
        if pt.addr >= EMEM_LAST_DWORD:
            pt.known = False
        else:
            pt.addr += 4

    @staticmethod
    def _learn(v: int) -> Port:
        return Port(v & EMEMC_ADDR, True, bool(v & AINCW), bool(v & AINCR), False)

    def _ememc(self, i: int, off: int, is_write: bool, value: int, dev: Device) -> Decision:
        pt = self.ports[i]
        if not is_write:
            # doc silent: an out-of-step port whose address became unknown (it stepped past
            # 0xFFFC inside a reply) has no guard address to answer from; the model passes
            # the read and learns the device's word, which ends the divergence.
            if pt.out_of_step and pt.known:
                return Outcome.EMULATED, pt.word(), "refusal reply"
            v = dev.read(off, 4)
            self.ports[i] = self._learn(v)
            return Outcome.PASS, v, ""
        if value & ~EMEMC_KNOWN:
            return Outcome.BLOCKED, 0, f"EMEMC({i}): unknown bits {value & ~EMEMC_KNOWN:#x}"
        if not self._idle(i, dev):
            return Outcome.BLOCKED, 0, f"EMEMC({i}): queue in flight"
        dev.write(off, 4, value)
        self.ports[i] = self._learn(value)
        return Outcome.PASS, value, ""

    def _reply_at(self, addr: int) -> Reply | None:
        # doc silent on overlapping replies: the lowest queue's answers.
        for ch in self.queues:
            r = ch.reply
            if r is not None and r.at <= addr < r.at + REPLY_BYTES:
                return r
        return None

    def _ememd(self, i: int, off: int, is_write: bool, value: int, dev: Device) -> Decision:
        pt = self.ports[i]
        if not is_write:
            r = self._reply_at(pt.addr) if pt.known else None
            if r is not None:
                v = _le32(r.data, pt.addr - r.at)
                pt.out_of_step = True
                if pt.aincr:
                    self._step(pt)
                return Outcome.EMULATED, v, "refusal reply"
            if pt.out_of_step:
                return Outcome.BLOCKED, 0, f"EMEMD({i}) read: port out of step"
            if not pt.known or pt.addr >= self.guard.channels * self.guard.max_packet:
                return Outcome.BLOCKED, 0, f"EMEMD({i}) read: outside the channels"
            v = dev.read(off, 4)
            if pt.known and pt.aincr:
                self._step(pt)
            return Outcome.PASS, v, ""
        if not pt.known or pt.out_of_step:
            return Outcome.BLOCKED, 0, f"EMEMD({i}) write: address unknown"
        if pt.addr >= self.guard.channels * self.guard.max_packet:
            return Outcome.BLOCKED, 0, f"EMEMD({i}) write at {pt.addr:#x}: outside the channels"
        if self._in_flight_at(pt.addr, dev):
            return Outcome.BLOCKED, 0, f"EMEMD({i}) write into a queued packet"
        dev.write(off, 4, value)
        a = pt.addr
        self.shadow[a : a + 4] = value.to_bytes(4, "little")
        self.valid.add(a)
        self.stale.discard(a)
        if pt.aincw:
            self._step(pt)
        return Outcome.PASS, value, ""

    # ---- command queue ---------------------------------------------------------------

    def _qtail(self, q: int, off: int, is_write: bool, value: int, dev: Device) -> Decision:
        ch = self.queues[q]
        if not is_write:
            if ch.held is not None:
                return Outcome.EMULATED, ch.held, ""
            return Outcome.PASS, dev.read(off, 4), ""
        if not self._idle(q, dev):
            return Outcome.BLOCKED, 0, f"QUEUE_TAIL({q}): packet in flight"
        ch.held = value
        return Outcome.EMULATED, 0, "tail held until the doorbell"

    def _qhead(self, q: int, off: int, dev: Device) -> Decision:
        ch = self.queues[q]
        v = dev.read(off, 4)
        if ch.flight is Flight.BUSY and v == ch.tail:
            ch.flight = Flight.IDLE
        return Outcome.PASS, v, ""

    def _invalidate(self, start: int, size: int | None = None) -> None:
        """Forget the guest's EMEM [start, start + size): by default a channel, which the FSP
        may write."""
        end = start + (self.guard.max_packet if size is None else size)
        gone = range(start - start % 4, min(end, EMEM_BYTES), 4)
        self.valid.difference_update(gone)
        self.stale.difference_update(gone)

    def _doorbell(self, q: int, h: int, dev: Device) -> Decision:
        g, ch = self.guard, self.queues[q]
        if not self._idle(q, dev):
            return Outcome.BLOCKED, 0, f"doorbell {q}: previous packet not taken"
        if ch.held is None:
            return Outcome.BLOCKED, 0, f"doorbell {q}: no packet queued"
        t, ch.held = ch.held, None  # from here the held tail is used, whatever happens
        if h != q * g.max_packet:  # every public driver queues at its channel's base
            return Outcome.BLOCKED, 0, f"doorbell {q}: head {h:#x} off base"
        if not (t % 4 == 0 and t >= h + 4 and t - h + 4 <= g.max_packet):
            # doc silent: no emulated reply for a packet out of bounds (the doc replies to a
            # refused EOM or unreadable packet; this one was not looked at).
            return Outcome.BLOCKED, 0, f"doorbell: bad bounds {h:#x}..{t + 4:#x}"
        if ch.owed is not Owed.NONE:  # the driver reads a reply before it sends again
            return Outcome.BLOCKED, 0, f"doorbell {q}: reply not consumed yet"
        # Check 4: clear of every reply the FSP owes, and this queue's reply area clear of
        # other queues' waiting packets.
        for o, oc in enumerate(self.queues[: g.channels]):
            if (
                oc.owed is not Owed.NONE
                and (oc.reply_unplaced or h < oc.last_head + g.max_packet)
                and (oc.reply_unplaced or oc.last_head < t + 4)
            ):
                return Outcome.BLOCKED, 0, f"packet where queue {o}'s reply is due"
            if (
                o != q
                and not self._idle(o, dev)
                and (oc.whole or (h < oc.tail + 4 and oc.head < h + g.max_packet))
            ):
                return Outcome.BLOCKED, 0, f"reply area over queue {o}'s packet"
        mh, mt = dev.read(g.msgq + 8 * q, 4), dev.read(g.msgq + 8 * q + 4, 4)
        if mh != mt or ch.reply is not None:
            return Outcome.BLOCKED, 0, f"doorbell {q}: a reply is still waiting"
        check = self._check(ch, h, t)
        if not check.passes:
            if check.reply:
                ch.reply = Reply(h, reply_bytes(check.nvdm_type), h, h + REPLY_BYTES - 4)
            return Outcome.BLOCKED, 0, check.detail
        dev.write(g.queue + 8 * q + 4, 4, t)
        dev.write(g.queue + 8 * q, 4, h)
        ch.flight, ch.head, ch.tail, ch.whole = Flight.BUSY, h, t, False
        stale = any(a in self.stale for a in range(h, t + 4, 4))
        self.doorbells.append(Doorbell(q, h, bytes(self.shadow[h : t + 4]), stale))
        ch.last_head = h
        if check.reply:  # the message ended: the FSP will answer into this channel
            ch.owed, ch.seen, ch.mq_stale, ch.reply_unplaced = Owed.DUE, {}, False, False
        self._invalidate(h)  # from here the FSP may write its reply into this channel
        return Outcome.PASS, h, ""

    def _check(self, ch: Queue, h: int, t: int) -> _Check:
        """Checks 6 and 7 of the doorbell, on the shadow, and follow the message."""
        deny, deny_prc = self.guard.deny_types, self.guard.deny_prc
        for a in range(h, t + 4, 4):
            if a not in self.valid:
                # doc silent: an unreadable packet ends the message in progress.
                ch.msg = Msg.NONE
                return _Check(False, 0, True, f"doorbell: packet dword at {a:#x} not written")
        mctp = _le32(self.shadow, h)
        som, eom, seq = bool(mctp & SOM), bool(mctp & EOM), mctp >> 28 & 3
        if som:
            hdr = _le32(self.shadow, h + 4)
            nvdm = hdr >> 24
            if hdr & 0x7F != MSG_TYPE_VENDOR_PCI or hdr >> 8 & 0xFFFF != MSG_VENDOR_NV:
                # doc: a bad header gets NOT_SUPPORTED naming the type it read; doc silent on
                # when: the model answers at once, like an unreadable packet, and the message
                # ends (a following continuation is one of no message).
                ch.msg = Msg.NONE
                return _Check(False, nvdm, True, f"doorbell: bad message header {hdr:#x}")
            ch.msg_type, ch.msg_sub = nvdm, 0
            if nvdm == NVDM_PRC and nvdm not in deny:
                # PRC is decided on its sub-message, packet byte 8 (byte 9: the scope)
                if t - h < 8:
                    ch.msg = Msg.NONE if eom else Msg.REFUSING
                    return _Check(False, nvdm, eom, "prc without its sub-message refused")
                ch.msg_sub = self.shadow[h + 8]
                if ch.msg_sub in deny_prc:
                    ch.msg = Msg.NONE if eom else Msg.REFUSING
                    scope = self.shadow[h + 9]
                    return _Check(
                        False, nvdm, eom, f"prc {ch.msg_sub:#04x} (scope {scope:#x}) refused"
                    )
            if nvdm in deny:
                ch.msg = Msg.NONE if eom else Msg.REFUSING
                return _Check(False, nvdm, eom, f"nvdm {nvdm:#04x} refused")
            ch.msg = Msg.NONE if eom else Msg.OPEN
            ch.next_seq = (seq + 1) & 3
            return _Check(True, nvdm, eom)
        still_allowed = ch.msg_type not in deny and not (
            ch.msg_type == NVDM_PRC and ch.msg_sub in deny_prc
        )
        if ch.msg is Msg.OPEN and seq == ch.next_seq and still_allowed:
            ch.msg = Msg.NONE if eom else Msg.OPEN
            ch.next_seq = (ch.next_seq + 1) & 3
            return _Check(True, ch.msg_type, eom)
        # doc silent: a refused continuation (wrong SEQ, a type denied since) makes the rest
        # of its message refused too, as a refused first packet does.
        if ch.msg is Msg.NONE:
            ch.msg_type = 0  # a continuation of no message has no type
            detail = "doorbell: continuation of no message"
        else:
            detail = f"nvdm {ch.msg_type:#04x} refused (continuation)"
        ch.msg = Msg.NONE if eom else Msg.REFUSING
        return _Check(False, ch.msg_type, eom, detail)

    # ---- message queue ---------------------------------------------------------------

    def _msgq(
        self, q: int, off: int, is_tail: bool, is_write: bool, value: int, dev: Device
    ) -> Decision:
        ch = self.queues[q]
        r = ch.reply
        if r is None:
            if not is_write:
                v = dev.read(off, 4)
                if ch.owed is Owed.DUE and not ch.mq_stale:  # the guest looks for its reply
                    ch.seen[is_tail] = v
                    if len(ch.seen) == 2 and ch.seen[False] != ch.seen[True]:
                        ch.owed = Owed.PUBLISHED
                return Outcome.PASS, v, ""
            # The guest may only empty MSGQ: a non-empty MSGQ is always the FSP's doing.
            g = self.guard
            mh, mt = dev.read(g.msgq + 8 * q, 4), dev.read(g.msgq + 8 * q + 4, 4)
            if value != (mh if is_tail else mt):
                name = "TAIL" if is_tail else "HEAD"
                return Outcome.BLOCKED, 0, f"MSGQ_{name}({q}) would queue a reply"
            if ch.owed is Owed.DUE and mh != mt and not ch.mq_stale:  # the guard sees it
                ch.owed = Owed.PUBLISHED
            dev.write(off, 4, value)
            if ch.mq_stale:  # an earlier reply consumed: the queued packet's is still due
                ch.mq_stale = False
                return Outcome.PASS, value, ""
            if ch.owed is Owed.PUBLISHED:
                # Consumed: the FSP has written its channel since the guest's writes were
                # shadowed. A write before the reply was published frees nothing.
                ch.owed = Owed.NONE
                if ch.reply_unplaced:  # it may have landed anywhere
                    self._invalidate(0, EMEM_BYTES)
                else:
                    self._invalidate(ch.last_head)
                ch.reply_unplaced = False
            return Outcome.PASS, value, ""
        if not is_write:
            return Outcome.EMULATED, r.tail if is_tail else r.head, "refusal reply"
        if is_tail:
            r.tail = value
        else:
            r.head = value
        # A write that leaves it empty consumes it: the open driver writes TAIL = HEAD then
        # HEAD, gpu-admin-tools TAIL = HEAD alone.
        if r.head == r.tail:
            ch.reply = None  # it lived in the guard only: EMEM is untouched
        return Outcome.EMULATED, 0, "refusal reply"
