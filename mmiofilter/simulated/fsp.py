"""A simulated GH100 FSP mailbox and a driver that talks to it, for tests.

`SimFsp` is the device side, a `CallbackBackend` model of the NV_PFSP registers as the public
sources document them, not as the guard assumes them: eight EMEMC/EMEMD ports with
auto-increment, all eight on one EMEM (gpu-admin-tools: FspFalcon.num_emem_ports = 8,
write_emem(data, phys_base, port)), which wraps at its size (`emem_size`; gpu-admin-tools reads it
from the falcon's HWCFG, max_emem_size_from_hwcfg); eight command queues whose doorbell (the
QUEUE_HEAD write) makes the FSP take the packet from its channel's base, channel q at
q * 1024 (open-gpu-kernel-modules dev_fsp_addendum.h / fsp_emem_channels.h, gpu-admin-tools
FspEmemRpc), however long the queue registers say it is, and set HEAD = TAIL; reassembly of
multi-packet messages; a reply at the channel's base through MSGQ. Everything else in the BAR is
plain memory. It records every packet and message it took, so a test can say exactly what
reached the FSP, and every access that was not one aligned 32-bit register access (which the
guard must never let through).

`FspDriver` is the guest side, in the order NVIDIA's open driver uses
(open-gpu-kernel-modules, kern_fsp_gh100.c / kern_fsp.c): wait until both queues are empty,
EMEMC = offset | AINCW, the packet through EMEMD, QUEUE_TAIL = padded size - 4, QUEUE_HEAD =
offset (the doorbell); to receive, read MSGQ_HEAD/TAIL, EMEMC = offset | AINCR, read the
packet through EMEMD, then MSGQ_TAIL = MSGQ_HEAD = head (kfspReadPacket_GH100).

`GatDriver` is a second client, NVIDIA's gpu-admin-tools (gpu/fsp_emem_rpc.py, FspEmemRpc):
channel N (1 or 2) on port N at EMEM N * 1024; it sends the same way (QUEUE_TAIL then
QUEUE_HEAD), and consumes a reply by writing MSGQ_TAIL = MSGQ_HEAD alone (receive_data).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..backends import CallbackBackend
from ..guards import GH100_EMEMC0, GH100_MSGQ_HEAD0, GH100_QUEUE_HEAD0

EMEM_BYTES = 65536
PORTS = 8
CHANNEL_BYTES = 1024
AINCW, AINCR = 1 << 24, 1 << 25
SOM, EOM = 1 << 31, 1 << 30
MSG_HEADER_BASE = 0x7E | 0x10DE << 8
NVDM_FSP_RESPONSE = 0x15
ERR_OK, ERR_NOT_SUPPORTED = 0x00, 0xA0


def mctp_header(som: bool, eom: bool, seq: int, seid: int = 0) -> int:
    return (SOM if som else 0) | (EOM if eom else 0) | (seq & 3) << 28 | (seid & 0xFF) << 16


def message_header(nvdm_type: int) -> int:
    return MSG_HEADER_BASE | (nvdm_type & 0xFF) << 24


def packets_of(nvdm_type: int, payload: bytes, max_packet: int = 1024) -> list[bytes]:
    """Split one NVDM message into MCTP packets: the message header only in the first."""
    body = message_header(nvdm_type).to_bytes(4, "little") + payload
    room = max_packet - 4
    chunks = [body[i : i + room] for i in range(0, len(body), room)] or [b""]
    return [
        mctp_header(i == 0, i == len(chunks) - 1, i).to_bytes(4, "little") + c
        for i, c in enumerate(chunks)
    ]


@dataclass
class Message:
    channel: int
    nvdm_type: int
    body: bytes  # everything after the message header, all packets joined (padding included)


@dataclass
class SimFsp:
    """The FSP side of the mailbox. With `auto_take`, a doorbell is taken at once; otherwise
    doorbells wait in `pending` until `take()` (so a test can act between the two)."""

    size: int = 16 << 20
    emem_base: int = GH100_EMEMC0
    queue_base: int = GH100_QUEUE_HEAD0
    msgq_base: int = GH100_MSGQ_HEAD0
    #: Physical EMEM bytes: a port's address wraps here (a power of two, at most 64 KiB).
    emem_size: int = EMEM_BYTES
    channel_bytes: int = CHANNEL_BYTES
    auto_take: bool = True
    respond: bool = True
    emem: bytearray = field(default_factory=lambda: bytearray(EMEM_BYTES))
    packets: list[tuple[int, bytes]] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    odd_accesses: list[tuple[int, int, bool]] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.emem_size & (self.emem_size - 1) or not 256 <= self.emem_size <= EMEM_BYTES:
            raise ValueError(f"emem_size {self.emem_size} is not a power of two in 256..64 KiB")
        self.emem = self.emem[: self.emem_size]
        self.ememc = [0] * PORTS
        self.qhead = [0] * PORTS
        self.qtail = [0] * PORTS
        self.mhead = [0] * PORTS
        self.mtail = [0] * PORTS
        self.other: dict[int, int] = {}  # plain memory outside the mailbox, by byte
        self._partial: dict[int, tuple[int, bytearray]] = {}  # channel -> (type, body so far)

    def backend(self) -> CallbackBackend:
        return CallbackBackend(self.read, self.write)

    # ---- registers ---------------------------------------------------------------------

    def _reg(self, offset: int) -> tuple[str, int] | None:
        for base, names in (
            (self.emem_base, ("ememc", "ememd")),
            (self.queue_base, ("qhead", "qtail")),
            (self.msgq_base, ("mhead", "mtail")),
        ):
            if base <= offset < base + 8 * PORTS:
                return names[(offset - base) % 8 // 4], (offset - base) // 8
        return None

    def touches_mailbox(self, offset: int, width: int) -> bool:
        """Whether an access touches a mailbox register (any of the eight EMEMC/D, QUEUE and
        MSGQ pairs, whatever a guard uses)."""
        return any(self._reg(offset + k) for k in range(width))

    def _port_step(self, i: int, bit: int) -> int:
        """The EMEM byte port i reaches (its address, wrapped at the EMEM's size), stepping
        the address when `bit` (AINCW or AINCR) is set."""
        addr = self.ememc[i] & 0xFFFC
        if self.ememc[i] & bit:
            self.ememc[i] = (self.ememc[i] & ~0xFFFC) | ((addr + 4) & 0xFFFC)
        return addr % self.emem_size

    def read(self, offset: int, width: int) -> int:
        reg = self._reg(offset) if width == 4 and offset % 4 == 0 else None
        if reg is None:
            if self.touches_mailbox(offset, width):
                self.odd_accesses.append((offset, width, False))
            return sum(self.other.get(offset + k, 0) << (8 * k) for k in range(width))
        name, i = reg
        if name == "ememd":
            a = self._port_step(i, AINCR)
            return int.from_bytes(self.emem[a : a + 4], "little")
        return int(getattr(self, name)[i])

    def write(self, offset: int, width: int, value: int) -> None:
        reg = self._reg(offset) if width == 4 and offset % 4 == 0 else None
        if reg is None:
            if self.touches_mailbox(offset, width):
                self.odd_accesses.append((offset, width, True))
            for k in range(width):
                self.other[offset + k] = value >> (8 * k) & 0xFF
            return
        name, i = reg
        if name == "ememd":
            a = self._port_step(i, AINCW)
            self.emem[a : a + 4] = value.to_bytes(4, "little")
            return
        getattr(self, name)[i] = value
        if name == "qhead":
            self.pending.append(i)
            if self.auto_take:
                self.take()

    # ---- the FSP's own work ------------------------------------------------------------

    def channel_base(self, c: int) -> int:
        return c * self.channel_bytes

    def take(self) -> None:
        """Take every packet whose doorbell rang: read tail - head + 4 bytes from the channel's
        base (where every public driver puts it, whatever the head says), set HEAD = TAIL."""
        while self.pending:
            c = self.pending.pop(0)
            head, tail = self.qhead[c], self.qtail[c]
            base = self.channel_base(c)
            size = tail - head + 4
            if head % 4 or tail % 4 or tail < head or base + size > self.emem_size:
                self.qhead[c] = tail
                continue
            packet = bytes(self.emem[base : base + size])
            self.qhead[c] = tail
            self.packets.append((c, packet))
            self._assemble(c, base, packet)

    def _assemble(self, c: int, head: int, packet: bytes) -> None:
        mctp = int.from_bytes(packet[:4], "little")
        if mctp & SOM:
            if len(packet) < 8:
                return
            hdr = int.from_bytes(packet[4:8], "little")
            if hdr & 0x00FFFF7F != MSG_HEADER_BASE:
                return
            self._partial[c] = (hdr >> 24, bytearray(packet[8:]))
        elif c in self._partial:
            self._partial[c][1].extend(packet[4:])
        else:
            return
        if mctp & EOM:
            nvdm, body = self._partial.pop(c)
            self.messages.append(Message(c, nvdm, bytes(body)))
            if self.respond:
                self._reply(c, head, nvdm)

    def _reply(self, c: int, at: int, nvdm: int) -> None:
        words = (
            mctp_header(True, True, 0),
            message_header(NVDM_FSP_RESPONSE),
            0,
            nvdm,
            ERR_OK,
        )
        self.emem[at : at + 20] = b"".join(w.to_bytes(4, "little") for w in words)
        self.mhead[c], self.mtail[c] = at, at + 16  # `at` is the channel's base

    def types_received(self) -> list[int]:
        """NVDM types of the first packets the FSP took (whole messages or not)."""
        out = []
        for _, p in self.packets:
            if len(p) >= 8 and int.from_bytes(p[:4], "little") & SOM:
                out.append(p[7])
        return out


class Bar(Protocol):
    def read(self, offset: int, width: int) -> int: ...
    def write(self, offset: int, width: int, value: int) -> object: ...


@dataclass
class Response:
    nvdm_type: int
    task_id: int
    command_type: int
    error_code: int


class FspTimeout(Exception):
    """The driver polled its limit without the mailbox becoming ready."""


@dataclass
class FspDriver:
    """The guest driver's side. `port` and `channel` default to the RM's channel 0; `offset`
    is the channel's EMEM offset (its base, channel * 1 KiB, unless a test says otherwise).
    `poll` runs between polls (a test's FSP)."""

    bar: Bar
    channel: int = 0
    port: int | None = None
    offset: int = -1
    emem_base: int = GH100_EMEMC0
    queue_base: int = GH100_QUEUE_HEAD0
    msgq_base: int = GH100_MSGQ_HEAD0
    max_packet: int = 1024
    polls: int = 50
    poll: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        if self.offset < 0:
            self.offset = self.channel * CHANNEL_BYTES

    def _ememc(self) -> int:
        return self.emem_base + 8 * (self.channel if self.port is None else self.port)

    def _wait(self, ready: Callable[[], bool]) -> None:
        for _ in range(self.polls):
            if ready():
                return
            if self.poll:
                self.poll()
        raise FspTimeout("FSP mailbox not ready")

    def queue_empty(self) -> bool:
        q = self.queue_base + 8 * self.channel
        return self.bar.read(q, 4) == self.bar.read(q + 4, 4)

    def msgq_empty(self) -> bool:
        m = self.msgq_base + 8 * self.channel
        return self.bar.read(m, 4) == self.bar.read(m + 4, 4)

    def send_packet(self, packet: bytes) -> None:
        self._wait(lambda: self.queue_empty() and self.msgq_empty())
        self.bar.write(self._ememc(), 4, self.offset | AINCW)
        padded = packet + bytes(-len(packet) % 4)
        for i in range(0, len(padded), 4):
            self.bar.write(self._ememc() + 4, 4, int.from_bytes(padded[i : i + 4], "little"))
        q = self.queue_base + 8 * self.channel
        self.bar.write(q + 4, 4, self.offset + len(padded) - 4)
        self.bar.write(q, 4, self.offset)

    def send_message(self, nvdm_type: int, payload: bytes) -> None:
        for p in packets_of(nvdm_type, payload, self.max_packet):
            self.send_packet(p)

    def read_response(self) -> Response:
        self._wait(lambda: not self.msgq_empty())
        m = self.msgq_base + 8 * self.channel
        head, tail = self.bar.read(m, 4), self.bar.read(m + 4, 4)
        size = (tail - head) % (1 << 32) + 4
        if not 20 <= size <= self.max_packet:
            raise ValueError(f"response of {size} bytes")
        self.bar.write(self._ememc(), 4, self.offset | AINCR)
        words = [self.bar.read(self._ememc() + 4, 4) for _ in range(size // 4)]
        self.consume(head)
        return Response(words[1] >> 24, words[2], words[3], words[4])

    def consume(self, head: int) -> None:
        """Mark the reply read: MSGQ_TAIL = MSGQ_HEAD = head (kfspReadPacket_GH100)."""
        m = self.msgq_base + 8 * self.channel
        self.bar.write(m + 4, 4, head)
        self.bar.write(m, 4, head)

    def transact(self, nvdm_type: int, payload: bytes) -> Response:
        """Send one message and read the FSP's answer, as kfspSendAndReadMessage does."""
        self.send_message(nvdm_type, payload)
        return self.read_response()


@dataclass
class GatDriver(FspDriver):
    """NVIDIA's gpu-admin-tools as a mailbox client (gpu/fsp_emem_rpc.py, FspEmemRpc): channel
    N on port N at EMEM N * 1024 (channels 1 and 2 in its use), and a reply consumed by writing
    MSGQ_TAIL = MSGQ_HEAD alone (receive_data)."""

    channel: int = 1

    def consume(self, head: int) -> None:
        self.bar.write(self.msgq_base + 8 * self.channel + 4, 4, head)
