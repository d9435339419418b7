"""Programs for the guest firmware: MMIO operations the guest performs, and its transcript.

The encoding is the one firmware.asm reads at 0x10000 * (vCPU index + 1) (its operations are
guest_ops.inc's): a 16-byte header {'MMIO', count, 0, 0} and 16-byte operations
{op, address, value, arg}, little-endian.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

MAGIC = 0x4F494D4D
READ, WRITE, LOOP_READ, END, RMW, LOOP_WRITE = 1, 2, 3, 4, 5, 6
WRITE64, READ64, SSE_STORE, CPUID, PUSHAD, STORE128 = range(7, 13)
#: Read-modify-write instructions of the RMW operation (guest_ops.inc), by name.
RMW_KINDS = {"or": 1, "lock bts": 2, "lock or": 3, "xchg": 4, "rep movsd": 5, "or word": 6,
             "or byte": 7}  # fmt: skip
PROGRAM_STRIDE = 0x10000
_OP = struct.Struct("<IIII")


def program_address(vcpu: int) -> int:
    return PROGRAM_STRIDE * (vcpu + 1)


@dataclass(frozen=True)
class Op:
    op: int
    address: int
    value: int = 0
    arg: int = 0


@dataclass
class Program:
    """A guest's list of operations (addresses are guest-physical)."""

    ops: list[Op] = field(default_factory=list)

    def read(self, address: int, width: int = 4) -> Program:
        self.ops.append(Op(READ, address, 0, _width(width)))
        return self

    def write(self, address: int, value: int, width: int = 4) -> Program:
        if not 0 <= value < 1 << (8 * _width(width)):
            raise ValueError(f"value {value:#x} does not fit in {width} byte(s)")
        self.ops.append(Op(WRITE, address, value, width))
        return self

    def write64(self, address: int, value: int) -> Program:
        """An 8-byte write (MMX movq)."""
        if not 0 <= value < 1 << 64:
            raise ValueError(f"value {value:#x} does not fit in 8 bytes")
        self.ops.append(Op(WRITE64, address, value & 0xFFFFFFFF, value >> 32))
        return self

    def read64(self, address: int) -> Program:
        """An 8-byte read (MMX movq)."""
        self.ops.append(Op(READ64, address))
        return self

    def sse_store(self, address: int) -> Program:
        """`movss [address], xmm0`: an SSE store KVM's instruction emulator does not know, so
        on a trapped page KVM stops with KVM_EXIT_INTERNAL_ERROR."""
        self.ops.append(Op(SSE_STORE, address))
        return self

    def store128(self, address: int, value: int = 0) -> Program:
        """A 16-byte SSE store (`movdqu`) of the operation's own encoding: {10, address,
        value, 0}, little-endian."""
        self.ops.append(Op(STORE128, address, value))
        return self

    def pushad(self, address: int) -> Program:
        """`pushad` with the stack pointer at `address`: eight 4-byte writes below it."""
        self.ops.append(Op(PUSHAD, address))
        return self

    def cpuid(self, leaf: int) -> Program:
        """CPUID of `leaf` (subleaf 0): a transcript line with eax, ebx, ecx, edx."""
        self.ops.append(Op(CPUID, 0, leaf))
        return self

    def loop_read(self, address: int, count: int) -> Program:
        """`count` 32-bit reads of one address, timed by the guest's TSC."""
        if not 0 <= count < 1 << 32:
            raise ValueError(f"loop count {count} does not fit in 32 bits")
        self.ops.append(Op(LOOP_READ, address, 0, count))
        return self

    def rmw(self, address: int, kind: str, value: int, count: int = 0) -> Program:
        """One instruction that reads and writes `address` (RMW_KINDS): `value` is its operand
        (for "lock bts" the bit index; for "rep movsd" the guest address of `count` dwords)."""
        if kind not in RMW_KINDS:
            raise ValueError(f"unknown read-modify-write {kind!r}: one of {sorted(RMW_KINDS)}")
        if not 0 <= value < 1 << 32 or not 0 <= count < 1 << 24:
            raise ValueError(f"operand {value:#x} or count {count} out of range")
        self.ops.append(Op(RMW, address, value, RMW_KINDS[kind] | count << 8))
        return self

    def loop_write(self, address: int, value: int, count: int) -> Program:
        """`count` 32-bit writes of `value` to one address, timed by the guest's TSC."""
        if not 0 <= count < 1 << 32 or not 0 <= value < 1 << 32:
            raise ValueError(f"loop count {count} or value {value:#x} does not fit in 32 bits")
        self.ops.append(Op(LOOP_WRITE, address, value, count))
        return self

    def encode(self) -> bytes:
        ops = [*self.ops, Op(END, 0)]
        for o in ops:
            if not 0 <= o.address < 1 << 32:
                raise ValueError(f"address {o.address:#x} is not a 32-bit guest address")
        head = _OP.pack(MAGIC, len(ops), 0, 0)
        return head + b"".join(_OP.pack(o.op, o.address, o.value, o.arg) for o in ops)


def _width(width: int) -> int:
    if width not in (1, 2, 4):
        raise ValueError(f"the guest firmware accesses 1, 2 or 4 bytes, not {width}")
    return width


@dataclass(frozen=True)
class Line:
    """One line of the guest's transcript."""

    # "R", "W", "M" (read-modify-write), "T", "E", "N" (no program), "?" (unknown op),
    # "S" (SSE store), "P" (pushad), "X" (16-byte store),
    # "C" (CPUID: value holds eax | ebx << 32 | ecx << 64 | edx << 96)
    kind: str
    width: int = 0  # M: the RMW kind
    address: int = 0
    value: int = 0  # R/W: the value; T: TSC cycles
    count: int = 0  # T: reads in the loop


def parse_transcript(text: str) -> list[Line]:
    """The firmware's output lines; a line that does not parse raises ValueError."""
    out: list[Line] = []
    for raw in text.splitlines():
        parts = raw.split()
        if not parts:
            continue
        kind = parts[0]
        try:
            if kind in ("R", "W", "M") and len(parts) == 4:
                out.append(Line(kind, int(parts[1]), int(parts[2], 16), int(parts[3], 16)))
            elif kind == "C" and len(parts) == 5:
                regs = [int(x, 16) for x in parts[1:]]
                out.append(Line(kind, 4, 0, sum(r << (32 * i) for i, r in enumerate(regs))))
            elif kind == "T" and len(parts) == 3:
                out.append(Line(kind, 4, 0, int(parts[2], 16), int(parts[1], 16)))
            elif kind in ("E", "N", "?", "S", "P", "X") and len(parts) == 1:
                out.append(Line(kind))
            else:
                raise ValueError
        except ValueError:
            raise ValueError(f"guest transcript line {raw!r} does not parse") from None
    return out
