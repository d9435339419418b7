"""Guards: stateful rules for protocols carried over MMIO (contract §2).

A guard is a rule whose action is "guard": it owns a fixed set of registers and the C core
hands it every access to them, in order, to decide from the protocol state it keeps. The first
guard follows NVIDIA's FSP mailbox and refuses firmware-update messages (docs/fsp-guard.md).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar

from .errors import PolicyError, shown
from .rules import Rule

#: NV_PFSP registers of GH100 (open-gpu-kernel-modules, hopper/gh100/dev_fsp_pri.h;
#: docs/fsp-guard.md).
GH100_EMEMC0 = 0x8F2AC0
GH100_QUEUE_HEAD0 = 0x8F2C00
GH100_MSGQ_HEAD0 = 0x8F2C80
FSP_CHANNELS = 8
#: FSP_EMEM_CHANNEL_RM_SIZE (fsp_emem_channels.h): the largest packet the driver sends.
FSP_MAX_PACKET = 1024
#: NVDM types (fsp_nvdm_format.h).
NVDM_TYPES: dict[str, int] = {
    "reset": 0x04,
    "hulk": 0x11,
    "firmware_update": 0x12,
    "prc": 0x13,
    "cot": 0x14,
    "fsp_response": 0x15,
    "caps_query": 0x16,
    "inforom": 0x17,
    "smbpbi": 0x18,
    "romread": 0x1A,
}
NVDM_FIRMWARE_UPDATE = NVDM_TYPES["firmware_update"]
NVDM_COT = NVDM_TYPES["cot"]
#: The core's limits (mmiofilter.h: MF_FSP_MAX_CHANNELS, MF_FSP_EMEM_BYTES).
_MAX_CHANNELS = 8
_EMEM_BYTES = 65536
#: The smallest FSP reply: MCTP and message headers, taskId, commandNvdmType, errorCode.
_REPLY_BYTES = 20


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def nvdm_type(v: object) -> int:
    """An NVDM type given as a number or one of the NVDM_TYPES names."""
    if isinstance(v, str) and v.lower() in NVDM_TYPES:
        return NVDM_TYPES[v.lower()]
    if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 0xFF:
        return v
    raise PolicyError(
        f"NVDM type {shown(v)} is neither 0..255 nor one of {', '.join(sorted(NVDM_TYPES))}"
    )


@dataclass(frozen=True)
class FspGuard(Rule):
    """The FSP mailbox guard. Build it with `FspGuard.at(name, ...)`, which derives the
    rule's range from the registers; `deny_types` are the NVDM types whose messages never
    reach the FSP."""

    emem: int = field(default=GH100_EMEMC0, kw_only=True)
    queue: int = field(default=GH100_QUEUE_HEAD0, kw_only=True)
    msgq: int = field(default=GH100_MSGQ_HEAD0, kw_only=True)
    channels: int = field(default=FSP_CHANNELS, kw_only=True)
    max_packet: int = field(default=FSP_MAX_PACKET, kw_only=True)
    deny_types: frozenset[int] = field(default=frozenset({NVDM_FIRMWARE_UPDATE}), kw_only=True)

    allowed_actions: ClassVar[tuple[str, ...]] = ("guard",)
    kind: ClassVar[str] = "fsp"

    @classmethod
    def at(
        cls,
        name: str,
        *,
        emem: int = GH100_EMEMC0,
        queue: int = GH100_QUEUE_HEAD0,
        msgq: int = GH100_MSGQ_HEAD0,
        channels: int = FSP_CHANNELS,
        max_packet: int = FSP_MAX_PACKET,
        deny_types: Iterable[int | str] = (NVDM_FIRMWARE_UPDATE,),
        priority: int = 0,
        bar: int = 0,
    ) -> FspGuard:
        where = f"guard {name!r}"
        for fname, v in (("emem", emem), ("queue", queue), ("msgq", msgq)):
            if not _is_int(v) or v < 0 or v % 4:
                raise PolicyError(f"{where}: {fname} must be a 4-aligned offset, not {shown(v)}")
        if not _is_int(channels) or not 1 <= channels <= _MAX_CHANNELS:
            raise PolicyError(
                f"{where}: channels must be 1..{_MAX_CHANNELS}, not {shown(channels)}"
            )
        if isinstance(deny_types, (str, bytes)) or not isinstance(deny_types, Iterable):
            raise PolicyError(f"{where}: deny_types must be a list of NVDM types")
        try:
            denied = frozenset(nvdm_type(t) for t in deny_types)
        except PolicyError as e:
            raise PolicyError(f"{where}: deny_types: {e}") from None
        lo = min(emem, queue, msgq)
        hi = max(emem, queue, msgq) + 8 * channels
        return cls(
            name,
            lo,
            hi - lo,
            "guard",
            emem=emem,
            queue=queue,
            msgq=msgq,
            channels=channels,
            max_packet=max_packet,
            deny_types=denied,
            priority=priority,
            bar=bar,
        )

    def __post_init__(self) -> None:
        super().__post_init__()
        where = f"guard {self.name!r}"
        if not _is_int(self.max_packet) or not (
            _REPLY_BYTES <= self.max_packet <= _EMEM_BYTES and self.max_packet % 4 == 0
        ):
            raise PolicyError(
                f"{where}: max_packet must be a multiple of 4 in {_REPLY_BYTES}..{_EMEM_BYTES} "
                "(a channel holds a packet and the FSP's reply), "
                f"not {shown(self.max_packet)}"
            )
        blocks = sorted((b, b + 8 * self.channels) for b in self.registers_bases())
        for (_, end), (start, _) in itertools.pairwise(blocks):
            if start < end:
                raise PolicyError(f"{where}: the EMEM, queue and message-queue blocks overlap")
        if (self.start, self.end) != (blocks[0][0], blocks[-1][1]):
            raise PolicyError(
                f"{where}: range [{self.start:#x}, {self.end:#x}) is not the registers' span "
                f"[{blocks[0][0]:#x}, {blocks[-1][1]:#x}): build it with FspGuard.at()"
            )
        if not isinstance(self.deny_types, frozenset) or not all(
            _is_int(t) and 0 <= t <= 0xFF for t in self.deny_types
        ):
            raise PolicyError(f"{where}: deny_types must be a frozenset of 0..255")

    def registers_bases(self) -> tuple[int, int, int]:
        return (self.emem, self.queue, self.msgq)

    def register_ranges(self) -> list[tuple[int, int]]:
        """The byte ranges the guard owns: [start, end) per register block."""
        return sorted((b, b + 8 * self.channels) for b in self.registers_bases())

    def deny_bitmap(self) -> bytes:
        """`struct mf_fsp_params.deny`: bit t % 8 of byte t // 8 for each refused type."""
        bits = bytearray(32)
        for t in self.deny_types:
            bits[t // 8] |= 1 << (t % 8)
        return bytes(bits)
